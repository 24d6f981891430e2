"""Reading and writing the files stages hand each other: Parquet, JSON and text, every failure a
`TableError` that names the file (and, where it can, the row and column)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


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
    path = Path(path)
    if not path.exists():
        raise TableError(path, "no such file (the stage that writes it has not run: `dvc repro`)")
    try:
        return pd.read_parquet(path, columns=columns)
    except (pa.ArrowException, OSError) as err:  # pyarrow's message names a buffer, not the file
        message = " ".join(str(err).split())
        raise TableError(
            path, f"not a readable Parquet file ({message}): re-create it with `dvc repro`"
        ) from None


def read_json(path: Path) -> Any:
    text = read_text(path)
    if not text.strip():
        raise TableError(path, "empty file: expected a JSON document")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TableError(path, f"invalid JSON: {err.msg}", row=err.lineno) from None


def write_json(path: str | Path, content: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")


class ChunkWriter:
    """A Parquet file written a chunk (row group) at a time, as chunks come: the first non-empty chunk
    sets the schema (every chunk has the same columns), so no chunk waits for the others. `close()`
    leaves the file there even when nothing was written (with the columns, where a chunk told them)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer: pq.ParquetWriter | None = None
        self.rows, self.empty = 0, pd.DataFrame()

    def write(self, chunk: pd.DataFrame) -> None:
        if chunk.empty:  # its columns' types are unknown (pandas object, Arrow null)
            self.empty = chunk
            return
        if self.writer is None:
            schema = _concrete(pa.Schema.from_pandas(chunk, preserve_index=False))
            self.writer = pq.ParquetWriter(self.path, schema)
        table = pa.Table.from_pandas(chunk, preserve_index=False, schema=self.writer.schema)
        self.writer.write_table(table)
        self.rows += len(chunk)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        else:
            self.empty.to_parquet(self.path, index=False)

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, error: type | None, *exc: object) -> None:
        if error is None:
            self.close()
        elif self.writer is not None:  # what was written stays readable
            self.writer.close()


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
