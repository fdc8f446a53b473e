"""Blobs as files under one folder: the embedded default."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from minipacs.errors import NotFound, StorageError
from minipacs.storage.base import BlobStat
from minipacs.storage.keys import check_key

_TMP_SUFFIX = ".tmp"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemStore:
    """Each blob is one file; writes go to a temp file, are fsynced, then renamed in place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"FilesystemStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes | Path) -> None:
        target = self._path(key)
        try:
            created = self._make_parents(target.parent)
            tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}{_TMP_SUFFIX}"
            try:
                with open(tmp, "wb") as out:
                    if isinstance(data, Path):
                        with open(data, "rb") as src:
                            shutil.copyfileobj(src, out, 1024 * 1024)
                    else:
                        out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, target)
            finally:
                if tmp.exists():
                    tmp.unlink()
            # The rename is durable only once its directory entry is; new parents likewise.
            for directory in [target.parent, *created]:
                _fsync_dir(directory)
        except OSError as exc:
            raise StorageError(f"could not write blob {key}: {exc}") from exc

    def _make_parents(self, directory: Path) -> list[Path]:
        """mkdir -p, returning the parents of newly created folders (to fsync them)."""
        missing: list[Path] = []
        current = directory
        while not current.exists():
            missing.append(current)
            current = current.parent
        directory.mkdir(parents=True, exist_ok=True)
        return [p.parent for p in missing]

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError as exc:
            raise NotFound(f"blob {key} is missing from {self.root}") from exc
        except OSError as exc:
            raise StorageError(f"could not read blob {key}: {exc}") from exc

    def read(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def iter_chunks(self, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        with self.open(key) as fh:
            while chunk := fh.read(chunk_size):
                yield chunk

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def stat(self, key: str) -> BlobStat:
        try:
            return BlobStat(key, self._path(key).stat().st_size)
        except FileNotFoundError as exc:
            raise NotFound(f"blob {key} is missing from {self.root}") from exc

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"could not delete blob {key}: {exc}") from exc

    def keys(self, prefix: str = "") -> Iterator[str]:
        # Walk only the folder the prefix names ("derived/<study>/" is one study's
        # folder), not the whole archive; the startswith check below does the rest.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / check_key(folder) if folder else self.root
        if not start.is_dir():
            return
        for path in sorted(start.rglob("*")):
            if path.is_file() and not path.name.endswith(_TMP_SUFFIX):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key
