"""Records (dicts) from the data a run config names: a built-in corpus, files, or a hub dataset.

Files are read with the `datasets` library's json/text/parquet builders, the same code path as
hub datasets, so a folder of shards and a single file behave alike. `record_batches` streams
them (no copy into a cache, memory of one batch) for preparation into token shards;
`load_records` reads everything, for the small evaluation sets. A folder of prepared tokens
(format tokens) holds no records.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainkube.api.data import FileFormat
from trainkube.runconfig import DataRef
from trainkube_trainer.data.corpus import BUILTIN

SUFFIXES = {
    FileFormat.JSONL: (".jsonl", ".json"),
    FileFormat.TEXT: (".txt",),
    FileFormat.PARQUET: (".parquet",),
}
BUILDERS = {FileFormat.JSONL: "json", FileFormat.TEXT: "text", FileFormat.PARQUET: "parquet"}


class DataError(ValueError):
    """The data cannot be read; the message names what and where."""


def _files(path: Path, fmt: FileFormat) -> list[str]:
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        found = sorted(str(p) for p in path.rglob("*") if p.suffix in SUFFIXES[fmt])
        if found:
            return found
        raise DataError(f"no {fmt} files ({', '.join(SUFFIXES[fmt])}) under {path}")
    raise DataError(f"data path {path} does not exist in the pod (is the volume mounted?)")


def _dataset(data: DataRef, *, token: str | None, streaming: bool) -> Any:
    import datasets  # noqa: PLC0415 - only file and hub data need it

    if data.files is not None:
        fmt = data.files.format
        if fmt is FileFormat.TOKENS:
            raise DataError(
                f"{data.files.path} holds prepared tokens, not records: this needs jsonl, text "
                "or parquet files"
            )
        files = _files(Path(data.files.path), fmt)
        return datasets.load_dataset(
            BUILDERS[fmt], data_files=files, split="train", streaming=streaming
        )
    if data.hub is not None:
        return datasets.load_dataset(
            data.hub.id,
            data.hub.config,
            split=data.hub.split,
            revision=data.hub.revision,
            token=token,
            streaming=streaming,
        )
    raise DataError("the run config names no data source (hub, files or builtin)")


def load_records(data: DataRef, *, token: str | None = None) -> list[dict[str, Any]]:
    """All records of the data source, in their stored order."""
    if data.builtin is not None:
        return BUILTIN[data.builtin.value]()
    return [dict(row) for row in _dataset(data, token=token, streaming=False)]


def record_batches(
    data: DataRef, *, token: str | None = None, batch_size: int = 1000
) -> Iterator[dict[str, list[Any]]]:
    """The records in their stored order, as batches of columns ({field: [values]})."""
    if data.builtin is not None:
        records = BUILTIN[data.builtin.value]()
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            yield {field: [r[field] for r in chunk] for field in chunk[0]}
        return
    yield from _dataset(data, token=token, streaming=True).iter(batch_size=batch_size)
