"""The `BlobStore` protocol every backend implements."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class BlobStat:
    key: str
    size: int


class BlobStore(Protocol):
    """Durable, atomic storage of immutable blobs addressed by key.

    `put` returns only once the blob is durable, and a reader never sees a partial blob.
    `durable=False` is for caches (rendered images: recomputed when lost): still atomic,
    but a backend may skip its fsyncs. `take=True`: `data` is a file its caller hands
    over and never writes again (a received instance spooled to disk), which a backend
    may make the blob itself instead of copying it.
    Missing keys raise `minipacs.errors.NotFound`; backend failures `StorageError`.
    """

    def put(self, key: str, data: bytes | Path, *, durable: bool = True,
            take: bool = False) -> None: ...

    def open(self, key: str) -> BinaryIO: ...

    def read(self, key: str) -> bytes: ...

    def iter_chunks(self, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]: ...

    def exists(self, key: str) -> bool: ...

    def stat(self, key: str) -> BlobStat: ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str = "") -> Iterator[str]: ...
