"""Restricted (VIP, staff, sensitive) patients and break-the-glass access (issue #11).

A patient, keyed by (PatientID, IssuerOfPatientID), may be flagged restricted by an admin.
Reading any of that patient's studies then needs, from anyone but an admin, a stated reason
(HTTP header `X-Break-Glass-Reason`, carried as `Principal.break_glass_reason`); the read is
audited as a `break-glass` event. A DICOM AE cannot state a reason, so its retrieves of a
restricted patient are refused.

Cost: the set of restricted studies is cached per node for `ttl` seconds, so the check adds
no query per frame; a new restriction takes effect on every node within `ttl` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from minipacs.access.principal import Principal
from minipacs.access.roles import Role
from minipacs.audit.chain import AuditRecord, append
from minipacs.errors import Forbidden, InvalidRequest
from minipacs.index.models import Patient, RestrictedPatient, Study

BREAK_GLASS_HEADER = "X-Break-Glass-Reason"


@dataclass(frozen=True)
class RestrictedKey:
    """A restricted patient as the index keys them."""

    patient_id: str
    issuer: str

    def describe(self) -> str:
        return self.patient_id + (f" (issuer {self.issuer})" if self.issuer else "")


class RestrictedStudies:
    """Study UID -> restricted patient, reloaded at most every `ttl` seconds."""

    def __init__(self, sessions: Callable[[], Session], ttl: float = 5.0) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._lock = threading.Lock()
        self._loaded_at = float("-inf")
        self._by_study: dict[str, RestrictedKey] = {}

    def invalidate(self) -> None:
        """Forget the cache (this node just changed a restriction)."""
        with self._lock:
            self._loaded_at = float("-inf")

    def patient_of(self, study_uid: str) -> RestrictedKey | None:
        """The restricted patient `study_uid` belongs to, or None when unrestricted."""
        now = time.monotonic()
        with self._lock:
            if now - self._loaded_at > self._ttl:
                self._by_study = self._load()
                self._loaded_at = now
            return self._by_study.get(study_uid)

    def _load(self) -> dict[str, RestrictedKey]:
        stmt = (
            select(Study.study_instance_uid, Patient.patient_id, Patient.issuer_of_patient_id)
            .join(Patient, Study.patient_pk == Patient.id)
            .join(RestrictedPatient, (RestrictedPatient.patient_id == Patient.patient_id)
                  & (RestrictedPatient.issuer == Patient.issuer_of_patient_id))
        )
        with self._sessions() as session:
            return {uid: RestrictedKey(pid, issuer or "")
                    for uid, pid, issuer in session.execute(stmt)}


def require_reason(principal: Principal, key: RestrictedKey, study_uid: str) -> str | None:
    """None when `principal` may read without a reason (admins, the system); the reason it
    gave otherwise; raises `Forbidden` explaining how to give one when it gave none."""
    if principal.role is Role.ADMIN:
        return None
    if principal.kind == "ae":
        raise Forbidden(f"study {study_uid} belongs to restricted patient {key.describe()}: "
                        "DICOM retrieves of restricted patients are refused (a calling AE "
                        "cannot give a break-the-glass reason); open it over DICOMweb with "
                        f"an {BREAK_GLASS_HEADER} header")
    if not principal.break_glass_reason:
        raise Forbidden(f"study {study_uid} belongs to restricted patient {key.describe()}: "
                        f"state why you open it in an {BREAK_GLASS_HEADER} header "
                        "(break the glass; the reason is audited)")
    return principal.break_glass_reason


@dataclass(frozen=True)
class Restriction:
    """One restricted patient as listed to an admin."""

    patient_id: str
    issuer: str
    reason: str
    restricted_by: str
    at: object


def restrict(session: Session, patient_id: str, issuer: str, reason: str,
             actor: str) -> bool:
    """Flag the patient restricted inside the caller's transaction, audited; False when it
    already was (the reason is then updated)."""
    if not patient_id.strip():
        raise InvalidRequest("a PatientID is needed to restrict a patient")
    if not reason.strip():
        raise InvalidRequest("restricting a patient needs a reason (VIP, staff member, ...)")
    row = session.scalars(select(RestrictedPatient).where(
        RestrictedPatient.patient_id == patient_id,
        RestrictedPatient.issuer == issuer)).one_or_none()
    created = row is None
    if row is None:
        row = RestrictedPatient(patient_id=patient_id, issuer=issuer)
        session.add(row)
    row.reason, row.restricted_by = reason, actor
    append(session, AuditRecord("patient-restrict", actor, "admin", "", patient_id,
                                detail=f"issuer {issuer or '(none)'}: {reason}"))
    return created


def unrestrict(session: Session, patient_id: str, issuer: str, actor: str) -> bool:
    """Lift the restriction, audited; False when the patient was not restricted."""
    row = session.scalars(select(RestrictedPatient).where(
        RestrictedPatient.patient_id == patient_id,
        RestrictedPatient.issuer == issuer)).one_or_none()
    if row is None:
        return False
    session.delete(row)
    append(session, AuditRecord("patient-unrestrict", actor, "admin", "", patient_id,
                                detail=f"issuer {issuer or '(none)'}"))
    return True


def restrictions(session: Session) -> list[Restriction]:
    rows = session.scalars(select(RestrictedPatient).order_by(
        RestrictedPatient.patient_id, RestrictedPatient.issuer))
    return [Restriction(r.patient_id, r.issuer, r.reason, r.restricted_by, r.at)
            for r in rows]
