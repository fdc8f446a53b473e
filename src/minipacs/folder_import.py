"""Import every DICOM file under a folder (CDs with DICOMDIR included) into the archive."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from minipacs.archive import Archive
from minipacs.errors import MinipacsError

log = logging.getLogger(__name__)


@dataclass
class ImportSummary:
    stored: int = 0
    duplicates: int = 0
    replaced: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # DICOMDIR, not DICOM
    rejected: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.stored + self.duplicates + self.replaced + len(self.skipped) + len(
            self.rejected)


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Every regular file under the given files/folders, in a stable order."""
    for path in paths:
        if path.is_file():
            yield path
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root) / name


def _looks_like_dicom(path: Path) -> str | None:
    """Why the file is surely not DICOM, or None when it may be."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        return f"unreadable: {exc}"
    if len(head) == 132 and head[128:132] == b"DICM":
        return None
    # Bare datasets (no preamble) start with a group 0008 (or 0002) tag, little endian.
    if len(head) >= 4 and head[1] == 0 and head[0] in (0x02, 0x08) and head[3] == 0:
        return None
    return "not a DICOM file (no 'DICM' marker at byte 128)"


def import_files(
    archive: Archive,
    files: list[Path],
    *,
    received_from: str = "import",
    on_progress: Callable[[Path], None] | None = None,
) -> ImportSummary:
    summary = ImportSummary()
    for path in files:
        try:
            if path.name.upper() == "DICOMDIR":
                summary.skipped.append((path, "DICOMDIR index (its files are imported)"))
                continue
            reason = _looks_like_dicom(path)
            if reason:
                summary.skipped.append((path, reason))
                continue
            try:
                result = archive.ingest(path, received_from=received_from)
            except MinipacsError as exc:
                summary.rejected.append((path, str(exc)))
                log.warning("import: %s rejected: %s", path, exc)
                continue
            if result.status == "duplicate":
                summary.duplicates += 1
            elif result.status == "replaced":
                summary.replaced += 1
            else:
                summary.stored += 1
        finally:
            if on_progress is not None:
                on_progress(path)
    return summary
