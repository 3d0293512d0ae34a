"""Making what the trainer writes survive a crash of the machine, not only of the process.

`write` returning means the bytes are in the page cache; a power loss or a kernel panic can
still lose them. A file's data is on the disk once the file is fsynced; its *name* is there
once the folder holding it is fsynced; a rename is atomic at once but durable only once the
parent folder is fsynced. So a checkpoint is published in this order: every file fsynced (by
the rank that wrote it), the folders naming them fsynced, the manifest written and fsynced,
its folder fsynced, the rename, and the parent folder fsynced.

The fsync itself is a field, so a test can see which paths it is called on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Fsync = Callable[[int], None]


@dataclass(frozen=True)
class Durable:
    fsync: Fsync = field(default=os.fsync)

    def sync(self, path: Path) -> None:
        """fsync a file or a folder by its path (a folder: its entries, the names in it)."""
        flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
        fd = os.open(path, flags)
        try:
            self.fsync(fd)
        finally:
            os.close(fd)

    def sync_folders(self, files: Iterable[Path]) -> None:
        """fsync each folder that holds one of `files`, once."""
        for folder in sorted({f.parent for f in files}):
            self.sync(folder)

    def write_json(self, path: Path, document: dict[str, Any]) -> None:
        """Write `document` to `path` and fsync it (not its folder: see `publish`)."""
        with path.open("w") as handle:
            json.dump(document, handle, indent=2, sort_keys=True)
            handle.flush()
            self.fsync(handle.fileno())

    def publish(self, partial: Path, final: Path) -> None:
        """Rename the finished folder `partial` to `final` durably: `partial`'s own entries
        first, then the rename, then the parent's entries. `final` must not exist."""
        self.sync(partial)
        partial.rename(final)
        self.sync(final.parent)
