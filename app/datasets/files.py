"""Where uploads lie: ``MB_DATA_DIR/datasets/<sha256>``, one file per content whatever the number
of keys that uploaded it, written as ``.incoming/<random>.part`` and renamed into place once
complete and synced, so a reader never sees a partial file.

An upload holds an exclusive ``flock`` on its part file while it writes; a part file nobody
holds (its process died) is removed by the next upload. Committing and removing a file happen
under one lock per data directory, with the store's records: a file is removed only when no
record refers to it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from app.jobs.checkpoint import _fsync as fsync  # one way to sync a file or directory

STALE_PART_S = 60.0  # a part file this old, and unlocked, belongs to no running upload
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DatasetFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / ".incoming"

    def path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):  # ids come from hashing, but never leave the directory
            raise ValueError(f"not a dataset id: {sha256!r}")
        return self.root / sha256

    def new_part(self) -> tuple[Path, BinaryIO]:
        """A new part file, opened for writing and locked (removed by ``discard_part``)."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.sweep()
        path = self.incoming / f"{uuid.uuid4().hex}.part"
        handle = open(path, "xb")  # noqa: SIM115 - the upload closes it, committed or discarded
        fcntl.flock(handle, fcntl.LOCK_EX)
        return path, handle

    def sweep(self, now: float | None = None) -> list[Path]:
        """Remove the part files of uploads whose process died; those removed."""
        now = time.time() if now is None else now
        removed = []
        for part in self.incoming.glob("*.part"):
            with contextlib.suppress(FileNotFoundError, BlockingIOError), open(part, "rb") as handle:
                if now - os.fstat(handle.fileno()).st_mtime < STALE_PART_S:
                    continue
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                part.unlink()
                removed.append(part)
        return removed

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive between the processes sharing this data directory (commit and removal)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def commit(self, part: Path, sha256: str) -> None:
        """Move a complete, synced part file into place (under ``lock``); when that content is
        already stored, the part is dropped instead."""
        target = self.path(sha256)
        if target.exists():
            part.unlink()
            return
        os.rename(part, target)
        fsync(self.root)  # the rename made durable

    def remove(self, sha256: str) -> None:
        """Delete a stored file (under ``lock``, once no record refers to it)."""
        self.path(sha256).unlink(missing_ok=True)
        fsync(self.root)
