"""Arriving images complete their order: the link made inside the ingest transaction.

`link_arriving_instance` runs in `Archive._index_instance`'s transaction, so the order
changes (and its audit event) commit with the instance's rows or not at all. Cost on the
ingest path: one indexed EXISTS (accession number or Study Instance UID, both indexed on
`scheduled_procedure_steps`; `order_pending`, asked inside ingest's one lookup
statement); a write only when an order changes, i.e. once per study.

Same accession (or study) but another patient is never linked: the order is flagged
for reconciliation (`reconciliation`), shown to admins (GET /admin/orders/reconciliation)
and on the order, and audited.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, or_, select
from sqlalchemy.orm import Session

from minipacs.audit.chain import AuditRecord, append
from minipacs.dicom.header import InstanceAttributes
from minipacs.index.models import ScheduledProcedureStep as Step
from minipacs.worklist import CANCELLED, COMPLETED, IN_PROGRESS, SCHEDULED

log = logging.getLogger(__name__)

_MAX_ORDERS = 16  # steps of one accession we look at (an order has a few at most)


def same_patient(step: Step, a: InstanceAttributes) -> bool:
    """Is the instance's patient the order's? Same PatientID (issuers equal when both
    are given), or the order names the patient by a national ID the instance carries
    among its other patient IDs."""
    if step.patient_id == a.patient_id:
        return (not step.issuer_of_patient_id or not a.issuer_of_patient_id
                or step.issuer_of_patient_id == a.issuer_of_patient_id)
    return step.patient_id in a.other_patient_ids


def link_arriving_instance(session: Session, a: InstanceAttributes, *, pending: bool,
                           actor: str = "", role: str = "", source: str = "") -> None:
    """Link the instance's study to the orders with its accession number or its Study
    Instance UID, completing those still to be done; flag a different patient.
    `pending`: the value of `order_pending` read earlier in this transaction (ingest
    reads it with the instance's other lookups, `index.upsert.indexed_rows`)."""
    # The common case: no order left to link (none for this study, or all linked to it
    # by an earlier instance), known without a statement of its own.
    if not pending:
        return
    match = [Step.study_instance_uid == a.study_instance_uid]
    if a.accession_number:
        match.append(Step.accession_number == a.accession_number)
    steps = session.scalars(select(Step).where(or_(*match), Step.status != CANCELLED)
                            .order_by(Step.id).limit(_MAX_ORDERS)).all()
    for step in steps:
        if step.performed_study_uid == a.study_instance_uid:
            continue  # linked by an earlier instance of this study: the common case
        if not same_patient(step, a) or step.performed_study_uid:
            _flag(session, step, a, actor, role, source)
            continue
        step.performed_study_uid = a.study_instance_uid
        completed = step.status in (SCHEDULED, IN_PROGRESS)
        if completed:
            step.status = COMPLETED
        step.version += 1
        append(session, AuditRecord(
            "order-status", actor, role, source, step.patient_id, a.study_instance_uid,
            detail=f"order {step.scheduled_procedure_step_id} (accession "
                   f"{step.accession_number or '-'}) linked to arriving study "
                   f"{a.study_instance_uid}" + (", completed" if completed else "")))
        log.info("order %s linked to study %s%s", step.scheduled_procedure_step_id,
                 a.study_instance_uid, " and completed" if completed else "")


def _pending(*match: Any) -> Select[Any]:
    """An order with these keys that an arriving instance of the study may change: not
    cancelled and not linked to this study yet (the loop above skips those)."""
    return (select(Step.id).where(or_(*match), Step.status != CANCELLED,
                                  Step.performed_study_uid != bindparam("study"))
            .limit(1))


_PENDING_BY_STUDY = _pending(Step.study_instance_uid == bindparam("study"))
_PENDING_BY_ACCESSION = _pending(Step.study_instance_uid == bindparam("study"),
                                 Step.accession_number == bindparam("accession"))


def order_pending(by_accession: bool) -> ColumnElement[bool]:
    """Whether `link_arriving_instance` has an order to look at, as a column for a
    statement with the bound parameters "study" and "accession" (`by_accession`: the
    instance has an Accession Number)."""
    return (_PENDING_BY_ACCESSION if by_accession else _PENDING_BY_STUDY).exists().label(
        "order_pending")


def _flag(session: Session, step: Step, a: InstanceAttributes, actor: str, role: str,
          source: str) -> None:
    if a.study_instance_uid in step.reconciliation:
        return  # already flagged for this study
    if step.performed_study_uid:
        why = (f"study {a.study_instance_uid} also arrived with accession "
               f"{a.accession_number or '-'}; the order is already linked to study "
               f"{step.performed_study_uid}")
    else:
        why = (f"study {a.study_instance_uid} arrived with accession "
               f"{a.accession_number or '-'} for patient {a.patient_id!r}"
               f"{' (' + a.issuer_of_patient_id + ')' if a.issuer_of_patient_id else ''}"
               f", but the order is for patient {step.patient_id!r}; not linked")
    step.reconciliation = "; ".join(t for t in (step.reconciliation, why) if t)
    step.version += 1
    append(session, AuditRecord("order-mismatch", actor, role, source, step.patient_id,
                                a.study_instance_uid, detail=why))
    log.warning("order %s needs reconciling: %s", step.scheduled_procedure_step_id, why)
