"""`minipacs verify`: do the index and the blobs still agree, byte for byte?

The blobs are the source of truth. Every index row is checked against its blob (present,
same SHA-256); every instance blob without a row is an orphan. `rebuild_index=True`
repairs the index from the blobs: orphans are indexed from their own headers, rows whose
blob is gone are removed (both audited), and the sequences patients, studies and series
keep for sequence matching are re-derived from the stored instance metadata (filling rows
restored from a backup made before they were kept). Corrupt blobs are only reported: their bytes
no longer match what was acknowledged, so the fix is a restore from backup, not a re-index.
Incomplete blobs (intact, but cut short when they arrived: older versions acknowledged
some) are only reported too: the sender still has the whole instance to send again.

Temp files of interrupted writes and STOW-RS spool folders of killed requests hold
patient data: verify removes those no live process holds, and counts them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from minipacs.archive import Archive
from minipacs.dicom.completeness import check_complete
from minipacs.errors import InvalidInstance, MinipacsError, NotFound
from minipacs.storage.scratch import sweep_folders

log = logging.getLogger(__name__)

INSTANCE_PREFIX = "studies/"


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    missing: list[str] = field(default_factory=list)  # blob keys indexed but gone
    corrupt: list[str] = field(default_factory=list)  # blob keys whose SHA-256 differs
    orphans: list[str] = field(default_factory=list)  # blob keys no row points at
    reindexed: list[str] = field(default_factory=list)  # orphans now indexed
    forgotten: list[str] = field(default_factory=list)  # rows removed (blob missing)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (key, why) not DICOM
    resequenced: int = 0  # patient/study/series rows whose kept sequences changed
    incomplete: list[tuple[str, str]] = field(default_factory=list)  # (key, why) not whole
    temp_removed: int = 0  # temp files and spool folders of interrupted writes, removed

    @property
    def healthy(self) -> bool:
        """True when nothing is wrong any more (after repairs, if any were made)."""
        unrepaired_missing = set(self.missing) - set(self.forgotten)
        unrepaired_orphans = set(self.orphans) - set(self.reindexed)
        return not (unrepaired_missing or self.corrupt or unrepaired_orphans
                    or self.incomplete)


class _Hashing:
    """A blob stream that hashes what is read through it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        chunk = self._stream.read(n)
        self.digest.update(chunk)
        return chunk


def _read_blob(archive: Archive, key: str) -> tuple[str, str | None]:
    """SHA-256 of a blob and why it is not whole (None when it is), in one read."""
    with archive.store.open(key) as fh:
        hashing = _Hashing(fh)
        why = None
        try:
            check_complete(cast(BinaryIO, hashing))
        except InvalidInstance as exc:
            why = str(exc)
        while hashing.read(1024 * 1024):
            pass
    return hashing.digest.hexdigest(), why


def sweep_temporary(archive: Archive, stow_spool: Path | None = None) -> int:
    """Remove temp blob files and STOW-RS spool folders no live process holds."""
    sweep: Any = getattr(archive.store, "sweep_temporary", None)
    removed = int(sweep(everywhere=True)) if sweep is not None else 0
    return removed + (sweep_folders(stow_spool) if stow_spool is not None else 0)


def verify(
    archive: Archive,
    *,
    rebuild_index: bool = False,
    actor: str = "verify",
    on_progress: Callable[[str], None] | None = None,
    stow_spool: Path | None = None,
) -> VerifyReport:
    """Re-hash every indexed blob and check it is whole, list orphan blobs, remove temp
    files of interrupted writes (and `stow_spool` folders); with `rebuild_index`, repair."""
    report = VerifyReport(checked=0)
    temp_removed = sweep_temporary(archive, stow_spool)
    indexed: dict[str, str] = {}
    checked = 0
    for record in archive.iter_instance_records():
        indexed[record.blob_key] = record.sop_instance_uid
        checked += 1
        try:
            actual, not_whole = _read_blob(archive, record.blob_key)
        except NotFound:
            report.missing.append(record.blob_key)
            if rebuild_index:
                archive.forget_instance(record.sop_instance_uid, actor=actor,
                                        reason=f"blob {record.blob_key} is missing")
                report.forgotten.append(record.blob_key)
        else:
            if actual != record.sha256:
                log.error("blob %s is corrupt: sha256 %s, index says %s", record.blob_key,
                          actual, record.sha256)
                report.corrupt.append(record.blob_key)
            elif not_whole is not None:
                log.error("instance %s (blob %s) is not whole: %s", record.sop_instance_uid,
                          record.blob_key, not_whole)
                report.incomplete.append((record.blob_key, not_whole))
        if on_progress is not None:
            on_progress(record.blob_key)
    for key in archive.store.keys(INSTANCE_PREFIX):
        if key in indexed or not key.endswith(".dcm"):
            continue
        report.orphans.append(key)
        if rebuild_index:
            try:
                archive.index_blob(key, actor=actor)
            except MinipacsError as exc:
                report.unreadable.append((key, str(exc)))
            else:
                report.reindexed.append(key)
    resequenced = archive.refresh_sequences() if rebuild_index else 0
    return VerifyReport(
        checked, report.missing, report.corrupt, report.orphans, report.reindexed,
        report.forgotten, report.unreadable, resequenced, report.incomplete, temp_removed,
    )
