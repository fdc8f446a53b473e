"""The FHIR push: each study, once stable, created or updated on the hospital's FHIR
server as Patient + ImagingStudy, retried with exponential backoff until it is there.

Driven by the change feed, from the node's periodic machinery (`run_once`, every
FHIR_PUSH_INTERVAL_SECONDS on every node), and safe with several nodes on one index:

1. *Read the feed.* Under the `fhir_push_cursor` row lock (one reader at a time across
   nodes), changes after the cursor become `fhir_push_studies` rows: the newest change
   seen (`changed_seq`) and when the study becomes stable (that change's time +
   FHIR_PUSH_STABLE_SECONDS: no new instance for that long). The cursor moves in the same
   transaction, so a change is taken exactly once, and kept across restarts.
2. *Push what is due.* A study whose newest change is not yet pushed, stable and past its
   next attempt is claimed with a conditional UPDATE (a lease: it succeeds on one node
   only, and a node that dies mid-push lets the lease run out), pushed, and released
   with the outcome: pushed up to the change it claimed, or the error, one more attempt,
   and the next attempt `retry * 2**(attempts-1)` seconds later (at most `retry_max`).

State lives in the index: failures are visible (`status`, `GET /admin/fhir-push`,
`minipacs fhir-push status`) and retried after restarts. Deleted studies are not pushed
(the server's ImagingStudy is left as it is; see docs/emr-integration.md).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from minipacs.access.principal import Principal, system_principal
from minipacs.access.roles import Action
from minipacs.archive import Archive
from minipacs.audit.chain import utc_now
from minipacs.config import Settings
from minipacs.dicom.matching import Filter
from minipacs.dicom.uids import is_safe_uid
from minipacs.emr.changes import head_seq
from minipacs.emr.fhir_client import FhirPushFailed, FhirServer
from minipacs.emr.models import Change, FhirPushCursor, FhirPushStudy
from minipacs.emr.push_bundle import locations, patient_identifier, push_bundle, study_identifier
from minipacs.emr.report_push import push_reports
from minipacs.errors import InvalidRequest
from minipacs.fhir.resources import endpoints, imaging_study_resource, patient_resource, text
from minipacs.index.database import session_factory
from minipacs.patient_identity import IdentitySystems
from minipacs.search_pages import RecordConditions

log = logging.getLogger(__name__)

STUDY_INSTANCE_UID = "0020000D"
_FEED_BATCH = 500
_DUE_BATCH = 20
_FEED_BATCHES_PER_RUN = 20
PushState = Literal["waiting", "due", "failed", "pushed", "deleted"]


@dataclass(frozen=True)
class PushSettings:
    url: str
    token: str | None
    username: str | None
    password: str | None
    stable: timedelta
    retry: timedelta
    retry_max: timedelta
    timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> PushSettings | None:
        """None when the push is off (no FHIR_PUSH_URL)."""
        if not settings.fhir_push_url:
            return None
        return cls(settings.fhir_push_url, settings.fhir_push_token,
                   settings.fhir_push_username, settings.fhir_push_password,
                   timedelta(seconds=settings.fhir_push_stable_seconds),
                   timedelta(seconds=settings.fhir_push_retry_seconds),
                   timedelta(seconds=settings.fhir_push_retry_max_seconds),
                   settings.fhir_push_timeout_seconds)


@dataclass(frozen=True)
class PushStatus:
    """One study as admins see it."""

    study_instance_uid: str
    patient_id: str
    state: PushState
    changed_seq: int
    pushed_seq: int
    stable_at: datetime
    next_attempt_at: datetime
    attempts: int
    last_error: str
    last_attempt_at: datetime | None
    pushed_at: datetime | None
    remote_patient: str
    remote_imaging_study: str


def state_of(row: FhirPushStudy, now: datetime) -> PushState:
    if row.deleted:
        return "deleted"
    if row.changed_seq <= row.pushed_seq:
        return "pushed"
    if row.attempts > 0:
        return "failed"
    return "due" if row.stable_at <= now else "waiting"


def _due_conditions(now: datetime) -> list[ColumnElement[bool]]:
    """A study to push now: a change not pushed, stable, past its next attempt, free."""
    return [FhirPushStudy.changed_seq > FhirPushStudy.pushed_seq,
            FhirPushStudy.deleted.is_(False), FhirPushStudy.stable_at <= now,
            FhirPushStudy.next_attempt_at <= now,
            or_(FhirPushStudy.lease_until.is_(None), FhirPushStudy.lease_until < now)]


class FhirPushQueue:
    """The push's state in the index: what admins see and retry. Works with the push
    off too (the CLI on a node that does not push still shows what is left)."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._read: sessionmaker[Session] = session_factory(archive.engine)
        self._write: sessionmaker[Session] = session_factory(archive.write_engine)

    def status(self, states: Sequence[PushState] = ("waiting", "due", "failed"), *,
               principal: Principal | None = None, limit: int = 1000) -> list[PushStatus]:
        """Studies in `states`, oldest change first (admins: manage-aes, the right to
        manage the archive's peers)."""
        self.archive.permit(principal, Action.MANAGE_AES)
        now = utc_now()
        with self._read() as session:
            rows = session.scalars(select(FhirPushStudy).order_by(FhirPushStudy.changed_seq)
                                   ).all()
        out = [PushStatus(r.study_instance_uid, r.patient_id, state_of(r, now),
                          r.changed_seq, r.pushed_seq, r.stable_at, r.next_attempt_at,
                          r.attempts, r.last_error, r.last_attempt_at, r.pushed_at,
                          r.remote_patient, r.remote_imaging_study)
               for r in rows if state_of(r, now) in states]
        return out[:limit]

    def retry(self, study_instance_uid: str | None = None, *,
              principal: Principal | None = None) -> int:
        """Push again at the next run: every failed study, or one study (queued even
        when it was pushed already, or never seen, e.g. stored before the push was on).
        Returns how many studies were queued."""
        principal = self.archive.permit(principal, Action.MANAGE_AES)
        now = utc_now()
        with self._write() as session, session.begin():
            if study_instance_uid is None:
                result = session.execute(
                    update(FhirPushStudy)
                    .where(FhirPushStudy.attempts > 0, FhirPushStudy.deleted.is_(False),
                           FhirPushStudy.changed_seq > FhirPushStudy.pushed_seq)
                    .values(next_attempt_at=now))
                count = int(getattr(result, "rowcount", 0))
            else:
                if not is_safe_uid(study_instance_uid):
                    raise InvalidRequest(f"{study_instance_uid[:80]!r} is not a valid "
                                         "Study Instance UID")
                row = session.get(FhirPushStudy, study_instance_uid)
                seq = head_seq(session)
                if row is None:
                    row = FhirPushStudy(study_instance_uid=study_instance_uid,
                                        patient_id="", pushed_seq=0, attempts=0,
                                        last_error="", deleted=False, remote_patient="",
                                        remote_imaging_study="", lease_owner="")
                    session.add(row)
                row.changed_seq = max(row.changed_seq or 0, row.pushed_seq + 1, seq)
                row.stable_at = now
                row.next_attempt_at = now
                row.deleted = False
                count = 1
        self.archive.audit("fhir-push-retry", principal.actor,
                           study_instance_uid=study_instance_uid or "",
                           detail=f"{count} studies queued for the FHIR push",
                           role=principal.role.value, source=principal.source)
        return count


class FhirPush(FhirPushQueue):
    """The worker: `run_once` reads new changes, then pushes the studies that are due."""

    def __init__(self, archive: Archive, push: PushSettings, systems: IdentitySystems, *,
                 public_base: str, timezone: str, node: str | None = None) -> None:
        super().__init__(archive)
        self.push = push
        self.systems = systems
        self.public_base = public_base
        self.timezone = timezone
        self.node = (node or f"{socket.gethostname()}:{id(self):x}")[:64]
        self.lease = timedelta(seconds=push.timeout * 4 + 30)
        # Pushing reads studies as a system principal: every push is an audited view.
        self.pusher = system_principal("fhir-push")
        self.reader = archive.acting_as(self.pusher)
        self.server = FhirServer(push.url, token=push.token, username=push.username,
                                 password=push.password, timeout=push.timeout)
        self.start_cursor()

    def close(self) -> None:
        self.server.close()

    def start_cursor(self) -> None:
        """The first time the push runs on an index, it starts at the feed's end:
        studies stored before it was switched on are pushed only when asked
        (`minipacs fhir-push retry --study UID`), not all at once."""
        with self._write() as session, session.begin():
            if session.get(FhirPushCursor, 1) is None:
                session.add(FhirPushCursor(id=1, seq=head_seq(session)))

    def run_once(self) -> int:
        """Take new changes, then push what is due. Returns how many studies were pushed."""
        for _ in range(_FEED_BATCHES_PER_RUN):  # the rest waits for the next run
            if self.read_feed() < _FEED_BATCH:
                break
        pushed = 0
        for uid in self.due():
            if self.claim(uid):
                pushed += self.push_study(uid)
        return pushed

    def read_feed(self) -> int:
        """Changes after the cursor into `fhir_push_studies`; returns how many were read."""
        with self._write() as session, session.begin():
            cursor = session.scalars(select(FhirPushCursor).where(FhirPushCursor.id == 1)
                                     .with_for_update()).one_or_none()
            if cursor is None:
                cursor = FhirPushCursor(id=1, seq=head_seq(session))
                session.add(cursor)
                return 0
            changes = session.scalars(select(Change).where(Change.seq > cursor.seq)
                                      .order_by(Change.seq).limit(_FEED_BATCH)).all()
            for change in changes:
                self._take(session, change)
            if changes:
                cursor.seq = changes[-1].seq
            return len(changes)

    def _take(self, session: Session, change: Change) -> None:
        row = session.get(FhirPushStudy, change.study_instance_uid)
        if change.kind == "deleted" and change.level == "study":
            if row is not None:
                row.deleted = True
            return
        if change.kind == "deleted":
            return  # a series or instance less: the study changed, pushed below
        stable_at = change.at + self.push.stable
        if row is None:
            row = FhirPushStudy(study_instance_uid=change.study_instance_uid,
                                pushed_seq=0, attempts=0, last_error="",
                                remote_patient="", remote_imaging_study="", lease_owner="",
                                next_attempt_at=stable_at)
            session.add(row)
        row.patient_id = change.patient_id
        row.changed_seq = change.seq
        row.stable_at = stable_at
        row.deleted = False

    def due(self) -> list[str]:
        now = utc_now()
        with self._read() as session:
            return list(session.scalars(
                select(FhirPushStudy.study_instance_uid).where(*_due_conditions(now))
                .order_by(FhirPushStudy.next_attempt_at).limit(_DUE_BATCH)))

    def claim(self, study_instance_uid: str) -> bool:
        """Take the study's lease; False when another node holds it, or has pushed it
        since `due` listed it (the conditions are checked again in the UPDATE)."""
        now = utc_now()
        with self._write() as session, session.begin():
            result = session.execute(
                update(FhirPushStudy).where(
                    FhirPushStudy.study_instance_uid == study_instance_uid,
                    *_due_conditions(now))
                .values(lease_owner=self.node, lease_until=now + self.lease))
        return bool(getattr(result, "rowcount", 0))

    def push_study(self, study_instance_uid: str) -> int:
        """Push one claimed study; record the outcome and release it. 1 when pushed."""
        with self._read() as session:
            row = session.get(FhirPushStudy, study_instance_uid)
            target = row.changed_seq if row is not None else 0
        try:
            remote = self._send(study_instance_uid)
        except FhirPushFailed as exc:
            self._failed(study_instance_uid, str(exc))
            return 0
        self._finish(study_instance_uid, target, remote)
        return 1 if remote is not None else 0

    def _send(self, uid: str) -> tuple[str, str] | None:
        """Build and send the study's Bundle; the server's `Patient/id` and
        `ImagingStudy/id`, or None when the study is no longer in the archive."""
        page = self.reader.search_page(
            "STUDY", Filter().within(STUDY_INSTANCE_UID, [uid]), RecordConditions(),
            action=Action.VIEW, study_uid=uid, limit=1)
        if not page.matches:
            return None
        model = page.matches[0]
        study = imaging_study_resource(model, page.series.get(uid, []), page.instances,
                                       timezone=self.timezone, last_updated=None)
        patient = patient_resource(model, self.systems)
        identifier = patient_identifier(patient) if patient is not None else None
        found_patient = (self.server.find_one("Patient", identifier)
                         if identifier is not None else None)
        found_study = self.server.find_one("ImagingStudy", study_identifier(uid))
        bundle = push_bundle(patient, study, endpoints(self.public_base), found_patient,
                             found_study)
        response = self.server.transaction(bundle.model_dump(mode="json", exclude_none=True))
        where = locations(response)
        log.info("FHIR push of study %s (patient %s) to %s: %s", uid,
                 text(model, "00100020"), self.push.url, ", ".join(where))
        patient_at = next((w for w in where if w.startswith("Patient/")), "")
        study_at = next((w for w in where if w.startswith("ImagingStudy/")), "")
        # Signed reports ride the same change (their PDF and SR are in the study).
        push_reports(self.archive, self.pusher, self.server, uid, patient_at, study_at,
                     self.public_base)
        return patient_at, study_at

    def _finish(self, uid: str, target: int, remote: tuple[str, str] | None) -> None:
        now = utc_now()
        with self._write() as session, session.begin():
            row = session.get(FhirPushStudy, uid)
            if row is None:
                return
            if remote is None:
                row.deleted = True
            else:
                row.pushed_seq = max(row.pushed_seq, target)
                row.remote_patient, row.remote_imaging_study = remote
                row.pushed_at = now
            row.attempts, row.last_error = 0, ""
            row.last_attempt_at = now
            row.lease_owner, row.lease_until = "", None

    def _failed(self, uid: str, error: str) -> None:
        now = utc_now()
        with self._write() as session, session.begin():
            row = session.get(FhirPushStudy, uid)
            if row is None:
                return
            row.attempts += 1
            wait = min(self.push.retry * 2 ** (row.attempts - 1), self.push.retry_max)
            row.next_attempt_at = now + wait
            row.last_error = error[:2000]
            row.last_attempt_at = now
            row.lease_owner, row.lease_until = "", None
        log.warning("FHIR push of study %s failed (attempt %d, next in %s): %s", uid,
                    row.attempts, wait, error)


