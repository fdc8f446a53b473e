"""multipart/related bodies (RFC 2387), as DICOMweb uses them."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator


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
