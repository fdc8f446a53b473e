"""The files pynetdicom spools incoming C-STORE data sets to, in `DATA_DIR/incoming`.

pynetdicom writes each C-STORE data set to a new `NamedTemporaryFile` as its PDUs
arrive (`STORE_RECV_CHUNKED_DATASET`), so a large instance never sits in memory, and
removes the file once our handler has answered (the folder store may have kept it as
the blob by then: a hard link).

Creating that file was on every C-STORE's critical path: the association's DUL thread
creates it when the command set has arrived, before it reads on, and a file creation
on ext4 waits for the journal commit that the previous instance's fsyncs started
(0.01-0.3 ms here, more on a busy disk). `SpoolFilePool` creates them ahead, on a
thread of its own, so a C-STORE takes one ready-made: +6 to +45 % CT instances/s on
one association, the more the slower the disk (docs/performance.md, "Ninth pass").
The pool is installed as the `NamedTemporaryFile` pynetdicom's `dimse_messages` module
calls (a process-wide hook, as the rest of pynetdicom's spooling configuration is),
and hands out exactly what that call would have made: a `delete=False` temporary file
in `tempfile.tempdir`.

Once its file is there, pynetdicom writes the data set's File Meta Information
into it, built as a pydicom `FileMetaDataset` and written by pydicom's
`write_file_meta_info`: 0.2 ms of CPU per C-STORE, for seven elements whose encoding
never varies but for three UIDs. `encode_file_meta` writes the same bytes directly
(tests/test_spool_files.py compares them with pydicom's); anything but plain UIDs
goes to pydicom as before. Installed the same way, in the same module.

What is left behind: an association that ends without serving its data set removes
the file itself (`event_reactor`); a killed process leaves its partial files and its
pool's empty ones, which `sweep_incoming_datasets` removes by age.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

import pynetdicom.dimse_messages as dimse_messages
from pydicom.filewriter import write_file_meta_info
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, _config
from pynetdicom.dsutils import create_file_meta

from minipacs.storage.scratch import GRACE_SECONDS, sweep_stale_files

log = logging.getLogger(__name__)

SPOOL_PATTERN = "tmp*.dcm"  # what NamedTemporaryFile(suffix=".dcm") names them
# What pynetdicom asks for (dimse_messages.DIMSEMessage.decode_msg); other calls are
# passed to tempfile as they are.
_PYNETDICOM_CALL = {"delete": False, "mode": "wb", "suffix": ".dcm"}
# How often a pool touches the files it keeps ready: far more often than the age at
# which `sweep_incoming_datasets` (any process's) removes untouched files, so no sweep
# takes a file from under a live pool, and one a killed process left ages as it should.
KEEP_FRESH_EVERY = 60.0

_installed: SpoolFilePool | None = None


def spool_incoming_datasets(directory: Path) -> SpoolFilePool:
    """Have pynetdicom write each incoming C-STORE data set to a file in `directory`
    as its PDUs arrive, instead of holding it in memory, that file made ahead by a
    `SpoolFilePool` (process-wide: pynetdicom reads both from module state; tempfile's
    directory also serves STOW-RS). Returns the pool; a second call replaces the
    first's."""
    global _installed
    missing = [name for name in _HOOKED if not callable(getattr(dimse_messages, name, None))]
    if missing:
        raise RuntimeError(f"pynetdicom's dimse_messages no longer spools C-STORE data sets "
                           f"through {', '.join(missing)}: review minipacs.dimse.spool_files")
    directory.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(directory)
    _config.STORE_RECV_CHUNKED_DATASET = True
    if _installed is not None:
        _installed.close()
    _installed = SpoolFilePool(directory)
    dimse_messages.NamedTemporaryFile = _installed.named_temporary_file  # type: ignore[attr-defined,assignment]
    dimse_messages.create_file_meta = _create_file_meta  # type: ignore[attr-defined,assignment]
    dimse_messages.write_file_meta_info = _write_file_meta_info  # type: ignore[attr-defined]
    return _installed


_HOOKED = ("NamedTemporaryFile", "create_file_meta", "write_file_meta_info")
_PLAIN_UID = re.compile(r"[0-9.]{1,64}")


def encode_file_meta(sop_class_uid: str, sop_instance_uid: str,
                     transfer_syntax_uid: str) -> bytes | None:
    """The File Meta Information (group 0002, Explicit VR Little Endian, PS3.10 7.1)
    pynetdicom writes before a spooled data set, byte for byte as pydicom encodes it:
    UIDs padded with NUL to an even length, the implementation version with a space.
    None when a UID is not plain digits and dots (pydicom then encodes it, and
    refuses what it refuses)."""
    uids = (sop_class_uid, sop_instance_uid, transfer_syntax_uid,
            PYNETDICOM_IMPLEMENTATION_UID)
    if not all(isinstance(uid, str) and _PLAIN_UID.fullmatch(uid) for uid in uids):
        return None
    body = struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"
    for element, uid in zip((0x0002, 0x0003, 0x0010, 0x0012), uids, strict=True):
        body += _short_element(element, b"UI", uid.encode("ascii"), b"\x00")
    body += _short_element(0x0013, b"SH",
                           PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii"), b" ")
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body


def _short_element(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


class _EncodedFileMeta:
    """What `_create_file_meta` hands pynetdicom in place of a `FileMetaDataset`;
    only `_write_file_meta_info` ever receives it."""

    __slots__ = ("encoded",)

    def __init__(self, encoded: bytes) -> None:
        self.encoded = encoded


def _create_file_meta(**kwargs: Any) -> Any:
    if set(kwargs) == {"sop_class_uid", "sop_instance_uid", "transfer_syntax"}:
        encoded = encode_file_meta(kwargs["sop_class_uid"], kwargs["sop_instance_uid"],
                                   kwargs["transfer_syntax"])
        if encoded is not None:
            return _EncodedFileMeta(encoded)
    return create_file_meta(**kwargs)


def _write_file_meta_info(fp: Any, file_meta: Any, enforce_standard: bool = True) -> None:
    if isinstance(file_meta, _EncodedFileMeta):
        fp.write(file_meta.encoded)
    else:
        write_file_meta_info(fp, file_meta, enforce_standard)


def sweep_incoming_datasets(directory: Path, network_timeout: float) -> int:
    """Remove C-STORE spool files a killed process left in `directory` (an association
    that ends without serving one removes it itself: event_reactor). A live transfer
    writes its file at least once per network timeout or is aborted, a complete one is
    ingested at once, and a live pool touches the files it keeps ready every minute, so
    a file untouched for twice the network timeout (10 minutes at least) has no owner
    left."""
    return sweep_stale_files(directory, SPOOL_PATTERN, max(GRACE_SECONDS,
                                                           2 * network_timeout))


class SpoolFilePool:
    """Up to `depth` empty spool files in `directory`, created ahead by a daemon thread
    that also touches them every `keep_fresh` seconds while they wait;
    `named_temporary_file` hands one out (or makes one at once when none is ready, as
    pynetdicom would have)."""

    def __init__(self, directory: Path, depth: int = 4,
                 keep_fresh: float = KEEP_FRESH_EVERY) -> None:
        self.directory = directory
        self.depth = depth
        self.keep_fresh = keep_fresh
        self._ready: deque[IO[bytes]] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._fill, name="spool-files", daemon=True)
        self._thread.start()

    def _new(self) -> IO[bytes]:
        return tempfile.NamedTemporaryFile(dir=self.directory, **_PYNETDICOM_CALL)  # type: ignore[call-overload, no-any-return]

    def _fill(self) -> None:
        while True:
            with self._changed:
                while len(self._ready) >= self.depth and not self._closed:
                    if not self._changed.wait(self.keep_fresh):
                        self._touch_ready()
                if self._closed:
                    return
            try:
                made = self._new()
            except OSError as exc:  # a full or vanished disk: C-STOREs will say so
                log.warning("could not create a C-STORE spool file ahead: %s", exc)
                time.sleep(1.0)  # and try again: no event says the disk has room now
                continue
            with self._changed:
                if self._closed:
                    _discard(made)
                    return
                self._ready.append(made)

    def _touch_ready(self) -> None:
        """Mark the waiting files as in use (their modification time is now)."""
        for file in self._ready:
            try:
                os.utime(file.fileno())
            except OSError:
                pass  # removed by hand meanwhile: pynetdicom's write then fails, loudly

    def named_temporary_file(self, **kwargs: Any) -> IO[bytes]:
        """What `tempfile.NamedTemporaryFile(**kwargs)` returns, ready-made if it can."""
        if kwargs != _PYNETDICOM_CALL:
            return tempfile.NamedTemporaryFile(**kwargs)  # type: ignore[no-any-return]
        with self._changed:
            ready = self._ready.popleft() if self._ready else None
            self._changed.notify()
        return ready if ready is not None else self._new()

    def close(self) -> None:
        """Stop making files and remove the ready ones."""
        with self._changed:
            self._closed = True
            ready, self._ready = list(self._ready), deque()
            self._changed.notify()
        for file in ready:
            _discard(file)
        self._thread.join(timeout=5)


def _discard(file: IO[bytes]) -> None:
    file.close()
    try:
        os.unlink(file.name)
    except FileNotFoundError:
        pass
