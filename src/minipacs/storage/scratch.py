"""Scratch files on the way in, and the sweep of those a killed process left behind.

A blob is written to a temp file, then renamed into place; a STOW-RS body is spooled
part by part to a folder before ingest. Both hold patient data. A process killed in
between leaves them behind, so whoever writes one holds an exclusive `flock` on it for
as long as it is in use (the kernel drops the lock when the process dies, however it
dies). A sweep removes only what it can lock itself: nothing a live process, this node
or another on the same machine, is still writing. `flock` is per open file, so this
holds across the workers of `serve --workers N` too.

The only race left is a creator between `open` and `flock` (microseconds): a sweep skips
files still empty and folders without their lock file until they are `GRACE_SECONDS`
old; neither holds patient data yet.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
LOCK_NAME = ".in-use"
GRACE_SECONDS = 600.0
STOW_SPOOL = "stow-spool"  # under the data dir: one folder per STOW-RS request


def stow_spool(data_dir: Path) -> Path:
    """Where STOW-RS request bodies are spooled part by part before ingest."""
    return data_dir / STOW_SPOOL


def hold(fh: BinaryIO) -> None:
    """Mark an open scratch file as in use until it is closed."""
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)


def _lock_if_free(path: Path) -> int | None:
    """An fd holding the exclusive lock on `path`, or None when someone holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _old(stat: os.stat_result) -> bool:
    return time.time() - stat.st_mtime > GRACE_SECONDS


def sweep_files(paths: Iterator[Path]) -> int:
    """Remove the given temp files no process is writing. Returns how many went."""
    removed = 0
    for path in paths:
        fd = _lock_if_free(path)
        if fd is None:
            continue
        try:
            held = os.fstat(fd)
            try:
                current = os.stat(path)
            except FileNotFoundError:  # renamed into place meanwhile: a blob now
                continue
            if current.st_ino != held.st_ino or (held.st_size == 0 and not _old(held)):
                continue
            path.unlink()
            removed += 1
            log.info("removed %s, left by an interrupted write (%d bytes)", path,
                     held.st_size)
        finally:
            os.close(fd)
    return removed


def sweep_stale_files(folder: Path, pattern: str, older_than: float) -> int:
    """Remove the files matching `pattern` in `folder` untouched for `older_than`
    seconds: for scratch files written by a library that does not lock them
    (pynetdicom's C-STORE spool), the writer's own timeouts bound how long a live one
    can go without a write. Returns how many went."""
    if not folder.is_dir():
        return 0
    removed = 0
    cutoff = time.time() - older_than
    for path in folder.glob(pattern):
        try:
            info = path.stat()  # one stat: its type, age and size
            if not S_ISREG(info.st_mode) or info.st_mtime > cutoff:
                continue
            path.unlink()
        except FileNotFoundError:  # its writer finished with it meanwhile
            continue
        removed += 1
        log.info("removed %s, untouched since a transfer or process ended (%d bytes)", path,
                 info.st_size)
    return removed


@contextmanager
def scratch_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A new folder under `parent`, marked in use until the block ends, then removed."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    with open(folder / LOCK_NAME, "wb") as lock:
        hold(lock)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def sweep_folders(parent: Path) -> int:
    """Remove the scratch folders under `parent` no process holds. Returns how many."""
    if not parent.is_dir():
        return 0
    removed = 0
    for folder in sorted(parent.iterdir()):
        if not folder.is_dir():
            continue
        fd = _lock_if_free(folder / LOCK_NAME)
        if fd is None:
            try:
                if (folder / LOCK_NAME).exists() or not _old(folder.stat()):
                    continue  # in use, or being created this very moment
            except FileNotFoundError:
                continue
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
            log.info("removed %s, left by an interrupted upload", folder)
        finally:
            if fd is not None:
                os.close(fd)
    return removed
