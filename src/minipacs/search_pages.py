"""A page of patients or studies with its total, for searches that page by offset and
report how many matched (the FHIR door's searchset Bundles).

Called by `Archive.search_page` inside its read session; the matching is the one
`index.query.compile_query` does for C-FIND and QIDO-RS, plus a few `RecordConditions`
on index facts a DICOM identifier cannot say (an exact patient key, "this value as any
of the patient's identifiers", the row's last update). Results come from index columns
and stored JSON, never from blobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, exists, func, or_, select
from sqlalchemy.orm import Session

from minipacs.dicom.matching import Filter, like_pattern
from minipacs.index.models import Instance, Patient, Series, Study
from minipacs.index.query import compile_query
from minipacs.index.sequences import matching_rows
from minipacs.query_results import (
    instance_matches,
    patient_matches,
    series_matches,
    study_matches,
)

PageLevel = Literal["PATIENT", "STUDY"]
# With keys on sequence items the total is counted while streaming rows: up to this many.
MAX_COUNTED = 10_000
_OTHER_IDS = "00101002"  # OtherPatientIDsSequence: every identifier a patient has
_PROCEDURE_CODES = "00081032"  # ProcedureCodeSequence, kept by the study row


@dataclass(frozen=True)
class RecordConditions:
    """Conditions beyond a DICOM `Filter`, all of which must hold.

    `patient_key`: exactly this (PatientID, IssuerOfPatientID), an empty issuer meaning
    none (a DICOM key with an empty value would match any). `any_patient_id`: the value
    is the PatientID or one of the patient's other IDs. `updated_from` (inclusive) and
    `updated_before` (exclusive): when the study row last changed (UTC).
    `matches_nothing`: a criterion the caller knows no record can meet."""

    patient_key: tuple[str, str] | None = None
    any_patient_id: str | None = None
    updated_from: datetime | None = None
    updated_before: datetime | None = None
    matches_nothing: bool = False

    def describe(self) -> str:
        """The conditions given, as `name=value` text for the audit trail."""
        return " ".join(f"{name}={value}" for name, value in vars(self).items()
                        if value not in (None, False))


@dataclass(frozen=True)
class SearchPage:
    """`matches`: patients or studies as DICOM JSON (with OtherPatientIDsSequence and,
    for studies, ProcedureCodeSequence). For studies, `series` (by Study Instance UID)
    and `instances` (by Series Instance UID) as the SERIES and IMAGE levels return them,
    and `last_updated` (by Study Instance UID). `total`: how many matched in all (at most
    `MAX_COUNTED` when keys on sequence items had to be checked row by row)."""

    matches: list[dict[str, Any]]
    total: int
    series: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    instances: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    last_updated: dict[str, datetime] = field(default_factory=dict)


def _conditions(conditions: RecordConditions, level: PageLevel) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if conditions.patient_key is not None:
        patient_id, issuer = conditions.patient_key
        out += [Patient.patient_id == patient_id, Patient.issuer_of_patient_id == issuer]
    if conditions.any_patient_id is not None:
        value = conditions.any_patient_id
        out.append(or_(Patient.patient_id == value,
                       Patient.other_patient_ids.like(f"%|{like_pattern(value)}|%",
                                                      escape="\\")))
    if level == "STUDY" and conditions.updated_from is not None:
        out.append(or_(Study.updated_at >= conditions.updated_from,
                       exists(_instances_since(conditions.updated_from))))
    if level == "STUDY" and conditions.updated_before is not None:
        out += [Study.updated_at < conditions.updated_before,
                ~exists(_instances_since(conditions.updated_before))]
    return out


def _instances_since(moment: datetime) -> Any:
    """The study's instances that arrived at or after `moment` (correlated subquery)."""
    return (select(Instance.id).join(Series, Instance.series_pk == Series.id)
            .where(Series.study_pk == Study.id, Instance.created_at >= moment))


def _last_updated(session: Session, rows: Sequence[Any]) -> dict[str, datetime]:
    """Per study: the later of its row's last change and its newest instance's arrival."""
    studies = {row[0].id: row[0] for row in rows}
    if not studies:
        return {}
    newest = dict(session.execute(
        select(Series.study_pk, func.max(Instance.created_at))
        .join(Instance, Instance.series_pk == Series.id)
        .where(Series.study_pk.in_(list(studies))).group_by(Series.study_pk)).tuples().all())
    return {study.study_instance_uid: max(t for t in (study.updated_at, newest.get(pk)) if t)
            for pk, study in studies.items()}


def search_page(session: Session, level: PageLevel, filt: Filter,
                conditions: RecordConditions, *, limit: int, offset: int,
                visible_tags: frozenset[str] | None = None) -> SearchPage:
    """The `limit` matches after `offset` (query order: patients by name, studies newest
    first), the total, and for studies their series and instances; only what a principal
    limited to `visible_tags` may see (None: everything)."""
    if conditions.matches_nothing:
        return SearchPage([], 0)
    query = compile_query(level, filt, visible_tags)
    statement = query.statement.where(*_conditions(conditions, level))
    rows: Sequence[Any]
    if query.sequence_keys:
        every = matching_rows(session, statement, level, query.sequence_keys,
                              limit=MAX_COUNTED, offset=0)
        total, rows = len(every), every[offset:offset + limit]
    else:
        total = session.scalar(
            select(func.count()).select_from(statement.order_by(None).subquery())) or 0
        rows = session.execute(statement.limit(limit).offset(offset)).all() if limit else []
    if level == "PATIENT":
        return SearchPage(patient_matches(session, [r[0] for r in rows], [_OTHER_IDS],
                                          visible_tags), total)
    studies = study_matches(session, rows, [_OTHER_IDS, _PROCEDURE_CODES])
    study_ids = [row[0].id for row in rows]
    series_rows = session.execute(
        select(Series, Study, Patient)
        .join(Study, Series.study_pk == Study.id)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(Series.study_pk.in_(study_ids))
        .order_by(Study.id, Series.series_number, Series.id)).all() if study_ids else []
    series: dict[str, list[dict[str, Any]]] = {}
    for model in series_matches(session, series_rows, ()):
        series.setdefault(model["0020000D"]["Value"][0], []).append(model)
    instance_rows = session.execute(
        select(Instance, Series, Study, Patient)
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(Series.study_pk.in_(study_ids))
        .order_by(Series.id, Instance.instance_number, Instance.id)).all() if study_ids else []
    instances: dict[str, list[dict[str, Any]]] = {}
    for model in instance_matches(instance_rows, ()):
        instances.setdefault(model["0020000E"]["Value"][0], []).append(model)
    return SearchPage(studies, total, series, instances, _last_updated(session, rows))
