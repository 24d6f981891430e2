"""Outputs written whole or not at all: a write cut short (a kill, a full disk) leaves the old file or
none, never one that looks whole, and a failed write names its file."""

import errno
import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from alia.core.io import ChunkWriter, TableError, read_parquet, replacing, write_json, write_parquet

OLD = pd.DataFrame({"x": [1, 2, 3]})


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_an_interrupted_chunked_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "corpus.parquet"
    write_parquet(OLD, path)
    with pytest.raises(KeyboardInterrupt), ChunkWriter(path) as writer:
        writer.write(pd.DataFrame({"x": [7, 8]}))  # a row group on disk, under the temporary name
        raise KeyboardInterrupt
    pd.testing.assert_frame_equal(read_parquet(path), OLD)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.parquet"]  # no partial file left


def test_a_full_disk_mid_file_names_the_file_and_leaves_none(tmp_path, monkeypatch):
    path = tmp_path / "kd_base.parquet"
    writer = ChunkWriter(path)
    writer.write(pd.DataFrame({"x": [1]}))
    monkeypatch.setattr(pq.ParquetWriter, "write_table", _disk_full)
    with pytest.raises(TableError, match=r"kd_base\.parquet: could not write it \(No space left on device\)"):
        writer.write(pd.DataFrame({"x": [2]}))
    writer.close()  # closing after the failure is harmless
    assert list(tmp_path.iterdir()) == []


def test_a_failed_whole_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "predictions.parquet"
    write_parquet(OLD, path)

    def half_then_full(self, target, **kwargs):
        Path(target).write_bytes(b"PAR1" + b"\0" * 100)  # the first bytes, then the disk is full
        _disk_full()

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_full)
    with pytest.raises(TableError, match=r"predictions\.parquet: could not write it"):
        write_parquet(pd.DataFrame({"x": [9]}), path)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(read_parquet(path), OLD)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.parquet"]


def test_json_and_folders_replace_whole(tmp_path):
    write_json(tmp_path / "m.json", {"a": 1})
    with pytest.raises(RuntimeError), replacing(tmp_path / "m.json") as partial:
        partial.write_text('{"a": ')
        raise RuntimeError("killed")
    assert (tmp_path / "m.json").read_text() == '{\n  "a": 1\n}\n'

    model = tmp_path / "model"
    with replacing(model) as partial:
        partial.mkdir()
        (partial / "old.bin").write_text("old")
    with replacing(model) as partial:  # a folder output replaces the old folder, not merges into it
        partial.mkdir()
        (partial / "new.bin").write_text("new")
    assert [p.name for p in model.iterdir()] == ["new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "model"]


def test_a_partial_file_left_by_a_kill_is_cleared_by_the_next_write(tmp_path):
    (tmp_path / ".out.parquet.partial").write_bytes(b"PAR1 half")
    write_parquet(OLD, tmp_path / "out.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]


def test_a_corrupt_parquet_input_is_named_by_every_reader(tmp_path):
    """As a corrupted object pulled without `verify` would be: the reader names the file."""
    from alia.data.kg import KnowledgeGraph
    from alia.kd.corpora import corpus_batches

    bad = tmp_path / "nodes.parquet"
    write_parquet(pd.DataFrame({"text": ["a passage"] * 50}), bad)
    data = bad.read_bytes()
    bad.write_bytes(data[:4] + b"\xff" * (len(data) - 8) + data[-4:])  # same size, bits flipped
    for read in (read_parquet, lambda p: list(corpus_batches(p)), lambda p: KnowledgeGraph.read(p.parent)):
        with pytest.raises(TableError, match=rf"^{bad}: not a readable Parquet file \("):
            read(bad)


def test_a_file_too_large_at_close_names_that_file_not_another(tmp_path, monkeypatch):
    """Two writers open, as a KD stage holds its corpus and its rejects: the one that failed is named,
    and neither leaves a file."""
    corpus, rejects = tmp_path / "kd_base.parquet", tmp_path / "rejects.parquet"
    with pytest.raises(TableError) as caught, ChunkWriter(rejects), ChunkWriter(corpus) as writer:
        writer.write(pd.DataFrame({"x": [1]}))
        monkeypatch.setattr(pq.ParquetWriter, "close", _disk_full)
    assert str(caught.value).startswith(f"{corpus}: could not write it (")
    assert list(tmp_path.iterdir()) == []
