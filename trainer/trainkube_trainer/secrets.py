"""Secret values, read from the files the operator mounts, kept out of everything the trainer
writes: its stdout and stderr (the pod's log, and the termination message a failed container
falls back to), its report ConfigMap and its termination message.

Every Secret the trainer reads goes through `read`, which remembers the value; `redact` replaces
each remembered value with `[redacted]`, and `install` makes the process's Python-level stdout
and stderr do so on every write (tracebacks, warnings and libraries' prints included). Output
native code writes straight to the file descriptors bypasses it; native code is never given a
secret.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, TextIO

REDACTED = "[redacted]"
# Shorter values would redact ordinary words; no real token or key is this short.
MIN_LENGTH = 6

_lock = threading.Lock()
_values: set[str] = set()


def read(path: str | Path) -> str:
    """The value in a mounted Secret file (stripped), remembered for redaction."""
    value = Path(path).read_text().strip()
    remember(value)
    return value


def remember(value: str) -> None:
    if len(value) >= MIN_LENGTH:
        with _lock:
            _values.add(value)


def redact(text: str) -> str:
    with _lock:
        values = sorted(_values, key=len, reverse=True)  # a value inside another goes second
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


class _RedactingStream:
    """A text stream that redacts what is written, then writes it to `stream`."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding...
        return getattr(self._stream, name)


def install() -> None:
    """Redact this process's sys.stdout and sys.stderr from now on (once)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, _RedactingStream):
            setattr(sys, name, _RedactingStream(stream))
