"""Orders: what the EMR asks the department to do, which *is* the Modality Worklist item
the modality fetches (DESIGN.md, "Orders and the worklist are one thing").

A FHIR ServiceRequest (web/fhir_orders.py), an HL7 ORM/OMI and `minipacs worklist add`
all end up as one row of `scheduled_procedure_steps`. This service adds what an order
has beyond the worklist item: who may place one (the one permission check, action
`manage-worklist`: roles admin, technologist, emr), an audit event in the same
transaction as every change, a version for optimistic concurrency (FHIR ETag/If-Match),
the placer's order number, the study its images arrived as (`order_links`), and the
state a modality reports with MPPS (dimse/mpps_scp.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from minipacs.access.principal import Principal
from minipacs.access.roles import Action
from minipacs.archive import Archive
from minipacs.audit.chain import AuditRecord, append
from minipacs.dicom.matching import Filter
from minipacs.errors import Conflict, InvalidRequest, NotFound, PreconditionFailed
from minipacs.index.models import Patient
from minipacs.index.models import ScheduledProcedureStep as Step
from minipacs.worklist import (
    CANCELLED,
    COMPLETED,
    DISCONTINUED,
    IN_PROGRESS,
    STATUSES,
    Worklist,
    WorklistItem,
    item_of,
    step_row,
    store_item,
    validated,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Order:
    """An order: its worklist item (the item's status is the order's state) and what
    only the order has."""

    item: WorklistItem
    version: int
    placer_order_number: str = ""
    performed_study_uid: str = ""
    performed_procedure_step_uid: str = ""
    reconciliation: str = ""
    updated_at: datetime | None = None

    @property
    def step_id(self) -> str:
        return self.item.scheduled_procedure_step_id


@dataclass(frozen=True)
class KnownPatient:
    """A patient as the index has them (to fill an order's demographics)."""

    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str


def order_of(row: Step) -> Order:
    return Order(item_of(row), row.version, row.placer_order_number,
                 row.performed_study_uid, row.performed_procedure_step_uid,
                 row.reconciliation, row.updated_at)


class Orders:
    """Place, change, cancel, read and search orders for a principal; every change is
    permitted by `Archive.permit` and audited in its own transaction."""

    def __init__(self, archive: Archive, worklist: Worklist) -> None:
        self.archive = archive
        self.worklist = worklist

    # ------------------------------------------------------------------ changes
    def place(self, item: WorklistItem, *, placer_order_number: str = "",
              principal: Principal | None = None) -> Order:
        """A new order (its step ID generated when empty). Raises `Conflict` when the
        step ID is taken, `InvalidRequest` naming what is wrong with the item."""
        return self.place_all([(item, placer_order_number)], principal=principal)[0]

    def place_all(self, orders: list[tuple[WorklistItem, str]], *,
                  principal: Principal | None = None) -> list[Order]:
        """New orders (item, placer order number), all in one transaction or none."""
        principal = self.archive.permit(principal, Action.MANAGE_WORKLIST)
        items = [(validated(item), placer) for item, placer in orders]
        placed = []
        with self._changing() as session:
            for item, placer in items:
                if step_row(session, item.scheduled_procedure_step_id) is not None:
                    raise Conflict(f"order {item.scheduled_procedure_step_id!r} already "
                                   "exists; update it instead")
                row = store_item(session, item)
                row.placer_order_number = placer
                session.flush()
                self._audit(session, principal, "order-create", item,
                            f"order {item.scheduled_procedure_step_id} placed: accession "
                            f"{item.accession_number or '-'}, "
                            f"{item.modality or 'any modality'} on "
                            f"{item.scheduled_station_ae_title or 'any station'}")
                placed.append(order_of(row))
        return placed

    def update(self, step_id: str, item: WorklistItem, *, if_version: int | None = None,
               placer_order_number: str | None = None,
               principal: Principal | None = None) -> Order:
        """Replace order `step_id` with `item` (which may change its status). Raises
        `NotFound`, `PreconditionFailed` when `if_version` is not the current version."""
        principal = self.archive.permit(principal, Action.MANAGE_WORKLIST)
        validated(replace(item, scheduled_procedure_step_id=step_id))  # before any write
        with self._changing() as session:
            row = self._current(session, step_id, if_version)
            before = row.status
            # The modality may already have the Study Instance UID: an update without
            # one keeps it (a new one would split the study from its order).
            item = validated(replace(item, scheduled_procedure_step_id=step_id,
                                     study_instance_uid=item.study_instance_uid
                                     or row.study_instance_uid))
            row = store_item(session, item)
            if placer_order_number is not None:
                row.placer_order_number = placer_order_number
            action = "order-cancel" if item.status == CANCELLED != before else "order-update"
            self._audit(session, principal, action, item,
                        f"order {step_id} version {row.version}: status {before} -> "
                        f"{item.status}")
            return order_of(row)

    def cancel(self, step_id: str, *, if_version: int | None = None,
               principal: Principal | None = None) -> Order:
        """Withdraw an order: its worklist item is no longer offered (kept, CANCELLED)."""
        return self.set_status(step_id, CANCELLED, if_version=if_version,
                               principal=principal)

    def set_status(self, step_id: str, status: str, *, if_version: int | None = None,
                   principal: Principal | None = None) -> Order:
        principal = self.archive.permit(principal, Action.MANAGE_WORKLIST)
        if status not in STATUSES:
            raise InvalidRequest(f"order status {status!r} must be one of "
                                 f"{', '.join(STATUSES)}")
        with self._changing() as session:
            row = self._current(session, step_id, if_version)
            before = row.status
            row.status = status
            row.version += 1
            self._audit(session, principal,
                        "order-cancel" if status == CANCELLED else "order-status",
                        item_of(row), f"order {step_id}: status {before} -> {status}")
            return order_of(row)

    def start_performed_step(self, mpps_uid: str, *, step_ids: list[str],
                             accession_numbers: list[str], study_uids: list[str],
                             principal: Principal | None = None) -> Order:
        """A modality starts a performed procedure step (MPPS N-CREATE, PS3.4 F.7.2.1)
        for the order with one of these step IDs, else accession numbers, else studies:
        the order becomes IN PROGRESS. Raises `Conflict` when the MPPS instance exists,
        `NotFound` when no order matches (unscheduled steps are not tracked), or when
        the order is cancelled or already done."""
        principal = self.archive.permit(principal, Action.STORE)
        with self._changing() as session:
            if self._by_mpps(session, mpps_uid) is not None:
                raise Conflict(f"performed procedure step {mpps_uid} already exists")
            row = None
            for column, values in ((Step.scheduled_procedure_step_id, step_ids),
                                   (Step.accession_number, accession_numbers),
                                   (Step.study_instance_uid, study_uids)):
                wanted = [v for v in values if v]
                if wanted:
                    row = session.scalars(select(Step).where(column.in_(wanted))
                                          .order_by(Step.id).limit(1)).first()
                if row is not None:
                    break
            if row is None:
                raise NotFound("no order has scheduled step "
                               f"{', '.join(step_ids) or '-'}, accession "
                               f"{', '.join(accession_numbers) or '-'} or study "
                               f"{', '.join(study_uids) or '-'}; unscheduled procedure "
                               "steps are not tracked")
            if row.status in (CANCELLED, COMPLETED, DISCONTINUED):
                raise Conflict(f"order {row.scheduled_procedure_step_id} is {row.status}: "
                               "a procedure step cannot start on it")
            return self._performed(session, row, mpps_uid, IN_PROGRESS, principal)

    def end_performed_step(self, mpps_uid: str, status: str, *,
                           principal: Principal | None = None) -> Order:
        """MPPS N-SET (PS3.4 F.7.2.2): IN PROGRESS (attributes only), COMPLETED or
        DISCONTINUED. Raises `NotFound` for an unknown MPPS instance, `Conflict` once it
        is final (COMPLETED or DISCONTINUED: no longer updatable)."""
        principal = self.archive.permit(principal, Action.STORE)
        if status not in (IN_PROGRESS, COMPLETED, DISCONTINUED):
            raise InvalidRequest(f"performed procedure step status {status!r} must be "
                                 "IN PROGRESS, COMPLETED or DISCONTINUED")
        with self._changing() as session:
            row = self._by_mpps(session, mpps_uid)
            if row is None:
                raise NotFound(f"performed procedure step {mpps_uid} does not exist")
            if row.status != IN_PROGRESS:
                raise Conflict(f"performed procedure step {mpps_uid} is {row.status} and "
                               "may no longer be updated")
            return self._performed(session, row, mpps_uid, status, principal)

    def _by_mpps(self, session: Session, mpps_uid: str) -> Step | None:
        return session.scalars(select(Step).where(
            Step.performed_procedure_step_uid == mpps_uid).limit(1)).first()

    def _performed(self, session: Session, row: Step, mpps_uid: str, status: str,
                   principal: Principal) -> Order:
        before = row.status
        row.status = status
        row.performed_procedure_step_uid = mpps_uid
        row.version += 1
        self._audit(session, principal, "order-status", item_of(row),
                    f"order {row.scheduled_procedure_step_id}: performed procedure step "
                    f"{mpps_uid} {status} (was {before})")
        return order_of(row)

    # ------------------------------------------------------------------ reads
    def get(self, step_id: str, *, principal: Principal | None = None) -> Order:
        principal = self.archive.permit(principal, Action.VIEW)
        with self.worklist.reading() as session:
            row = step_row(session, step_id)
            if row is None:
                raise NotFound(f"order {step_id[:80]!r} does not exist")
            order = order_of(row)
        self.archive.audit("order-read", principal.actor, order.item.patient_id,
                           order.performed_study_uid, detail=f"order {step_id}",
                           role=principal.role.value, source=principal.source)
        return order

    def search(self, filt: Filter, *, statuses: tuple[str, ...] = STATUSES, limit: int,
               offset: int = 0, principal: Principal | None = None) -> list[Order]:
        """Orders matching `filt` (worklist matching keys), in schedule order."""
        principal = self.archive.permit(principal, Action.QUERY)
        items, _ignored = self.worklist.find(filt, limit=limit, offset=offset,
                                             statuses=statuses)
        with self.worklist.reading() as session:
            rows = {r.scheduled_procedure_step_id: r for r in session.scalars(
                select(Step).where(Step.scheduled_procedure_step_id.in_(
                    [i.scheduled_procedure_step_id for i in items])))}
            orders = [replace(order_of(rows[i.scheduled_procedure_step_id]), item=i)
                      for i in items if i.scheduled_procedure_step_id in rows]
        patients = sorted({o.item.patient_id for o in orders})
        self.archive.audit("query", principal.actor,
                           patients[0] if len(patients) == 1 else "",
                           detail=f"orders {filt.describe()}: {len(orders)} matches",
                           role=principal.role.value, source=principal.source)
        return orders

    def needing_reconciliation(self, *, principal: Principal | None = None) -> list[Order]:
        """Orders flagged by arriving images of another patient (admins reconcile)."""
        principal = self.archive.permit(principal, Action.MANAGE_WORKLIST)
        with self.worklist.reading() as session:
            orders = [order_of(r) for r in session.scalars(
                select(Step).where(Step.reconciliation != "").order_by(Step.id))]
        self.archive.audit("query", principal.actor,
                           detail=f"orders needing reconciliation: {len(orders)}",
                           role=principal.role.value, source=principal.source)
        return orders

    def orders_of_studies(self, study_uids: list[str]) -> dict[str, list[str]]:
        """Step IDs of the orders each study was performed for (ImagingStudy.basedOn);
        for a read the caller has permitted and audited."""
        if not study_uids:
            return {}
        out: dict[str, list[str]] = {}
        with self.worklist.reading() as session:
            for step_id, study_uid in session.execute(
                    select(Step.scheduled_procedure_step_id, Step.performed_study_uid)
                    .where(Step.performed_study_uid.in_(study_uids)).order_by(Step.id)):
                out.setdefault(study_uid, []).append(step_id)
        return out

    def study_of_order(self, step_id: str) -> str | None:
        """The study an order was performed as (ImagingStudy?basedon=), or None."""
        with self.worklist.reading() as session:
            uid = session.scalar(select(Step.performed_study_uid).where(
                Step.scheduled_procedure_step_id == step_id))
        return uid or None

    def known_patient(self, patient_id: str = "", issuer: str = "", *,
                      other_id: str = "") -> KnownPatient | None:
        """The indexed patient with this key, or carrying `other_id` (a national ID)
        among its other patient IDs; None when none (or several) do."""
        stmt = select(Patient)
        if other_id:
            stmt = stmt.where(Patient.other_patient_ids.like(f"%|{_escaped(other_id)}|%",
                                                             escape="\\"))
        else:
            stmt = stmt.where(Patient.patient_id == patient_id)
            if issuer:  # else: the one patient with this ID whatever its issuer
                stmt = stmt.where(Patient.issuer_of_patient_id == issuer)
        with self.worklist.reading() as session:
            found = session.scalars(stmt.limit(2)).all()
        if len(found) != 1:
            return None
        p = found[0]
        return KnownPatient(p.patient_id, p.issuer_of_patient_id, p.patient_name,
                            p.patient_birth_date, p.patient_sex)

    # ------------------------------------------------------------------ internals
    @contextmanager
    def _changing(self) -> Iterator[Session]:
        with self.worklist.writing() as session:
            yield session

    def _current(self, session: Session, step_id: str, if_version: int | None) -> Step:
        row = step_row(session, step_id)
        if row is None:
            raise NotFound(f"order {step_id[:80]!r} does not exist")
        if if_version is not None and row.version != if_version:
            raise PreconditionFailed(f"order {step_id} is at version {row.version}, not "
                                     f"{if_version}: read it again, then retry")
        return row

    def _audit(self, session: Session, principal: Principal, action: str,
               item: WorklistItem, detail: str) -> None:
        append(session, AuditRecord(action, principal.actor, principal.role.value,
                                    principal.source, item.patient_id,
                                    item.study_instance_uid, detail=detail))
        log.info("%s by %s: %s", action, principal.actor, detail)


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
