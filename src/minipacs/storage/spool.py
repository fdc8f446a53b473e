"""A local spool in front of a slow blob store (S3): fast, durable acknowledgement.

`put` writes the blob durably to a local folder (temp + fsync + rename, like the folder
store) and returns; the archive then commits the index and the door acknowledges. Worker
threads upload spooled blobs to the remote store in parallel, check the object's size, and
only then remove the local copy. Until then reads are served from the spool. Spooled
blobs left by a crash or a stop are queued again when the store is opened, so an upload
is never lost, only delayed.

Object stores answer each request in milliseconds, not microseconds; for many small
instances this keeps C-STORE at local-disk speed (see bench/ingest_bench.py).

The spool is per machine: on a multi-node deployment another node sees a just-received
instance in queries at once but can read its bytes only after the upload (seconds). The
workers of `serve --workers N` share their machine's spool, and so does a CLI command
that opens the archive; each queues every spooled blob when it opens the spool, and an
exclusive `flock` on the spool file lets one process upload it (`_upload`), and a key's
spool name changes (put, removal after upload, deletion) only under a lock every process
takes (`_naming`), so a put of an instance sent again never lands between an upload's
last check of the name and its removal of the file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from minipacs.errors import MinipacsError, NotFound
from minipacs.storage.base import BlobStat, BlobStore
from minipacs.storage.filesystem import FilesystemStore

log = logging.getLogger(__name__)

_RETRY_DELAYS = (0.5, 1, 2, 5, 10, 30)
_BUSY_DELAY = 0.05  # seconds before looking again at a blob another process uploads
# A key's spool name is changed (a put's rename, an upload's removal, a deletion) only
# under the flock of one of these files in the spool's `.incoming` folder, chosen by a
# hash of the key that every process computes alike (crc32, not `hash`).
_NAME_LOCKS = 64
_NAME_LOCK_FILE = "spool-names-{:02x}.lock"


class _Busy(Exception):
    """Another process holds this spool file's upload lock."""



class SpooledStore:
    def __init__(self, spool: FilesystemStore, remote: BlobStore, *, workers: int = 4) -> None:
        self.spool = spool
        self.remote = remote
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()  # guards _pending
        self._pending: set[str] = set()
        self._idle = threading.Condition(self._lock)
        self._stopping = threading.Event()
        for key in spool.keys():  # resume what a crash or stop left behind
            self._enqueue(key)
        if self._pending:
            log.info("resuming %d pending uploads from %s", len(self._pending), spool.root)
        self._workers = [
            threading.Thread(target=self._work, name=f"s3-upload-{n}", daemon=True)
            for n in range(workers)
        ]
        for worker in self._workers:
            worker.start()

    def __repr__(self) -> str:
        return f"SpooledStore({self.spool!r} -> {self.remote!r})"

    # ---------------------------------------------------------------- uploads
    @contextmanager
    def _naming(self, key: str) -> Iterator[None]:
        """Hold the right to change what `key`'s spool name holds, against every thread
        and process sharing this spool: a put's rename, an upload's check that the name
        still holds the file it uploaded and the removal after it, a deletion. Without
        it a put renamed between another process's check and removal lost its bytes,
        acknowledged and never uploaded. An flock on a file opened for this one hold
        (its own open file description), so threads exclude each other as processes
        do; striped, so that puts of different keys seldom wait on each other's fsync."""
        stripe = zlib.crc32(key.encode("utf-8")) % _NAME_LOCKS
        fd = os.open(self.spool.incoming / _NAME_LOCK_FILE.format(stripe),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # and the lock with it

    def _enqueue(self, key: str) -> None:
        with self._lock:
            if key in self._pending:
                return
            self._pending.add(key)
        self._queue.put(key)

    def pending(self) -> int:
        """Blobs durable in the spool but not yet uploaded."""
        with self._lock:
            return len(self._pending)

    def wait_uploaded(self, timeout: float) -> bool:
        """Block until the spool is empty (True) or `timeout` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
            return True

    def _work(self) -> None:
        while not self._stopping.is_set():
            key = self._queue.get()
            if key is None:
                return
            attempt = 0
            while not self._stopping.is_set():
                try:
                    self._upload(key)
                    break
                except _Busy:
                    # Look again later: by then the other process has removed the
                    # spool file (done), or it died and the lock is free.
                    self._queue.put(key)
                    self._stopping.wait(_BUSY_DELAY)
                    break
                except MinipacsError as exc:
                    delay = _RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)]
                    log.warning("upload of %s failed (%s); retrying in %ss", key, exc, delay)
                    attempt += 1
                    self._stopping.wait(delay)

    def _upload(self, key: str) -> None:
        """Upload one spooled blob and remove it from the spool, holding an exclusive
        flock on the spool file throughout. Several processes share one spool (the
        workers of `serve --workers N`, a CLI command opening the archive) and each
        queues every spooled blob when it opens it: the lock lets one of them upload a
        blob and the others pass. Without it, a second uploader found the spool file
        removed by the first and took that for a deletion: it deleted the object."""
        path = self.spool.root / key
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # deleted, or uploaded by another process, meanwhile
            self._done(key, path, None)
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another process is uploading it
                raise _Busy(key) from None
            before = os.fstat(fd)
            try:
                current = os.stat(path)
            except FileNotFoundError:  # uploaded by another process before our lock
                self._done(key, path, None)
                return
            if current.st_ino != before.st_ino:  # replaced meanwhile: upload the new one
                self._queue.put(key)
                return
            try:
                self.remote.put(key, path)
            except FileNotFoundError:  # deleted (study deletion) as the upload began
                self._done(key, path, before)
                return
            if self.remote.stat(key).size != before.st_size:
                raise MinipacsError(
                    f"uploaded {key} but the object's size differs from the spool")
            self._done(key, path, before)
        finally:
            os.close(fd)  # and the lock with it

    def _done(self, key: str, path: Path, uploaded: os.stat_result | None) -> None:
        """After an upload (`uploaded`: the spool file's stat before it) or none (the
        spool file was gone): remove the spool file, or the object when the blob was
        deleted meanwhile, and forget the key."""
        with self._naming(key):
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
            if now is not None and (uploaded is None or (now.st_ino, now.st_mtime_ns) != (
                    uploaded.st_ino, uploaded.st_mtime_ns)):
                self._queue.put(key)  # put again meanwhile: upload the new bytes
                return
            if now is not None:  # the very file uploaded
                self.spool.delete(key)
            elif uploaded is not None:
                # Deleted (study deletion) while we uploaded under the lock, which no
                # other uploader could take: take the fresh object back out.
                self.remote.delete(key)
            with self._lock:
                self._pending.discard(key)
                if not self._pending:
                    self._idle.notify_all()

    def sweep_temporary(self, *, everywhere: bool = False) -> int:
        """Temp files of interrupted writes to the spool (it sweeps them when opened too).
        Objects appear in the bucket only once their PUT completes; the parts of a
        multipart upload a killed process began are left to the bucket's lifecycle rule
        (AbortIncompleteMultipartUpload), see docs/conformance.md."""
        return self.spool.sweep_temporary(everywhere=everywhere)

    def close(self) -> None:
        """Stop the workers; what is still spooled is uploaded on the next start."""
        self._stopping.set()
        for _ in self._workers:
            self._queue.put(None)

    # ---------------------------------------------------------------- BlobStore
    def put(self, key: str, data: bytes | Path, *, durable: bool = True,
            take: bool = False) -> None:
        with self._naming(key):
            self.spool.put(key, data, durable=durable, take=take)
            self._enqueue(key)

    def open(self, key: str) -> BinaryIO:
        try:
            return self.spool.open(key)
        except NotFound:
            return self.remote.open(key)

    def read(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def iter_chunks(self, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        try:
            fh = self.spool.open(key)
        except NotFound:
            return self.remote.iter_chunks(key, chunk_size)

        def chunks() -> Iterator[bytes]:
            with fh:
                while chunk := fh.read(chunk_size):
                    yield chunk

        return chunks()

    def exists(self, key: str) -> bool:
        return self.spool.exists(key) or self.remote.exists(key)

    def stat(self, key: str) -> BlobStat:
        try:
            return BlobStat(key, self.spool.stat(key).size)
        except NotFound:
            return self.remote.stat(key)

    def delete(self, key: str) -> None:
        with self._naming(key):
            self.spool.delete(key)
        self.remote.delete(key)

    def keys(self, prefix: str = "") -> Iterator[str]:
        spooled = set(self.spool.keys(prefix))
        yield from sorted(spooled)
        for key in self.remote.keys(prefix):
            if key not in spooled:
                yield key
