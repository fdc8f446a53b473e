"""Blobs as files under one folder: the embedded default."""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from minipacs.errors import NotFound, StorageError
from minipacs.storage.base import BlobStat
from minipacs.storage.keys import check_key
from minipacs.storage.scratch import TMP_SUFFIX, hold, sweep_files

# Blobs are written here first, then renamed into place (same file system, so atomic).
# One folder, so the sweep at start reads one directory, not the whole archive.
INCOMING = ".incoming"


def _fsync(path: Path) -> None:
    """fsync a file or a folder by its path. os.open, not open(): no buffered reader,
    so no fstat, ioctl or lseek around the fsync."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemStore:
    """Each blob is one file; writes go to a temp file, are fsynced, then renamed in place.
    A file handed over with `put(..., take=True)` is fsynced and hard-linked instead.

    Temp files a killed process left are removed when the store is opened (never listed
    as keys, never served); `sweep_temporary(everywhere=True)` also finds those older
    versions wrote next to the blobs (`minipacs verify`).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.incoming = self.root / INCOMING
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.sweep_temporary()

    def __repr__(self) -> str:
        return f"FilesystemStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        if key.split("/", 1)[0] == INCOMING or key.endswith(TMP_SUFFIX):
            raise ValueError(f"blob key {key!r} names a temp file, never a blob")
        return self.root / check_key(key)

    def put(self, key: str, data: bytes | Path, *, durable: bool = True,
            take: bool = False) -> None:
        target = self._path(key)
        try:
            created = self._make_parents(target.parent)
            if not (take and isinstance(data, Path) and self._link(data, target, durable)):
                self._write(target, data, durable)
            # The new name is durable only once its directory entry is; new parents too.
            for directory in [target.parent, *created] if durable else []:
                _fsync(directory)
        except OSError as exc:
            raise StorageError(f"could not write blob {key}: {exc}") from exc

    def _write(self, target: Path, data: bytes | Path, durable: bool) -> None:
        """Copy into a temp file, fsync it, rename it over `target`."""
        tmp = self.incoming / f"{target.name}.{uuid.uuid4().hex}{TMP_SUFFIX}"
        try:
            with open(tmp, "wb") as out:
                hold(out)  # until renamed: a sweep never takes a file being written
                if isinstance(data, Path):
                    with open(data, "rb") as src:
                        shutil.copyfileobj(src, out, 1024 * 1024)
                else:
                    out.write(data)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
                os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()

    def _link(self, source: Path, target: Path, durable: bool) -> bool:
        """Make the file `source` the blob itself: fsync it, then hard-link it as
        `target` (its data is durable before the name exists). False when that cannot
        be done (another file system, a blob already under that name: a replacement,
        which must swap atomically), and the caller copies instead."""
        if durable:
            _fsync(source)
        try:
            os.link(source, target)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EEXIST, errno.EPERM, errno.EMLINK,
                             errno.ENOTSUP):
                return False
            raise
        return True

    def sweep_temporary(self, *, everywhere: bool = False) -> int:
        """Remove temp files of interrupted writes (no live process holds them).

        `everywhere` also walks the whole tree for the `.<name>.<hex>.tmp` files older
        versions wrote next to the blobs (slow on a large archive: `verify` does it).
        Returns how many were removed."""
        paths = list(self.incoming.glob(f"*{TMP_SUFFIX}"))
        if everywhere:
            paths += [p for p in self.root.rglob(f".*{TMP_SUFFIX}")
                      if p.is_file() and p.parent != self.incoming]
        return sweep_files(iter(paths))

    def _make_parents(self, directory: Path) -> list[Path]:
        """mkdir -p, returning the parents of newly created folders (to fsync them)."""
        missing: list[Path] = []
        current = directory
        while not current.exists():
            missing.append(current)
            current = current.parent
        if not missing:
            # The usual case, a series' second instance onwards: one stat. A mkdir of
            # an existing folder is a failed system call that locks its parent.
            return []
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
            if path.is_file() and not path.name.endswith(TMP_SUFFIX) \
                    and INCOMING not in path.relative_to(self.root).parts:
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key
