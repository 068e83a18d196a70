"""Zip archives (NPZ files, image folders) opened without trusting what they say about themselves.

The central directory is bounded before ``zipfile`` parses it (a zip of millions of empty entries
would hold its ``ZipInfo`` objects in memory); member names with ``..`` or an absolute path are
refused although nothing is ever extracted; and members are inflated through ``Inflation``, which
counts the bytes that really come out and stops at the limit (a zip bomb states small sizes)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import IO

from app.datasets.errors import DatasetError, in_array, too_large

MAX_DIRECTORY_BYTES = 16 << 20  # the central directory: ~200 000 entries of 40-character names
MEMBER_SLACK = 1024  # members beyond one per sample: folders, a README
_DRIVE = re.compile(r"^[A-Za-z]:")


def open_zip(path: Path, max_members: int) -> zipfile.ZipFile:
    """The archive, its directory and every member's name checked; a 422 otherwise."""
    with open(path, "rb") as f:
        end = zipfile._EndRecData(f)  # the end record zipfile reads first (zip64 too)
    if end is None:
        raise DatasetError("not a readable zip file: it has no end of central directory")
    if end[zipfile._ECD_SIZE] > MAX_DIRECTORY_BYTES or end[zipfile._ECD_ENTRIES_TOTAL] > max_members:
        msg = f"the zip lists {end[zipfile._ECD_ENTRIES_TOTAL]} members; the limit is {max_members}"
        raise DatasetError(msg, ctx={"limit": max_members})
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise DatasetError(f"not a readable zip file: {e}") from e
    try:
        members = archive.infolist()
        if len(members) > max_members:
            raise DatasetError(f"the zip holds {len(members)} members; the limit is {max_members}")
        for info in members:
            _check_member(info)
    except BaseException:
        archive.close()
        raise
    return archive


def _check_member(info: zipfile.ZipInfo) -> None:
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or _DRIVE.match(name) or ".." in parts:
        raise in_array(name, f"zip member {name!r} has an absolute path or '..' in it: refused")
    if info.flag_bits & 0x1:
        raise in_array(name, f"zip member {name!r} is encrypted")


class Inflation:
    """The bytes inflated from an archive's members so far, stopped at ``limit``: a 413 naming
    ``MB_MAX_DATASET_BYTES`` the moment more come out (whatever the members' stated sizes)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def read(self, stream: IO[bytes], size: int, member: str) -> bytes:
        """Up to ``size`` bytes of ``member`` (fewer only at its end)."""
        try:
            data = stream.read(min(size, self.left + 1))
        except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, RuntimeError) as e:
            raise in_array(member, f"zip member {member!r} cannot be inflated: {e}") from e
        self.left -= len(data)
        if self.left < 0:
            raise too_large("the zip's content, inflated,", "MB_MAX_DATASET_BYTES", self.limit)
        return data

    def read_all(self, stream: IO[bytes], member: str, chunk: int = 1 << 20) -> bytes:
        """The rest of ``member`` (its CRC checked at the end)."""
        parts = []
        while data := self.read(stream, chunk, member):
            parts.append(data)
        return b"".join(parts)


def open_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> IO[bytes]:
    try:
        return archive.open(info)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, OSError) as e:
        raise in_array(info.filename, f"zip member {info.filename!r} cannot be read: {e}") from e
