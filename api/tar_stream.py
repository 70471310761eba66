"""Stream stored files as one tar archive without staging it: headers are built up front, so the response
carries a Content-Length and a client can show a progress bar."""

from __future__ import annotations

import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

from core.storage import Storage

BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE


@dataclass(frozen=True)
class Member:
    name: str  # path inside the archive
    size: int
    key: str | None = None  # storage key, or
    data: bytes | None = None  # inline content (small generated files)


def _header(member: Member, mtime: float) -> bytes:
    info = tarfile.TarInfo(member.name)
    info.size = member.size
    info.mtime = int(mtime)
    info.mode = 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _padding(size: int) -> int:
    return (BLOCK - size % BLOCK) % BLOCK


class TarStream:
    def __init__(self, storage: Storage, members: list[Member]) -> None:
        self.storage = storage
        self.members = members
        self.mtime = time.time()
        self.headers = [_header(m, self.mtime) for m in members]
        body = sum(len(h) + m.size + _padding(m.size) for h, m in zip(self.headers, members, strict=True))
        end = body + 2 * BLOCK
        self.trailer = 2 * BLOCK + (RECORD - end % RECORD) % RECORD
        self.length = body + self.trailer

    def __iter__(self) -> Iterator[bytes]:
        for header, member in zip(self.headers, self.members, strict=True):
            yield header
            if member.data is not None:
                yield member.data
            else:
                assert member.key is not None
                yield from self.storage.iter_chunks(member.key)
            pad = _padding(member.size)
            if pad:
                yield b"\0" * pad
        yield b"\0" * self.trailer
