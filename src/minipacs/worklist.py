"""The Modality Worklist: scheduled procedure steps that modalities query (PS3.4 Annex K).

Items are created, updated and cancelled by the admin API and the CLI (later by the EMR
order flow); the worklist C-FIND SCP reads them through `Worklist.find`, which shares
the matching rules (`Filter`, `value_condition`) with C-FIND and QIDO-RS.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy import ColumnElement, Engine, select
from sqlalchemy.orm import Session, sessionmaker

from minipacs.ae_registry import check_ae_title
from minipacs.dicom.matching import Filter, Match, like_pattern
from minipacs.dicom.names import lower_name
from minipacs.dicom.uids import is_safe_uid
from minipacs.errors import InvalidRequest, NotFound
from minipacs.index.database import create_schema, session_factory
from minipacs.index.models import ScheduledProcedureStep
from minipacs.index.query import value_condition

log = logging.getLogger(__name__)

SCHEDULED = "SCHEDULED"
CANCELLED = "CANCELLED"
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

    def as_json(self) -> dict[str, str]:
        return asdict(self)


ITEM_FIELDS = tuple(f.name for f in fields(WorklistItem))


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
    if item.status not in (SCHEDULED, CANCELLED):
        problems.append(f"status {item.status!r} must be {SCHEDULED} or {CANCELLED}")
    for name, limit in (("scheduled_procedure_step_id", 16), ("accession_number", 16),
                        ("requested_procedure_id", 16), ("modality", 16)):
        if len(getattr(item, name)) > limit:
            problems.append(f"{name} is longer than {limit} characters")
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
            row = session.scalars(
                select(ScheduledProcedureStep).where(
                    ScheduledProcedureStep.scheduled_procedure_step_id
                    == item.scheduled_procedure_step_id)
            ).one_or_none()
            if row is None:
                row = ScheduledProcedureStep()
                session.add(row)
            for name in ITEM_FIELDS:
                setattr(row, name, getattr(item, name))
            row.patient_name_lower = lower_name(item.patient_name)
        log.info("worklist item %s %s for patient %s on %s", item.scheduled_procedure_step_id,
                 item.status, item.patient_id, item.scheduled_station_ae_title or "any station")
        return item

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

    def find(self, filt: Filter, *, limit: int) -> tuple[list[WorklistItem], list[str]]:
        """Scheduled (not cancelled) items matching `filt`, at most `limit`, and the
        keywords whose values were ignored because matching on them is not supported."""
        stmt = select(ScheduledProcedureStep).where(
            ScheduledProcedureStep.status != CANCELLED)
        ignored = []
        for match in filt.active():
            condition = _condition(match)
            if condition is None:
                ignored.append(match.keyword)
            else:
                stmt = stmt.where(condition)
        stmt = stmt.order_by(ScheduledProcedureStep.scheduled_start_date,
                             ScheduledProcedureStep.scheduled_start_time,
                             ScheduledProcedureStep.id).limit(limit)
        with self._read() as session:
            return [_item(row) for row in session.scalars(stmt)], ignored


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
    return WorklistItem(**{name: getattr(row, name) for name in ITEM_FIELDS})
