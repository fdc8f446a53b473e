"""The Modality Worklist: scheduled procedure steps that modalities query (PS3.4 Annex K).

Items are created, updated and cancelled by the admin API and the CLI, and by the EMR
order flow (`emr/orders.py`: an order *is* a worklist item, its status the order's
state); the worklist C-FIND SCP reads them through `Worklist.find`, which shares
the matching rules (`Filter`, `value_condition`, and sequence matching over DICOM JSON
from `dicom.item_matching`) with C-FIND and QIDO-RS. Modalities are offered the items
still to be done: SCHEDULED and IN PROGRESS.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy import ColumnElement, Engine, select
from sqlalchemy.orm import Session, sessionmaker

from minipacs.ae_registry import check_ae_title
from minipacs.dicom.item_matching import (
    SequenceKey,
    check_sequence_key,
    dataset_matches,
    sequence_keys,
)
from minipacs.dicom.json_model import dumps, element, tag_key
from minipacs.dicom.matching import Filter, Match, like_pattern
from minipacs.dicom.names import lower_name
from minipacs.dicom.uids import is_safe_uid
from minipacs.errors import InvalidRequest, NotFound
from minipacs.index.database import create_schema, session_factory
from minipacs.index.models import ScheduledProcedureStep
from minipacs.index.query import value_condition
from minipacs.index.sequences import prefilter

log = logging.getLogger(__name__)

# The order's state (emr/orders.py). IN PROGRESS, COMPLETED and DISCONTINUED are what a
# modality reports with MPPS (PS3.3 C.4.14, Performed Procedure Step Status).
SCHEDULED = "SCHEDULED"
IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
CANCELLED = "CANCELLED"
STATUSES = (SCHEDULED, IN_PROGRESS, COMPLETED, DISCONTINUED, CANCELLED)
OFFERED = (SCHEDULED, IN_PROGRESS)  # what the worklist C-FIND answers with
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")

SPS_SEQUENCE = "00400100"  # ScheduledProcedureStepSequence
# Matching keys (tag, or SEQUENCE.ITEMTAG) → column (PS3.4 K.6.1.2.2, Table K.6-1).
_COLUMNS: dict[str, Any] = {
    "00100020": ScheduledProcedureStep.patient_id,
    "00100021": ScheduledProcedureStep.issuer_of_patient_id,
    "00100030": ScheduledProcedureStep.patient_birth_date,
    "00100040": ScheduledProcedureStep.patient_sex,
    "00080050": ScheduledProcedureStep.accession_number,
    "0020000D": ScheduledProcedureStep.study_instance_uid,
    "00401001": ScheduledProcedureStep.requested_procedure_id,
    f"{SPS_SEQUENCE}.00400001": ScheduledProcedureStep.scheduled_station_ae_title,
    f"{SPS_SEQUENCE}.00400002": ScheduledProcedureStep.scheduled_start_date,
    f"{SPS_SEQUENCE}.00400003": ScheduledProcedureStep.scheduled_start_time,
    f"{SPS_SEQUENCE}.00080060": ScheduledProcedureStep.modality,
    f"{SPS_SEQUENCE}.00400009": ScheduledProcedureStep.scheduled_procedure_step_id,
    f"{SPS_SEQUENCE}.00400020": ScheduledProcedureStep.status,
}
PATIENT_NAME = "00100010"
MATCHING_KEYS = (PATIENT_NAME, *_COLUMNS)
# Sequences an item keeps as DICOM JSON (`sequences_json`), matched item by item.
REFERENCED_STUDIES = tag_key("ReferencedStudySequence")
REQUESTED_PROCEDURE_CODES = tag_key("RequestedProcedureCodeSequence")
SCHEDULED_PROTOCOL_CODES = tag_key("ScheduledProtocolCodeSequence")  # inside the SPS item
OTHER_PATIENT_IDS = tag_key("OtherPatientIDsSequence")  # national IDs (CCCD, BHYT)
_KEPT_SEQUENCES = {REFERENCED_STUDIES, REQUESTED_PROCEDURE_CODES, SPS_SEQUENCE,
                   OTHER_PATIENT_IDS}
# What a reference to a study usually names as its SOP class: Detached Study Management
# (retired, but still what order systems send; pydicom's UID dictionary names it so).
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
_YIELD = 200


@dataclass(frozen=True)
class Code:
    """One item of a code sequence (PS3.3 Table 8.8-1: Code Sequence Macro)."""

    code_value: str
    coding_scheme_designator: str
    code_meaning: str = ""


@dataclass(frozen=True)
class ReferencedStudy:
    """One item of ReferencedStudySequence (SOP Instance Reference Macro)."""

    sop_instance_uid: str
    sop_class_uid: str = DETACHED_STUDY_MANAGEMENT


@dataclass(frozen=True)
class OtherPatientID:
    """One item of OtherPatientIDsSequence (0010,1002): e.g. a CCCD with issuer CCCD."""

    patient_id: str
    issuer_of_patient_id: str


@dataclass(frozen=True)
class WorklistItem:
    """One scheduled procedure step with its order and patient; DICOM formats (dates
    YYYYMMDD, times HHMMSS, names with ^ between components)."""

    patient_id: str
    patient_name: str = ""
    scheduled_procedure_step_id: str = ""
    status: str = SCHEDULED
    issuer_of_patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    accession_number: str = ""
    referring_physician_name: str = ""
    study_instance_uid: str = ""
    requested_procedure_id: str = ""
    requested_procedure_description: str = ""
    modality: str = ""
    scheduled_station_ae_title: str = ""
    scheduled_start_date: str = ""
    scheduled_start_time: str = ""
    scheduled_performing_physician_name: str = ""
    scheduled_procedure_step_description: str = ""
    referenced_studies: tuple[ReferencedStudy, ...] = ()
    requested_procedure_codes: tuple[Code, ...] = ()
    scheduled_protocol_codes: tuple[Code, ...] = ()
    other_patient_ids: tuple[OtherPatientID, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


ITEM_FIELDS = tuple(f.name for f in fields(WorklistItem))
_SEQUENCE_FIELDS = ("referenced_studies", "requested_procedure_codes",
                    "scheduled_protocol_codes", "other_patient_ids")
COLUMN_FIELDS = tuple(name for name in ITEM_FIELDS if name not in _SEQUENCE_FIELDS)


def validated(item: WorklistItem) -> WorklistItem:
    """`item` with generated IDs filled in; raises `InvalidRequest` saying what is wrong."""
    problems = []
    if not item.patient_id.strip():
        problems.append("patient_id is required")
    if item.scheduled_start_date and not _DATE.match(item.scheduled_start_date):
        problems.append(f"scheduled_start_date {item.scheduled_start_date!r} is not YYYYMMDD")
    if item.patient_birth_date and not _DATE.match(item.patient_birth_date):
        problems.append(f"patient_birth_date {item.patient_birth_date!r} is not YYYYMMDD")
    if item.scheduled_start_time and not _TIME.match(item.scheduled_start_time):
        problems.append(f"scheduled_start_time {item.scheduled_start_time!r} is not HHMM[SS]")
    if item.study_instance_uid and not is_safe_uid(item.study_instance_uid):
        problems.append(f"study_instance_uid {item.study_instance_uid!r} is not a UID")
    if item.status not in STATUSES:
        problems.append(f"status {item.status!r} must be one of {', '.join(STATUSES)}")
    for name, limit in (("scheduled_procedure_step_id", 16), ("accession_number", 16),
                        ("requested_procedure_id", 16), ("modality", 16)):
        if len(getattr(item, name)) > limit:
            problems.append(f"{name} is longer than {limit} characters")
    for ref in item.referenced_studies:
        for uid in (ref.sop_instance_uid, ref.sop_class_uid):
            if not is_safe_uid(uid):
                problems.append(f"referenced study UID {uid!r} is not a UID")
    for other in item.other_patient_ids:
        if not other.patient_id.strip() or len(other.patient_id) > 64:
            problems.append(f"other patient ID {other.patient_id!r} must be 1 to 64 "
                            "characters")
    for name in ("requested_procedure_codes", "scheduled_protocol_codes"):
        for code in getattr(item, name):
            problems.extend(f"{name}: {problem}" for problem in _code_problems(code))
    if problems:
        raise InvalidRequest("worklist item: " + "; ".join(problems))
    if item.scheduled_station_ae_title:
        check_ae_title(item.scheduled_station_ae_title)
    return replace(
        item,
        scheduled_procedure_step_id=item.scheduled_procedure_step_id
        or uuid.uuid4().hex[:16].upper(),
        study_instance_uid=item.study_instance_uid or generate_uid(),
        requested_procedure_id=item.requested_procedure_id or item.accession_number,
        modality=item.modality.upper(),
    )


class Worklist:
    """Create, update, cancel and query worklist items; one short session per call."""

    def __init__(self, engine: Engine, write_engine: Engine | None = None) -> None:
        self._read: sessionmaker[Session] = session_factory(engine)
        self._write: sessionmaker[Session] = session_factory(write_engine or engine)
        self._write_lock = threading.Lock()
        create_schema(write_engine or engine)

    def put(self, item: WorklistItem) -> WorklistItem:
        """Create the item, or replace the one with the same step ID. Returns it as stored."""
        item = validated(item)
        with self._write_lock, self._write() as session, session.begin():
            store_item(session, item)
        log.info("worklist item %s %s for patient %s on %s", item.scheduled_procedure_step_id,
                 item.status, item.patient_id, item.scheduled_station_ae_title or "any station")
        return item

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A write transaction on the worklist's rows (the order service's changes)."""
        with self._write_lock, self._write() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    def get(self, step_id: str) -> WorklistItem:
        with self._read() as session:
            row = session.scalars(
                select(ScheduledProcedureStep).where(
                    ScheduledProcedureStep.scheduled_procedure_step_id == step_id)
            ).one_or_none()
            if row is None:
                raise NotFound(f"worklist item {step_id!r} does not exist")
            return _item(row)

    def cancel(self, step_id: str) -> WorklistItem:
        """Withdraw the item from the worklist (kept, with status CANCELLED)."""
        return self.put(replace(self.get(step_id), status=CANCELLED))

    def items(self, *, include_cancelled: bool = False) -> list[WorklistItem]:
        stmt = select(ScheduledProcedureStep).order_by(
            ScheduledProcedureStep.scheduled_start_date,
            ScheduledProcedureStep.scheduled_start_time, ScheduledProcedureStep.id)
        if not include_cancelled:
            stmt = stmt.where(ScheduledProcedureStep.status != CANCELLED)
        with self._read() as session:
            return [_item(row) for row in session.scalars(stmt)]

    def find(self, filt: Filter, *, limit: int, offset: int = 0,
             statuses: tuple[str, ...] = OFFERED) -> tuple[list[WorklistItem], list[str]]:
        """Items to be done (or in `statuses`) matching `filt`, at most `limit` after
        skipping `offset`, and the keywords whose values were ignored because matching
        on them is not supported.

        Keys on the items of kept sequences are narrowed in SQL and decided in Python
        (`kept_sequence_keys`) while rows stream in order, before the limit applies."""
        stmt = select(ScheduledProcedureStep).where(
            ScheduledProcedureStep.status.in_(statuses))
        ignored = []
        on_items = []
        for match in filt.active():
            condition = _condition(match)
            if condition is not None:
                stmt = stmt.where(condition)
            elif _is_kept(match.key):
                on_items.append(match)
            else:
                ignored.append(match.keyword)
        keys = sequence_keys(on_items)
        for key in keys:
            check_sequence_key(key)
            stmt = stmt.where(prefilter(key, ScheduledProcedureStep.sequences_json))
        stmt = stmt.order_by(ScheduledProcedureStep.scheduled_start_date,
                             ScheduledProcedureStep.scheduled_start_time,
                             ScheduledProcedureStep.id)
        with self._read() as session:
            if not keys:
                return [_item(row) for row in session.scalars(
                    stmt.limit(limit).offset(max(offset, 0)))], ignored
            found: list[WorklistItem] = []
            skip = max(offset, 0)
            rows = session.scalars(stmt.execution_options(yield_per=_YIELD))
            try:
                for row in rows:
                    model = json.loads(row.sequences_json or "{}")
                    if all(dataset_matches(model, key) for key in keys):
                        if skip:
                            skip -= 1
                            continue
                        found.append(_item(row))
                        if len(found) >= limit:
                            break
            finally:
                rows.close()
            return found, ignored


def step_row(session: Session, step_id: str) -> ScheduledProcedureStep | None:
    return session.scalars(select(ScheduledProcedureStep).where(
        ScheduledProcedureStep.scheduled_procedure_step_id == step_id)).one_or_none()


def store_item(session: Session, item: WorklistItem) -> ScheduledProcedureStep:
    """Write a validated item into its row (created when new) in the caller's
    transaction; every change bumps the row's version (the order's ETag)."""
    row = step_row(session, item.scheduled_procedure_step_id)
    if row is None:
        row = ScheduledProcedureStep(version=0)
        session.add(row)
    for name in COLUMN_FIELDS:
        setattr(row, name, getattr(item, name))
    row.patient_name_lower = lower_name(item.patient_name)
    row.sequences_json = dumps(sequences_model(item))
    row.version = (row.version or 0) + 1
    return row


def item_of(row: ScheduledProcedureStep) -> WorklistItem:
    """The worklist item a row holds."""
    return _item(row)


def kept_sequence_keys(filt: Filter) -> tuple[SequenceKey, ...]:
    """The sequence keys of `filt` that `Worklist.find` matched on kept sequences."""
    return sequence_keys(
        m for m in filt.active() if _condition(m) is None and _is_kept(m.key))


def _is_kept(key: str) -> bool:
    parts = key.split(".")
    if parts[0] == SPS_SEQUENCE:  # the step is the row: only its protocol codes are JSON
        return len(parts) > 2 and parts[1] == SCHEDULED_PROTOCOL_CODES
    return len(parts) > 1 and parts[0] in _KEPT_SEQUENCES


def _code_problems(code: Code) -> list[str]:
    problems = []
    if not code.code_value.strip() or not code.coding_scheme_designator.strip():
        problems.append(f"code {code.code_value!r} needs a code value and a coding scheme "
                        "designator (e.g. 24627-2 and LN)")
    for name, limit in (("code_value", 16), ("coding_scheme_designator", 16),
                        ("code_meaning", 64)):
        if len(getattr(code, name)) > limit:
            problems.append(f"{name} {getattr(code, name)!r} is longer than {limit} "
                            "characters")
    return problems


def _code_json(code: Code) -> dict[str, Any]:
    return {"00080100": element("00080100", code.code_value),
            "00080102": element("00080102", code.coding_scheme_designator),
            "00080104": element("00080104", code.code_meaning)}


def _sequence(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"vr": "SQ", "Value": items}


def sequences_model(item: WorklistItem) -> dict[str, Any]:
    """The item's sequences as DICOM JSON, shaped as in a worklist response:
    ReferencedStudySequence, RequestedProcedureCodeSequence, and the one
    ScheduledProcedureStepSequence item holding ScheduledProtocolCodeSequence."""
    model: dict[str, Any] = {}
    if item.other_patient_ids:
        model[OTHER_PATIENT_IDS] = _sequence([
            {"00100020": element("00100020", other.patient_id),
             "00100021": element("00100021", other.issuer_of_patient_id)}
            for other in item.other_patient_ids])
    if item.referenced_studies:
        model[REFERENCED_STUDIES] = _sequence([
            {"00081150": element("00081150", ref.sop_class_uid),
             "00081155": element("00081155", ref.sop_instance_uid)}
            for ref in item.referenced_studies])
    if item.requested_procedure_codes:
        model[REQUESTED_PROCEDURE_CODES] = _sequence(
            [_code_json(c) for c in item.requested_procedure_codes])
    if item.scheduled_protocol_codes:
        model[SPS_SEQUENCE] = _sequence([{SCHEDULED_PROTOCOL_CODES: _sequence(
            [_code_json(c) for c in item.scheduled_protocol_codes])}])
    return model


def _text(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


def _codes(sequence: dict[str, Any] | None) -> tuple[Code, ...]:
    return tuple(Code(_text(i, "00080100"), _text(i, "00080102"), _text(i, "00080104"))
                 for i in (sequence or {}).get("Value", []))


def _condition(match: Match) -> ColumnElement[bool] | None:
    if match.key == PATIENT_NAME:
        # PS3.4 C.2.2.2.1: PN matching is case-insensitive here, as in C-FIND.
        values = match.values if match.kind == "list" else match.values[:1]
        column = ScheduledProcedureStep.patient_name_lower
        value = lower_name(values[0]) if values else ""
        if "*" in value or "?" in value:
            return column.like(like_pattern(value), escape="\\")
        return column == value
    other = _COLUMNS.get(match.key)
    return value_condition(other, match) if other is not None else None


def _item(row: ScheduledProcedureStep) -> WorklistItem:
    model = json.loads(row.sequences_json or "{}")
    steps = (model.get(SPS_SEQUENCE) or {}).get("Value") or [{}]
    return WorklistItem(
        **{name: getattr(row, name) for name in COLUMN_FIELDS},
        referenced_studies=tuple(
            ReferencedStudy(_text(i, "00081155"), _text(i, "00081150"))
            for i in (model.get(REFERENCED_STUDIES) or {}).get("Value", [])),
        requested_procedure_codes=_codes(model.get(REQUESTED_PROCEDURE_CODES)),
        scheduled_protocol_codes=_codes(steps[0].get(SCHEDULED_PROTOCOL_CODES)),
        other_patient_ids=tuple(
            OtherPatientID(_text(i, "00100020"), _text(i, "00100021"))
            for i in (model.get(OTHER_PATIENT_IDS) or {}).get("Value", [])),
    )
