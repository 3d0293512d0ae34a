"""Progress reports from rank 0: `progress.json` (rate-limited, rewritten atomically) and
`result.json` (the last report, written once at the end, whatever the outcome), plus one JSON
log line per report on stdout. The operator's progress channel reads these."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, sort_keys=True))
    os.replace(temporary, path)


def log(event: str, **fields: Any) -> None:
    """One structured log line on stdout."""
    print(json.dumps({"time": now(), "event": event, **fields}, default=str), flush=True)


class Reporter:
    """Rank 0's reports; other ranks get an instance whose calls do nothing."""

    def __init__(self, directory: Path, *, enabled: bool, min_interval: float) -> None:
        self.directory = directory
        self.enabled = enabled
        self.min_interval = min_interval
        self.last = -float("inf")
        self.events: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {}

    def progress(self, *, force: bool = False, **fields: Any) -> None:
        """Record `fields`; write progress.json unless one was written < min_interval ago."""
        if not self.enabled:
            return
        self.state.update(fields)
        self.state["updated"] = now()
        if force or time.monotonic() - self.last >= self.min_interval:
            self._flush()
            log("progress", **fields)

    def _flush(self) -> None:
        self.last = time.monotonic()
        _write_atomically(
            self.directory / "progress.json", {**self.state, "events": self.events[-50:]}
        )

    def event(self, kind: str, **fields: Any) -> None:
        """Something the operator must not miss (checkpoint, divergence): written at once."""
        if not self.enabled:
            return
        self.events.append({"type": kind, "time": now(), **fields})
        log(kind, **fields)
        self._flush()

    def result(self, *, outcome: str, exit_code: int, **fields: Any) -> None:
        if not self.enabled:
            return
        self._flush()
        _write_atomically(
            self.directory / "result.json",
            {"outcome": outcome, "exitCode": exit_code, "time": now(), **self.state, **fields},
        )
        log("result", outcome=outcome, exit_code=exit_code, **fields)
        sys.stdout.flush()
