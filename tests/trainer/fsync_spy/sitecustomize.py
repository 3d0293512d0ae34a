"""Test hook: with this folder on PYTHONPATH and TRAINKUBE_TEST_FSYNC_LOG set, every Python
process (the launcher and each trainer rank) records each `os.fsync` it makes: its rank and the
path of the file or folder, one JSON line per call, after the call returns. The trainer's
code is unchanged; only the test that sets both variables sees this."""

from __future__ import annotations

import json
import os
from typing import Any


def _install(log_path: str) -> None:
    fsync = os.fsync

    def recording_fsync(fd: Any) -> None:
        fsync(fd)
        number = fd if isinstance(fd, int) else fd.fileno()
        line = {"rank": os.environ.get("RANK"), "path": os.readlink(f"/proc/self/fd/{number}")}
        with open(log_path, "a") as log:  # one short append per call: lines do not interleave
            log.write(json.dumps(line) + "\n")

    os.fsync = recording_fsync


if log_path := os.environ.get("TRAINKUBE_TEST_FSYNC_LOG"):
    _install(log_path)
