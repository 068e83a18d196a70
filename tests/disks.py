"""Real disks for tests of write failures: a small tmpfs that fills up, and read-only directories.

A full disk is a tmpfs of its own filled to the last byte by one file: every process that writes
there (this one, a server, a Ray worker) gets the kernel's own ENOSPC, as on a full data volume,
and SQLite its own SQLITE_FULL; removing the file gives the space back. (A process's RLIMIT_FSIZE
would give EFBIG, and only to the processes that inherit it: not to Ray's workers.) A read-only
directory is a read-only bind mount, since root, who runs these tests, ignores permission bits.
Both need root (``mount``); without it the tests that use them are skipped, saying why.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

FILLER = ".filler"


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@contextmanager
def small_disk(path: Path, size: str = "64m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (made if missing) until the block ends."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:  # lazily: a process still holding a file there (a lingering worker) cannot block it
        subprocess.run(["umount", "--lazy", str(path)], check=True)


@contextmanager
def full(disk: Path) -> Iterator[Path]:
    """``disk`` (a ``small_disk``) with no byte left until the block ends; the filler file."""
    filler = disk / FILLER
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 4096):
            try:
                while True:
                    f.write(bytes(size))
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    assert os.statvfs(disk).f_bavail == 0
    try:
        yield filler
    finally:
        filler.unlink()


@contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path``, a directory, read-only (a bind mount of itself) until the block ends."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)
