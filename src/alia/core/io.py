"""Reading and writing the files stages hand each other: Parquet, JSON and text, every failure a
`TableError` that names the file (and, where it can, the row and column)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# what a write meets: a full disk or quota, a file too large, no permission, a read-only file system
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS}


class TableError(ValueError):
    """A bad source table: says which file, row and column, and what was expected."""

    def __init__(self, file: str | Path, message: str, row: Any = None, column: str | None = None):
        self.file, self.row, self.column = str(file), row, column
        where = [self.file]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {message}")


def read_text(path: Path) -> str:
    """The file as UTF-8 text; a non-UTF-8 byte is reported with its line and column."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        line = data.count(b"\n", 0, err.start) + 1
        column = _csv_column(path, data, line_start, err.start)
        raise TableError(
            path,
            f"byte 0x{data[err.start]:02x} at character {err.start - line_start + 1} is not UTF-8 "
            "(save the file as UTF-8)",
            row=line,
            column=column,
        ) from None


def _csv_column(path: Path, data: bytes, line_start: int, offset: int) -> str | None:
    """For a CSV, the header name of the field that holds byte `offset`."""
    if path.suffix != ".csv":
        return None
    header = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip().split(",")
    index = data[line_start:offset].count(b",")
    return header[index] if index < len(header) else None


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A Parquet file or folder that a stage wrote; an unreadable one is reported by its name."""
    with parquet_errors(path):
        return pd.read_parquet(path, columns=columns)


def read_arrow(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """`read_parquet`, as an Arrow table (its schema as written)."""
    with parquet_errors(path):
        return pq.read_table(path, columns=columns)


@contextmanager
def parquet_errors(path: str | Path) -> Iterator[None]:
    """Reading the Parquet file `path` in the block: a missing or corrupt one (a truncated write, a bad
    object pulled from a remote) is a `TableError` naming it, not pyarrow's message naming a buffer."""
    path = Path(path)
    if not path.exists():
        raise TableError(path, "no such file (the stage that writes it has not run: `dvc repro`)")
    try:
        yield
    except (pa.ArrowException, OSError) as err:
        message = " ".join(str(err).split())
        raise TableError(
            path, f"not a readable Parquet file ({message}): re-create it with `dvc repro` or `dvc pull`"
        ) from None


def read_json(path: Path) -> Any:
    text = read_text(path)
    if not text.strip():
        raise TableError(path, "empty file: expected a JSON document")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TableError(path, f"invalid JSON: {err.msg}", row=err.lineno) from None


@contextmanager
def write_errors(path: str | Path) -> Iterator[None]:
    """Writing `path` in the block: a full disk, a file too large or a missing permission is a
    `TableError` naming `path` (pyarrow's and torch's messages name no file)."""
    try:
        yield
    except OSError as err:
        if err.errno not in WRITE_ERRORS:  # not the writing's (a model source that is not there, say)
            raise
        raise TableError(path, f"could not write it ({err.strerror or err})") from None


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary name beside `path` (a file or a folder) to write to, renamed to `path` once written
    and removed if writing failed: a reader finds the old output or the new one, never half of one. A
    full disk or a missing permission is a `TableError` naming `path`."""
    path = Path(path)
    partial = cleared_partial(path)
    try:
        with write_errors(path):
            yield partial
            move_into_place(partial, path)
    finally:
        remove(partial)  # gone already, once renamed


def partial_name(path: Path) -> Path:
    """Where `replacing` writes `path` before renaming it: hidden, so that a folder of Parquet files
    read whole (pyarrow skips names starting with a dot) never includes it."""
    return path.with_name(f".{path.name}.partial")


def cleared_partial(path: Path) -> Path:
    """`path`'s temporary name, ready to write: its folder made, a leftover of a killed run removed."""
    partial = partial_name(path)
    with write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove(partial)
    return partial


def move_into_place(partial: Path, path: Path) -> None:
    if path.is_dir() and partial.is_dir():
        shutil.rmtree(path)  # os.replace renames a folder only over an empty one
    os.replace(partial, path)


def remove(path: Path) -> None:
    """`path`, a file or a folder, gone (if it was there)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write_json(path: str | Path, content: Any) -> None:
    write_text(path, json.dumps(content, indent=2) + "\n")


def write_text(path: str | Path, text: str) -> None:
    with replacing(path) as partial:
        partial.write_text(text, encoding="utf-8")


def write_parquet(table: pd.DataFrame | pa.Table, path: str | Path) -> None:
    """A DataFrame (without its index) or an Arrow table as a Parquet file, whole or not at all."""
    with replacing(path) as partial:
        if isinstance(table, pa.Table):
            pq.write_table(table, partial)
        else:
            table.to_parquet(partial, index=False)


class ChunkWriter:
    """A Parquet file written a chunk (row group) at a time, as chunks come: the first non-empty chunk
    sets the schema (every chunk has the same columns), so no chunk waits for the others. `close()`
    leaves the file there even when nothing was written (with the columns, where a chunk told them).
    Chunks go to a temporary name, renamed on `close()`: a run that fails, or a write that failed,
    leaves no file that looks whole (the one before stays)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.partial = cleared_partial(self.path)
        self.writer: pq.ParquetWriter | None = None
        self.rows, self.empty, self.failed, self.closed = 0, pd.DataFrame(), False, False

    def write(self, chunk: pd.DataFrame) -> None:
        if chunk.empty:  # its columns' types are unknown (pandas object, Arrow null)
            self.empty = chunk
            return
        try:
            with write_errors(self.path):
                if self.writer is None:
                    schema = _concrete(pa.Schema.from_pandas(chunk, preserve_index=False))
                    self.writer = pq.ParquetWriter(self.partial, schema)
                table = pa.Table.from_pandas(chunk, preserve_index=False, schema=self.writer.schema)
                self.writer.write_table(table)
        except BaseException:
            self.failed = True  # what was written is not the whole file: never renamed into place
            raise
        self.rows += len(chunk)

    def close(self) -> None:
        self.__exit__(None, None, None)

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, error: type | None, *exc: object) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            with write_errors(self.path):
                if self.writer is not None:
                    self.writer.close()
                if error is None and not self.failed:
                    if self.writer is None:
                        self.empty.to_parquet(self.partial, index=False)
                    move_into_place(self.partial, self.path)
        finally:
            remove(self.partial)  # gone already, once renamed


def _concrete(schema: pa.Schema) -> pa.Schema:
    """A first chunk's schema with its all-null columns typed as strings (a list of them: lists of
    strings), so that a later chunk's values fit: the first chunk's lists of foreign entities may all
    be empty."""
    for i, f in enumerate(schema):
        if pa.types.is_null(f.type):
            schema = schema.set(i, f.with_type(pa.string()))
        elif pa.types.is_list(f.type) and pa.types.is_null(f.type.value_type):
            schema = schema.set(i, f.with_type(pa.list_(pa.string())))
    return schema
