"""multipart/related bodies (RFC 2387), as DICOMweb uses them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread


def new_boundary() -> str:
    return f"minipacs-{uuid.uuid4().hex}"


def multipart_content_type(part_type: str, boundary: str, transfer_syntax: str | None = None
                           ) -> str:
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return value


def encode_parts(
    parts: Iterable[tuple[dict[str, str], Iterable[bytes]]], boundary: str
) -> Iterator[bytes]:
    """Stream parts: each a header dict and an iterable of body chunks."""
    for headers, chunks in parts:
        head = f"--{boundary}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        yield (head + "\r\n").encode("ascii")
        yield from chunks
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


STREAM_BATCH_BYTES = 4 << 20


async def in_batches(chunks: Iterator[bytes], budget: int = STREAM_BATCH_BYTES
                     ) -> AsyncIterator[bytes]:
    """`chunks` (blocking reads) for a StreamingResponse, read in the thread pool
    `budget` bytes at a time.

    Given a plain iterator, Starlette hops to the thread pool for every item: for a
    series retrieve, a part header, a 1 MiB read or two and a delimiter per instance,
    ~900 hops for 300 CT images, which held it at about half of Orthanc's MB/s. Here one
    hop reads up to `budget` bytes (plus one chunk): memory stays bounded, and the
    chunks go out as they were read, not joined."""
    def take() -> list[bytes]:
        batch: list[bytes] = []
        size = 0
        for chunk in chunks:
            batch.append(chunk)
            size += len(chunk)
            if size >= budget:
                break
        return batch

    try:
        while batch := await anyio.to_thread.run_sync(take):
            for chunk in batch:
                yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:  # a generator: its files are closed now, not when collected
            close()


@dataclass(frozen=True)
class SpooledPart:
    """One part of a request body, written to a file. Header names are lower-case."""

    headers: dict[str, str]
    path: Path
    size: int


class MultipartError(ValueError):
    """The body is not a well-formed multipart message (RFC 2046 §5.1.1)."""


class MultipartSpooler:
    """Split a multipart body, fed chunk by chunk, into parts spooled to files.

    Memory stays bounded by one chunk plus the delimiter length, however large the
    body (a 1 GB STOW-RS upload never sits in memory).
    """

    _MAX_HEADER_BYTES = 64 * 1024

    def __init__(self, boundary: str, folder: Path) -> None:
        self._dash_boundary = b"--" + boundary.encode("latin-1")
        self._delimiter = b"\r\n" + self._dash_boundary
        self._folder = folder
        self._buffer = bytearray()
        self._state = "preamble"
        self._current: tuple[dict[str, str], Path, BinaryIO] | None = None
        self._written = 0
        self.parts: list[SpooledPart] = []

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        while self._step():
            pass

    def finish(self) -> list[SpooledPart]:
        """The parts; raises `MultipartError` when the closing delimiter never came."""
        if self._state != "end":
            self._abort()
            raise MultipartError("the multipart body ended before its closing boundary "
                                 f"'{self._dash_boundary.decode('latin-1')}--'")
        return self.parts

    def _step(self) -> bool:
        buf = self._buffer
        if self._state == "preamble":
            at = buf.find(self._dash_boundary)
            if at < 0:
                del buf[: max(0, len(buf) - len(self._dash_boundary))]
                return False
            del buf[: at + len(self._dash_boundary)]
            self._state = "delimiter"
            return True
        if self._state == "delimiter":
            if len(buf) < 2:
                return False
            if buf[:2] == b"--":
                self._state = "end"
                buf.clear()
                return False
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                if len(buf) > self._MAX_HEADER_BYTES:
                    raise MultipartError("garbage after a boundary delimiter")
                return False
            del buf[: line_end + 2]  # transport padding, then CRLF (RFC 2046 §5.1.1)
            self._state = "headers"
            return True
        if self._state == "headers":
            if buf[:2] == b"\r\n":
                head, rest = b"", 2
            else:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > self._MAX_HEADER_BYTES:
                        raise MultipartError("part headers longer than 64 KiB")
                    return False
                head, rest = bytes(buf[:end]), end + 4
            del buf[:rest]
            self._open_part(head)
            self._state = "body"
            return True
        if self._state == "body":
            at = buf.find(self._delimiter)
            if at < 0:
                safe = len(buf) - len(self._delimiter) + 1
                if safe > 0:
                    self._write(bytes(buf[:safe]))
                    del buf[:safe]
                return False
            self._write(bytes(buf[:at]))
            del buf[: at + len(self._delimiter)]
            self._close_part()
            self._state = "delimiter"
            return True
        buf.clear()  # epilogue after the closing delimiter is ignored
        return False

    def _open_part(self, head: bytes) -> None:
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        path = self._folder / f"part-{len(self.parts) + 1:05d}"
        self._current = (headers, path, open(path, "wb"))  # closed in _close_part
        self._written = 0

    def _write(self, data: bytes) -> None:
        if self._current is not None and data:
            self._current[2].write(data)
            self._written += len(data)

    def _close_part(self) -> None:
        if self._current is not None:
            headers, path, fh = self._current
            fh.close()
            self.parts.append(SpooledPart(headers, path, self._written))
            self._current = None

    def _abort(self) -> None:
        if self._current is not None:
            self._current[2].close()
            self._current = None


def boundary_of(content_type: str) -> str | None:
    """The boundary parameter of a multipart Content-Type, unquoted."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "boundary":
            return value.strip().strip('"') or None
    return None
