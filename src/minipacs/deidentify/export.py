"""`export_deidentified`: studies from the archive → a ZIP of de-identified DICOM files.

Instances are read, de-identified and written one at a time, so a study of any size
needs the memory of its largest instance. The ZIP is written next to its destination
and renamed into place only after the mapping rows are committed and the export is
audited: a ZIP that exists always has its mapping inside the archive.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID

from minipacs.access.roles import Action
from minipacs.archive import Archive, InstanceRecord
from minipacs.deidentify.deidentifier import Deidentifier, burned_in_reason
from minipacs.deidentify.models import ExportedStudy
from minipacs.deidentify.profile import ProfileOptions
from minipacs.dicom.matching import Filter
from minipacs.errors import Conflict, NotFound, QueryError, StorageError

log = logging.getLogger(__name__)

_FIND_PAGE = 500
_MAX_STUDIES = 100_000


@dataclass(frozen=True)
class SkippedInstance:
    study_instance_uid: str
    sop_instance_uid: str
    reason: str


@dataclass(frozen=True)
class ExportSummary:
    """What one export wrote. `refused` were left out (burned-in annotation possible);
    `flagged` were written because the caller cleared them, and need a human look."""

    export_id: str
    path: Path
    studies: int
    instances: int
    bytes_written: int
    refused: list[SkippedInstance] = field(default_factory=list)
    flagged: list[SkippedInstance] = field(default_factory=list)


def studies_matching(archive: Archive, filt: Filter) -> list[str]:
    """Study Instance UIDs a QIDO/C-FIND-style filter selects (every page of them)."""
    uids: list[str] = []
    offset = 0
    while len(uids) < _MAX_STUDIES:
        page = archive.find("STUDY", filt, limit=_FIND_PAGE, offset=offset,
                            action=Action.EXPORT_DEIDENTIFIED)
        for match in page.matches:
            uids.extend(match.get("0020000D", {}).get("Value", [])[:1])
        if not page.truncated or not page.matches:
            break
        offset += len(page.matches)
    return uids


def export_deidentified(
    archive: Archive,
    studies: Sequence[str] | Filter,
    options: ProfileOptions,
    out_zip_path: Path,
    *,
    actor: str,
    include_burned_in: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> ExportSummary:
    """De-identify `studies` (Study Instance UIDs, or a filter selecting them) into a new
    ZIP at `out_zip_path` under the Basic Profile with `options` (PS3.15 E.1).

    Instances that may carry burned-in identifying text are refused unless
    `include_burned_in`, and then listed as flagged. `on_progress(done, total)` is called
    after each instance. Raises `Conflict` when the file
    exists, `NotFound` for an unknown study or folder or when nothing is left to export,
    `QueryError` when the filter selects no study, `StorageError` when the ZIP cannot
    be written.
    """
    out_zip_path = Path(out_zip_path)
    if out_zip_path.exists():
        raise Conflict(f"{out_zip_path} already exists; choose a new file for the export")
    if not out_zip_path.parent.is_dir():
        raise NotFound(f"folder {out_zip_path.parent} does not exist; create it or choose "
                       "another place for the export")
    if isinstance(studies, Filter):
        study_uids = studies_matching(archive, studies)
        if not study_uids:
            raise QueryError("the query matches no study; nothing to export")
    else:
        study_uids = list(dict.fromkeys(studies))
    # NotFound names the study; Forbidden unless the caller may export de-identified data.
    records = {uid: archive.instances(uid, action=Action.EXPORT_DEIDENTIFIED)
               for uid in study_uids}

    export_id = str(uuid.uuid4())
    deidentifier = Deidentifier(options)
    partial = out_zip_path.with_name(out_zip_path.name + ".partial")
    total = sum(len(study_records) for study_records in records.values())
    done = 0
    refused: list[SkippedInstance] = []
    flagged: list[SkippedInstance] = []
    written: dict[str, int] = {}
    study_patient: dict[str, tuple[str, str]] = {}
    try:
        with zipfile.ZipFile(partial, "w", allowZip64=True) as zf:
            for study_uid, study_records in records.items():
                for record in study_records:
                    outcome = _export_one(archive, record, deidentifier, zf,
                                          include_burned_in)
                    if isinstance(outcome, SkippedInstance):
                        refused.append(outcome)
                    else:
                        patient_key, reason = outcome
                        study_patient[study_uid] = patient_key
                        written[study_uid] = written.get(study_uid, 0) + 1
                        if reason:
                            flagged.append(SkippedInstance(study_uid, record.sop_instance_uid,
                                                           reason))
                    done += 1
                    if on_progress is not None:
                        on_progress(done, total)
        if not written:
            raise NotFound(f"nothing to export: all {len(refused)} instances of the "
                           f"{len(records)} studies were refused (possible burned-in "
                           "annotation); pass include_burned_in after checking the pixels")
        mapping = _mapping(export_id, actor, options, deidentifier, study_patient, written,
                           refused, flagged)
        archive.record_deidentified_export(mapping)
        for row in mapping:
            archive.audit("export", actor, row.patient_id, row.study_instance_uid,
                          f"de-identified export {export_id}: {row.instances} instances, "
                          f"{row.refused} refused, {row.flagged} flagged; {row.options}")
        partial.replace(out_zip_path)
    except OSError as exc:
        raise StorageError(f"could not write the export {out_zip_path}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    summary = ExportSummary(export_id, out_zip_path, len(written), sum(written.values()),
                            out_zip_path.stat().st_size, refused, flagged)
    log.info("de-identified export %s by %s: %d studies, %d instances, %d refused",
             export_id, actor or "?", summary.studies, summary.instances, len(refused))
    return summary


def _export_one(
    archive: Archive,
    record: InstanceRecord,
    deidentifier: Deidentifier,
    zf: zipfile.ZipFile,
    include_burned_in: bool,
) -> SkippedInstance | tuple[tuple[str, str], str]:
    """Write one de-identified instance; (patient key, flag reason) or why it was refused."""
    with archive.open_instance(record) as fh:
        header = dcmread(fh, stop_before_pixels=True)
        reason = burned_in_reason(header) or ""
        if reason and not include_burned_in:
            return SkippedInstance(record.study_instance_uid, record.sop_instance_uid,
                                   reason)
        fh.seek(0)
        ds = dcmread(fh)
    patient = deidentifier.apply(ds)
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    info = zipfile.ZipInfo(
        f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm",
        date_time=time.gmtime()[:6])
    # Compressed pixel data does not shrink further; spare the CPU.
    info.compress_type = zipfile.ZIP_STORED if syntax.is_compressed else zipfile.ZIP_DEFLATED
    zf.writestr(info, buffer.getbuffer())
    return (patient.patient_id, patient.issuer_of_patient_id), reason


def _mapping(
    export_id: str,
    actor: str,
    options: ProfileOptions,
    deidentifier: Deidentifier,
    study_patient: dict[str, tuple[str, str]],
    written: dict[str, int],
    refused: list[SkippedInstance],
    flagged: list[SkippedInstance],
) -> list[ExportedStudy]:
    pseudonyms = {(p.patient_id, p.issuer_of_patient_id): p for p in deidentifier.patients()}
    rows = []
    for study_uid, count in written.items():
        patient = pseudonyms[study_patient[study_uid]]
        rows.append(ExportedStudy(
            export_id=export_id,
            actor=actor[:128],
            options="; ".join(options.names()),
            patient_id=patient.patient_id[:64],
            issuer_of_patient_id=patient.issuer_of_patient_id[:64],
            pseudonym=patient.pseudonym,
            date_shift_days=patient.date_shift_days
            if options.retain_longitudinal_modified_dates else None,
            study_instance_uid=study_uid,
            deidentified_study_instance_uid=deidentifier.uid(study_uid),
            instances=count,
            refused=sum(1 for s in refused if s.study_instance_uid == study_uid),
            flagged=sum(1 for s in flagged if s.study_instance_uid == study_uid),
        ))
    return rows
