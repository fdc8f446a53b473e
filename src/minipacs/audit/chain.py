"""Appending to, and verifying, the hash-chained audit trail.

Each event's hash is SHA-256 over the previous event's hash and the event's own fields
(canonical JSON), so an event changed, deleted or inserted anywhere breaks every hash
from there on, and `verify` names the first broken one. A rewritten tail (every hash
recomputed) or a truncated one is caught against a checkpoint: the head's sequence number
and hash, signed with a key the database does not hold, written outside the index
(`checkpoints.py`).

Appends lock the one `audit_head` row inside the caller's transaction: the event commits
(or rolls back) with the change it records, and several nodes on one PostgreSQL append in
turn without forking the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from minipacs.index.models import AuditEvent, AuditHead

GENESIS = "0" * 64
_VERSION = "minipacs-audit-v1"


@dataclass(frozen=True)
class AuditRecord:
    """What one event says (all text; `at` is UTC)."""

    action: str
    actor: str = ""
    role: str = ""
    source: str = ""
    patient_id: str = ""
    study_instance_uid: str = ""
    outcome: str = "success"
    detail: str = ""


def utc_now() -> datetime:
    """Now in UTC, naive (as stored), to the microsecond."""
    return datetime.now(UTC).replace(tzinfo=None)


def event_hash(prev_hash: str, seq: int, at: datetime, record: AuditRecord) -> str:
    body = json.dumps(
        [_VERSION, seq, at.strftime("%Y-%m-%dT%H:%M:%S.%f"), record.action, record.actor,
         record.role, record.source, record.patient_id, record.study_instance_uid,
         record.outcome, record.detail],
        ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def _clip(record: AuditRecord) -> AuditRecord:
    # Columns have lengths; the hash must cover exactly what is stored.
    return AuditRecord(
        record.action[:32], record.actor[:128], record.role[:32], record.source[:64],
        record.patient_id[:64], record.study_instance_uid[:64], record.outcome[:16],
        record.detail,
    )


# Built once: a statement's cache key is computed on every execution, and building the
# INSERT with .values(...) each time cost more than running it (docs/performance.md,
# "QIDO and per-request cost, fourth pass"). Values travel as bound parameters.
_EVENTS = cast(Table, AuditEvent.__table__)
_HEAD = cast(Table, AuditHead.__table__)
_READ_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update()
_NEW_HEAD = insert(_HEAD)
_INSERT_EVENT = insert(_EVENTS)
_ADVANCE_HEAD = update(_HEAD).where(_HEAD.c.id == 1)
_ADVANCE_KNOWN_HEAD = update(_HEAD).where(
    _HEAD.c.id == 1, _HEAD.c.seq == bindparam("prev_seq"),
    _HEAD.c.hash == bindparam("prev_hash"),
).values(seq=bindparam("seq"), hash=bindparam("hash"))
# Per database (engine), the head this process's last append advanced to: a guess that
# saves reading the head before most appends. The UPDATE checks it (seq and hash in its
# WHERE), so a wrong guess (another node appended, a rolled-back transaction or
# savepoint, a restored backup) costs one read, never a forked chain.
_last_head: WeakKeyDictionary[Engine, tuple[int, str]] = WeakKeyDictionary()


def append(session: Session | Connection, record: AuditRecord) -> None:
    """Add `record` to the chain inside the caller's transaction (which commits it):
    a session's, or a connection's (an event recorded alone, `Archive.record_audit`).

    SQLAlchemy Core statements on the session's connection, not the ORM's unit of work:
    every stored instance and every query appends one event, and the ORM's bookkeeping
    cost more than the rows. The head row is read with FOR UPDATE (PostgreSQL: several
    nodes append one after the other) and advanced in the same transaction as the event
    it points at; when this process appended last, the head is advanced without the
    read, on the condition that it is still what this process left (`_last_head`)."""
    record = _clip(record)
    if isinstance(session, Session):
        # The ORM changes of the caller's transaction go first (`prune` moves the head's
        # base), as the ORM's autoflush did when this read went through it.
        session.flush()
        connection = session.connection()
    else:
        connection = session
    at = utc_now()
    known = _last_head.get(connection.engine)
    if known is not None:
        # The head this process last advanced to, most likely still the head: advance it
        # from there, on the condition that it is (a stale guess matches no row).
        prev_seq, prev_hash = known
        digest = event_hash(prev_hash, prev_seq + 1, at, record)
        if connection.execute(_ADVANCE_KNOWN_HEAD, {
                "seq": prev_seq + 1, "hash": digest, "prev_seq": prev_seq,
                "prev_hash": prev_hash}).rowcount != 1:
            known = None
    if known is None:
        row = connection.execute(_READ_HEAD).one_or_none()
        if row is None:
            connection.execute(_NEW_HEAD, {"id": 1, "seq": 0, "hash": GENESIS})
            prev_seq, prev_hash = 0, GENESIS
        else:
            prev_seq, prev_hash = row
        digest = event_hash(prev_hash, prev_seq + 1, at, record)
        connection.execute(_ADVANCE_HEAD, {"seq": prev_seq + 1, "hash": digest})
    connection.execute(_INSERT_EVENT, {
        "at": at, "action": record.action, "actor": record.actor, "role": record.role,
        "source": record.source, "patient_id": record.patient_id,
        "study_instance_uid": record.study_instance_uid, "outcome": record.outcome,
        "detail": record.detail, "seq": prev_seq + 1, "prev_hash": prev_hash, "hash": digest,
    })
    _last_head[connection.engine] = (prev_seq + 1, digest)


def record_of(event: AuditEvent) -> AuditRecord:
    return AuditRecord(event.action, event.actor, event.role, event.source,
                       event.patient_id, event.study_instance_uid, event.outcome,
                       event.detail)


@dataclass(frozen=True)
class ChainReport:
    """`ok` when every event hashes as recorded and follows the one before; else
    `first_broken` is the sequence number (or row id) where it breaks, and why."""

    events: int
    head_seq: int
    head_hash: str
    first_broken: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.first_broken is None


def iter_events(engine: Engine, batch: int = 2000) -> Iterator[AuditEvent]:
    last = -1
    while True:
        with Session(engine) as session:
            rows = list(session.scalars(
                select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq)
                .limit(batch)))
        if not rows:
            return
        yield from rows
        last = rows[-1].seq or last


def verify(engine: Engine) -> ChainReport:
    """Walk the chain from the first event; report the first event that does not hold."""
    with Session(engine) as session:
        unchained = session.scalars(select(AuditEvent.id).where(AuditEvent.seq.is_(None))
                                    .limit(1)).first()
        head = session.get(AuditHead, 1)
    if unchained is not None:
        return ChainReport(0, 0, GENESIS, -unchained,
                           f"row id {unchained} has no sequence number: inserted outside "
                           "the chain")
    prev, expected_seq, count = GENESIS, 1, 0
    if head is not None and head.base_seq:
        # Events up to base_seq were pruned under the retention setting (`prune`).
        prev, expected_seq = head.base_hash, head.base_seq + 1
    for event in iter_events(engine):
        count += 1
        if event.seq != expected_seq:
            return ChainReport(count, expected_seq - 1, prev, expected_seq,
                               f"event {expected_seq} is missing (next is {event.seq})")
        if event.prev_hash != prev:
            return ChainReport(count, expected_seq - 1, prev, event.seq,
                               f"event {event.seq} does not follow event {event.seq - 1}")
        digest = event_hash(prev, event.seq, event.at, record_of(event))
        if digest != event.hash:
            return ChainReport(count, expected_seq - 1, prev, event.seq,
                               f"event {event.seq} ({event.action} by {event.actor}) was "
                               "changed after it was written")
        prev, expected_seq = event.hash, expected_seq + 1
    head_seq, head_hash = (head.seq, head.hash) if head is not None else (0, GENESIS)
    if (head_seq, head_hash) != (expected_seq - 1, prev):
        return ChainReport(count, expected_seq - 1, prev, expected_seq,
                           f"the chain ends at event {expected_seq - 1} but its head says "
                           f"{head_seq}: events were removed from the end")
    return ChainReport(count, head_seq, head_hash)


@dataclass(frozen=True)
class AuditEntry:
    """One event as the audit API returns it."""

    seq: int
    at: datetime
    action: str
    actor: str
    role: str
    source: str
    patient_id: str
    study_instance_uid: str
    outcome: str
    detail: str
    hash: str

    def as_json(self) -> dict[str, object]:
        return {**self.__dict__, "at": self.at.isoformat() + "Z"}


def _naive_utc(moment: datetime) -> datetime:
    """As stored: UTC without a zone (a time without a zone is taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None)


def search(session: Session, *, patient_id: str | None = None, actor: str | None = None,
           action: str | None = None, since: datetime | None = None,
           until: datetime | None = None, limit: int = 100, offset: int = 0
           ) -> list[AuditEntry]:
    """Events matching every given criterion, newest first (times in UTC)."""
    stmt = select(AuditEvent)
    if patient_id:
        stmt = stmt.where(AuditEvent.patient_id == patient_id)
    if actor:
        stmt = stmt.where(AuditEvent.actor == actor)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if since is not None:
        stmt = stmt.where(AuditEvent.at >= _naive_utc(since))
    if until is not None:
        stmt = stmt.where(AuditEvent.at <= _naive_utc(until))
    stmt = stmt.order_by(AuditEvent.seq.desc()).limit(limit).offset(offset)
    return [entry_of(e) for e in session.scalars(stmt)]


def entry_of(e: AuditEvent) -> AuditEntry:
    return AuditEntry(e.seq or 0, e.at, e.action, e.actor, e.role, e.source, e.patient_id,
                      e.study_instance_uid, e.outcome, e.detail, e.hash)


def prune(session: Session, before: datetime, actor: str) -> int:
    """Retention: delete the events recorded before `before` (UTC), inside the caller's
    transaction, keeping the chain verifiable from the last pruned event's hash (kept in
    `audit_head`), and record the pruning itself as an event. Returns how many went."""
    head = session.scalars(select(AuditHead).where(AuditHead.id == 1).with_for_update()
                           ).one_or_none()
    if head is None:
        return 0
    last = session.scalars(select(AuditEvent).where(AuditEvent.at < _naive_utc(before))
                           .order_by(AuditEvent.seq.desc()).limit(1)).one_or_none()
    if last is None or last.seq is None or last.seq <= head.base_seq:
        return 0
    pruned = session.scalar(select(func.count()).select_from(AuditEvent)
                            .where(AuditEvent.seq <= last.seq)) or 0
    session.execute(delete(AuditEvent).where(AuditEvent.seq <= last.seq))
    head.base_seq, head.base_hash = last.seq, last.hash
    append(session, AuditRecord(
        "audit-prune", actor, detail=f"{pruned} events recorded before "
        f"{_naive_utc(before):%Y-%m-%d %H:%M} UTC pruned (retention); the chain continues "
        f"from event {last.seq}, hash {last.hash}"))
    return pruned
