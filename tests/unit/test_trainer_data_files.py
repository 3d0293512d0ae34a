"""Data files on a volume (jsonl, text, parquet), read through the same `datasets` builders
the hub path uses; errors name what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainkube.api.data import FileFormat
from trainkube.runconfig import DataRef, Files
from trainkube_trainer.data.source import DataError, load_records

ROWS = [{"text": f"story number {i}", "prompt": f"p{i}", "response": f"r{i}"} for i in range(5)]


def test_jsonl_folder_with_shards(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS[:3]))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS[3:]))
    records = load_records(DataRef(files=Files(path=str(tmp_path), format=FileFormat.JSONL)))
    assert [r["text"] for r in records] == [r["text"] for r in ROWS]


def test_text_file_gives_one_record_per_line(tmp_path: Path) -> None:
    (tmp_path / "corpus.txt").write_text("first line\nsecond line\n")
    path = str(tmp_path / "corpus.txt")
    records = load_records(DataRef(files=Files(path=path, format=FileFormat.TEXT)))
    assert [r["text"] for r in records] == ["first line", "second line"]


def test_parquet_file(tmp_path: Path) -> None:
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "part-0.parquet")
    records = load_records(DataRef(files=Files(path=str(tmp_path), format=FileFormat.PARQUET)))
    assert records[4]["response"] == "r4"


def test_missing_path_says_the_volume_may_not_be_mounted(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist in the pod"):
        load_records(DataRef(files=Files(path=str(tmp_path / "nope"), format=FileFormat.JSONL)))


def test_folder_without_files_of_the_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"no parquet files \(\.parquet\) under"):
        load_records(DataRef(files=Files(path=str(tmp_path), format=FileFormat.PARQUET)))
