"""Patient reconciliation: correct a patient's demographics, merge two patient records.

Stored bytes are never rewritten. A correction changes the index (the patient row and
each affected instance's stored DICOM JSON) and flags every instance whose blob holds
other patient attributes (`Instance.stored_patient`, the values as stored); such an
instance is served with the patient row's values patched into its header
(`Archive.read_instance`/`open_instance`/`serve_instance`, `dicom/patient_header.py`).
So C-FIND, QIDO-RS, FHIR and the viewer (index columns), WADO-RS metadata (stored JSON)
and every retrieve (C-GET, C-MOVE, WADO-RS, WADO-URI: the patched header) agree.

The values before and after each change are kept in `patient_corrections`: a history
per patient for admins. A merge keeps the source key as an alias of the target, so an
instance arriving later with the old PatientID is filed under the target and served
with the target's attributes (`index/upsert.py`). A corrected patient's demographics are
no longer overwritten by arriving instances (`Patient.reconciled`).

Everything here runs in the caller's transaction; `Archive` checks the principal and
writes the audit events in that same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from minipacs.access import restricted
from minipacs.dicom.json_model import dumps
from minipacs.dicom.names import fold_text, lower_name
from minipacs.dicom.patient_header import overlay_json, values_of_json
from minipacs.errors import InvalidRequest, NotFound
from minipacs.index.models import (
    Instance,
    Patient,
    PatientAlias,
    PatientCorrection,
    RestrictedPatient,
    Series,
    Study,
)
from minipacs.index.sequences import accumulate
from minipacs.index.upsert import patient_values

PatientKey = tuple[str, str]  # (PatientID, IssuerOfPatientID or "")

# What `update_patient` may change (PS3.3 C.7.1.1). PatientID and its issuer are keys:
# changing them is a merge into the right patient (create it by storing, or merge).
CORRECTABLE = ("PatientName", "PatientBirthDate", "PatientSex")
_SEXES = ("M", "F", "O", "")  # PS3.3 C.7.1.1: Patient's Sex, enumerated values


@dataclass(frozen=True)
class Reconciliation:
    """What one update or merge did: the patient (after), values before and after, the
    studies concerned and how many instances are now served corrected."""

    kind: str  # "update" | "merge"
    patient_id: str
    issuer_of_patient_id: str
    before: dict[str, Any]
    after: dict[str, str]
    study_uids: tuple[str, ...]
    instances_corrected: int
    source_patient_id: str = ""
    source_issuer_of_patient_id: str = ""
    restriction_carried: bool = False


@dataclass(frozen=True)
class Correction:
    """One entry of a patient's history (`history`)."""

    at: datetime
    kind: str
    patient_id: str
    issuer_of_patient_id: str
    source_patient_id: str
    source_issuer_of_patient_id: str
    actor: str
    reason: str
    before: dict[str, Any]
    after: dict[str, Any]
    study_uids: tuple[str, ...] = field(default=())


def describe(key: PatientKey) -> str:
    return f"patient {key[0]!r} (issuer {key[1] or 'none'})"


def checked_changes(changes: Mapping[str, str]) -> dict[str, str]:
    """The changes, validated: known keywords, DICOM-valid values. Raises `InvalidRequest`
    naming the keyword, the value and what is expected."""
    if not changes:
        raise InvalidRequest(f"no changes given; correctable: {', '.join(CORRECTABLE)}")
    out: dict[str, str] = {}
    for keyword, raw in changes.items():
        if keyword not in CORRECTABLE:
            raise InvalidRequest(f"{keyword!r} cannot be corrected here; correctable: "
                                 f"{', '.join(CORRECTABLE)} (to change a PatientID, merge)")
        if not isinstance(raw, str):
            raise InvalidRequest(f"{keyword}: {raw!r} is not text")
        value = raw.strip()
        if keyword == "PatientName":
            groups = value.split("=")
            # PS3.5 6.2: PN, at most 64 characters per component group, no backslash
            if "\\" in value or len(groups) > 3 or any(len(g) > 64 for g in groups):
                raise InvalidRequest(f"PatientName {value!r} is not a DICOM person name "
                                     "(Family^Given^Middle^Prefix^Suffix, at most 64 "
                                     "characters per group, no backslash)")
        elif keyword == "PatientBirthDate" and value:
            try:
                date(int(value[:4]), int(value[4:6]), int(value[6:8]))
                ok = len(value) == 8 and value.isdigit()
            except ValueError:
                ok = False
            if not ok:
                raise InvalidRequest(f"PatientBirthDate {value!r} is not a date YYYYMMDD")
        elif keyword == "PatientSex" and value.upper() not in _SEXES:
            raise InvalidRequest(f"PatientSex {value!r} must be M, F or O (or empty)")
        out[keyword] = value.upper() if keyword == "PatientSex" else value
    return out


def find_patient(session: Session, key: PatientKey) -> Patient:
    """The patient row for a key; `NotFound` (saying so when it was merged away)."""
    patient = session.scalars(select(Patient).where(
        Patient.patient_id == key[0], Patient.issuer_of_patient_id == key[1])).one_or_none()
    if patient is not None:
        return patient
    target = session.scalar(select(Patient).join(
        PatientAlias, PatientAlias.patient_pk == Patient.id).where(
        PatientAlias.patient_id == key[0], PatientAlias.issuer == key[1]))
    if target is not None:
        raise NotFound(f"{describe(key)} was merged into "
                       f"{describe((target.patient_id, target.issuer_of_patient_id))}")
    raise NotFound(f"{describe(key)} is not in the archive")


def update_patient(session: Session, key: PatientKey, changes: Mapping[str, str],
                   reason: str, actor: str) -> Reconciliation:
    """Correct a patient's demographics (PatientName, PatientBirthDate, PatientSex)."""
    values = checked_changes(changes)
    _require_reason(reason)
    patient = find_patient(session, key)
    before = patient_values(patient)
    if "PatientName" in values:
        patient.patient_name = values["PatientName"]
        patient.patient_name_lower = lower_name(values["PatientName"])
        patient.patient_name_folded = fold_text(values["PatientName"])
    if "PatientBirthDate" in values:
        patient.patient_birth_date = values["PatientBirthDate"]
    if "PatientSex" in values:
        patient.patient_sex = values["PatientSex"]
    patient.reconciled = True
    after = patient_values(patient)
    studies = list(session.scalars(select(Study).where(Study.patient_pk == patient.id)))
    corrected = _serve_corrected(session, [s.id for s in studies], after)
    uids = tuple(s.study_instance_uid for s in studies)
    session.add(PatientCorrection(
        kind="update", patient_id=key[0], issuer=key[1], actor=actor, reason=reason,
        before_json=_json(before), after_json=_json(after), study_uids=" ".join(uids)))
    return Reconciliation("update", key[0], key[1], before, after, uids, corrected)


def merge_patients(session: Session, source: PatientKey, target: PatientKey, reason: str,
                   actor: str) -> Reconciliation:
    """Every study of `source` becomes `target`'s; `source` becomes an alias of `target`.

    Raises `InvalidRequest` for a merge into itself or without a reason, `NotFound` for
    an unknown patient. A restricted source makes the target restricted (its studies
    must not become readable without a reason by moving)."""
    if source == target:
        raise InvalidRequest(f"cannot merge {describe(source)} into itself")
    _require_reason(reason)
    src, dst = find_patient(session, source), find_patient(session, target)
    before = {"source": patient_values(src), "target": patient_values(dst)}
    studies = list(session.scalars(select(Study).where(Study.patient_pk == src.id)))
    for study in studies:
        study.patient_pk = dst.id
    known = [x for x in f"{dst.other_patient_ids}|{src.other_patient_ids}".split("|") if x]
    merged = list(dict.fromkeys(known))
    dst.other_patient_ids = ("|" + "|".join(merged) + "|") if merged else ""
    if src.sequences_json is not None:
        dst.sequences_json = (src.sequences_json if dst.sequences_json is None
                              else accumulate(dst.sequences_json, src.sequences_json))
    carried = _carry_restriction(session, source, target, reason, actor)
    session.flush()
    # Earlier merges into the source now lead to the target, then the source itself.
    session.execute(update(PatientAlias).where(PatientAlias.patient_pk == src.id)
                    .values(patient_pk=dst.id))
    session.delete(src)
    session.flush()
    session.add(PatientAlias(patient_id=source[0], issuer=source[1], patient_pk=dst.id))
    after = patient_values(dst)
    corrected = _serve_corrected(session, [s.id for s in studies], after)
    uids = tuple(s.study_instance_uid for s in studies)
    session.add(PatientCorrection(
        kind="merge", patient_id=target[0], issuer=target[1], source_patient_id=source[0],
        source_issuer=source[1], actor=actor, reason=reason, before_json=_json(before),
        after_json=_json(after), study_uids=" ".join(uids)))
    return Reconciliation("merge", target[0], target[1], before, after, uids, corrected,
                          source[0], source[1], carried)


def history(session: Session, key: PatientKey) -> list[Correction]:
    """Every correction of the patient, or merge from or into it, oldest first."""
    rows = session.scalars(select(PatientCorrection).where(or_(
        (PatientCorrection.patient_id == key[0]) & (PatientCorrection.issuer == key[1]),
        (PatientCorrection.source_patient_id == key[0])
        & (PatientCorrection.source_issuer == key[1]),
    )).order_by(PatientCorrection.id))
    return [Correction(r.at, r.kind, r.patient_id, r.issuer, r.source_patient_id,
                       r.source_issuer, r.actor, r.reason, json.loads(r.before_json),
                       json.loads(r.after_json), tuple(r.study_uids.split()))
            for r in rows]


def _serve_corrected(session: Session, study_pks: list[int], values: dict[str, str]) -> int:
    """Put `values` into the stored JSON of every instance of the studies, and flag those
    whose blob holds other values (served patched). Returns how many are flagged."""
    if not study_pks:
        return 0
    flagged = 0
    stmt = (select(Instance).join(Series, Instance.series_pk == Series.id)
            .where(Series.study_pk.in_(study_pks)).execution_options(yield_per=500))
    for instance in session.scalars(stmt):
        model = json.loads(instance.metadata_json)
        stored = (json.loads(instance.stored_patient) if instance.stored_patient is not None
                  else values_of_json(model))  # JSON not yet corrected: as the blob has it
        instance.stored_patient = None if stored == values else _json(stored)
        flagged += instance.stored_patient is not None
        instance.metadata_json = dumps(overlay_json(model, values))
    return flagged


def _carry_restriction(session: Session, source: PatientKey, target: PatientKey,
                       reason: str, actor: str) -> bool:
    def is_restricted(key: PatientKey) -> bool:
        return session.scalar(select(RestrictedPatient.id).where(
            RestrictedPatient.patient_id == key[0], RestrictedPatient.issuer == key[1])
        ) is not None

    if is_restricted(source) and not is_restricted(target):
        restricted.restrict(session, target[0], target[1],
                            f"merged from restricted {describe(source)}: {reason}", actor)
        return True
    return False


def _require_reason(reason: str) -> None:
    if not reason.strip():
        raise InvalidRequest("a patient correction needs a reason (kept in its history "
                             "and the audit trail)")


def _json(values: Mapping[str, Any]) -> str:
    return json.dumps(values, ensure_ascii=False, sort_keys=True)
