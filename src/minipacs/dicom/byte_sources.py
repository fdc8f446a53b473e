"""Byte sources the completeness walk reads element headers from, and skips values in.

Bytes in memory (a slice and an index), a file (reads and seeks: a multi-GB file is
never loaded), a stream that cannot seek (reads and drops, 1 MiB at a time) and a raw
deflate stream inflated as it is read (PS3.5 §A.5). `pos` counts bytes consumed.
"""

from __future__ import annotations

import os
import zlib
from typing import BinaryIO, Protocol

from minipacs.errors import IncompleteInstance

_IN_CHUNK = 256 * 1024  # compressed bytes fed to zlib at a time
_OUT_CHUNK = 1024 * 1024  # at most this much inflated output held at a time


class Reader(Protocol):
    pos: int

    def read(self, n: int) -> bytes: ...

    def skip(self, n: int) -> int: ...

    def unread(self, n: int) -> None: ...


class MemoryReader:
    """Bytes already in memory: reads slice, skips move an index."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = memoryview(data).cast("B")
        self._size = len(self._view)
        self.pos = 0

    def read(self, n: int) -> bytes:
        chunk = bytes(self._view[self.pos:self.pos + n])
        self.pos += len(chunk)
        return chunk

    def skip(self, n: int) -> int:
        moved = min(n, self._size - self.pos)
        self.pos += moved
        return moved

    def unread(self, n: int) -> None:
        self.pos -= n


class FileReader:
    """A file on disk (a spooled C-STORE or STOW-RS part): values are seeked over."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._size = os.fstat(fh.fileno()).st_size
        self.pos = 0

    def read(self, n: int) -> bytes:
        chunk = self._fh.read(n)
        self.pos += len(chunk)
        return chunk

    def skip(self, n: int) -> int:
        moved = min(n, self._size - self.pos)
        self._fh.seek(moved, os.SEEK_CUR)
        self.pos += moved
        return moved

    def unread(self, n: int) -> None:
        self._fh.seek(-n, os.SEEK_CUR)
        self.pos -= n


class StreamReader:
    """A stream that cannot seek (an object store download): skipping reads and drops,
    at most `_OUT_CHUNK` bytes at a time; the last read can be pushed back."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._pushed = b""
        self._last = b""
        self.pos = 0

    def _raw_read(self, n: int) -> bytes:
        parts = [self._pushed[:n]]
        self._pushed = self._pushed[n:]
        want = n - len(parts[0])
        while want > 0:
            chunk = self._stream.read(want)
            if not chunk:
                break
            parts.append(chunk)
            want -= len(chunk)
        return b"".join(parts)

    def read(self, n: int) -> bytes:
        chunk = self._raw_read(n)
        self._last = chunk
        self.pos += len(chunk)
        return chunk

    def skip(self, n: int) -> int:
        moved = 0
        while moved < n:
            chunk = self._raw_read(min(n - moved, _OUT_CHUNK))
            if not chunk:
                break
            moved += len(chunk)
        self._last = b""
        self.pos += moved
        return moved

    def unread(self, n: int) -> None:
        assert n <= len(self._last), "only the last read can be pushed back"
        self._pushed = self._last[len(self._last) - n:] + self._pushed
        self._last = self._last[:len(self._last) - n]
        self.pos -= n


class InflatingReader:
    """The inflated bytes of a raw deflate stream (PS3.5 §A.5), produced as they are
    needed and at most about 1 MiB at a time; `pos` counts inflated bytes."""

    def __init__(self, raw: Reader) -> None:
        self._raw = raw
        self._start = raw.pos
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buffer = bytearray()
        self.pos = 0

    def _inflate_more(self) -> bool:
        """Inflate another piece into the buffer; False once the stream has ended."""
        if self._inflater.eof:
            return False
        data = self._inflater.unconsumed_tail or self._raw.read(_IN_CHUNK)
        if not data:
            raise IncompleteInstance(
                f"deflated data set is cut short: its deflate stream (from byte "
                f"{self._start}) ends without its final block, after {self.pos + len(self._buffer)}"
                " inflated bytes")
        try:
            self._buffer += self._inflater.decompress(data, _OUT_CHUNK)
        except zlib.error as exc:
            raise IncompleteInstance(
                f"deflated data set is not a valid deflate stream (from byte {self._start}, "
                f"after {self.pos + len(self._buffer)} inflated bytes): {exc}") from exc
        return True

    def read(self, n: int) -> bytes:
        while len(self._buffer) < n and self._inflate_more():
            pass
        chunk = bytes(self._buffer[:n])
        del self._buffer[:n]
        self.pos += len(chunk)
        return chunk

    def skip(self, n: int) -> int:
        moved = 0
        while moved < n:
            if not self._buffer and not self._inflate_more():
                break
            take = min(n - moved, len(self._buffer))
            del self._buffer[:take]
            moved += take
        self.pos += moved
        return moved

    def unread(self, n: int) -> None:  # pragma: no cover - the meta is never deflated
        raise AssertionError("an inflated stream cannot be rewound")
