"""RFC 3339 timestamps as Kubernetes writes them (UTC, whole seconds), in one place: status,
conditions, recovery deadlines and the trainer's reports all use this form."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

FORMAT = "%Y-%m-%dT%H:%M:%SZ"

_formatted: tuple[int, str] = (-1, "")  # the last second now() formatted, and its form


def now() -> str:
    """The current second. Formatted once per second: the trainer stamps every step."""
    global _formatted  # noqa: PLW0603 (one tuple, replaced whole: safe across threads)
    second = int(time.time())
    if second != _formatted[0]:
        _formatted = (second, datetime.fromtimestamp(second, UTC).strftime(FORMAT))
    return _formatted[1]


def epoch(stamp: str) -> float:
    """Seconds since the epoch of a timestamp in this form."""
    return datetime.strptime(stamp, FORMAT).replace(tzinfo=UTC).timestamp()


def later(stamp: str, seconds: float) -> str:
    """The timestamp `seconds` after `stamp`."""
    moment = datetime.strptime(stamp, FORMAT).replace(tzinfo=UTC)
    return (moment + timedelta(seconds=seconds)).strftime(FORMAT)
