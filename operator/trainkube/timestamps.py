"""RFC 3339 timestamps as Kubernetes writes them (UTC, whole seconds), in one place: status,
conditions, recovery deadlines and the trainer's reports all use this form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now() -> str:
    return datetime.now(UTC).strftime(FORMAT)


def epoch(stamp: str) -> float:
    """Seconds since the epoch of a timestamp in this form."""
    return datetime.strptime(stamp, FORMAT).replace(tzinfo=UTC).timestamp()


def later(stamp: str, seconds: float) -> str:
    """The timestamp `seconds` after `stamp`."""
    moment = datetime.strptime(stamp, FORMAT).replace(tzinfo=UTC)
    return (moment + timedelta(seconds=seconds)).strftime(FORMAT)
