"""The change feed: what was created, updated or deleted, in one order every node and
every reader agrees on.

Writers call `record` inside the transaction that makes the change (ingest, deletion,
any future update), so a change is in the feed exactly when it is committed. Readers
(`read_changes`, `GET /changes?since=N`) page through it by sequence number.

Why a head row, and not an autoincrement or a PostgreSQL sequence: those hand out numbers
when a row is inserted, not when its transaction commits. Transaction A takes 41,
transaction B takes 42 and commits first; a reader polling then sees 42, remembers
`since=42`, and never sees 41 when A commits a moment later. Here `record` increments
the one `change_head` row in the writer's transaction: on PostgreSQL the row lock is
held until that transaction ends, so the next writer (on any node) waits and then
continues from the committed value; SQLite has one writer at a time anyway. Numbers are
therefore given in commit order and without gaps (a rolled-back transaction gives its
numbers back): whatever a reader sees is a complete prefix 1..N of the feed, and
`since=N` can never skip a change that commits later. The cost is one UPDATE and one
INSERT per transaction, and writers queue on the head row between that UPDATE and their
commit; callers record last, right before committing, to keep that window to the commit
itself (writers already queue on the audit chain's head row in the same way, and
`record` always comes after the audit append so the two locks are taken in one order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from minipacs.audit.chain import utc_now
from minipacs.emr.models import Change, ChangeHead
from minipacs.index.models import StudyAccessTag
from minipacs.index.upsert import InstanceRecord

ChangeKind = Literal["created", "updated", "deleted"]
ChangeLevel = Literal["study", "series", "instance"]
MAX_CHANGES_PER_PAGE = 1000


@dataclass(frozen=True)
class ChangeEvent:
    """One change as a writer records it."""

    kind: ChangeKind
    level: ChangeLevel
    study_instance_uid: str
    series_instance_uid: str = ""
    sop_instance_uid: str = ""
    patient_id: str = ""
    issuer_of_patient_id: str = ""


@dataclass(frozen=True)
class ChangeRecord:
    """One change as the feed returns it: its sequence number and UTC time added."""

    seq: int
    at: datetime
    kind: str
    level: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str


@dataclass(frozen=True)
class ChangePage:
    """Changes after `since`, in order. `last`: the sequence number to pass as `since`
    next time (`since` itself when nothing new); `done`: nothing more was committed
    when this page was read."""

    changes: list[ChangeRecord]
    last: int
    done: bool


def record(session: Session, events: Sequence[ChangeEvent]) -> None:
    """Add `events` to the feed inside the caller's transaction (which commits them).

    Call it last in the transaction (after any audit append): from here to the commit,
    other writers wait for the head row (see the module docstring). Core statements
    built once, on the session's connection (every stored instance records here),
    after the ORM's pending changes are written out as its own statements would."""
    if not events:
        return
    session.flush()
    connection = session.connection()
    head = connection.execute(_ADVANCE_HEAD, {"count": len(events)}).scalar_one_or_none()
    if head is None:
        # Only an index made without migrations lacks the row; two writers racing here
        # collide on the primary key and the loser's transaction is retried.
        session.add(ChangeHead(id=1, seq=len(events)))
        session.flush()
        head = len(events)
    at = utc_now()
    first = head - len(events) + 1
    connection.execute(_INSERT_CHANGE, [
        {"seq": first + i, "at": at, "kind": e.kind, "level": e.level,
         "study_instance_uid": e.study_instance_uid[:64],
         "series_instance_uid": e.series_instance_uid[:64],
         "sop_instance_uid": e.sop_instance_uid[:64], "patient_id": e.patient_id[:64],
         "issuer_of_patient_id": e.issuer_of_patient_id[:64]}
        for i, e in enumerate(events)
    ])


_HEADS, _CHANGES = cast(Table, ChangeHead.__table__), cast(Table, Change.__table__)
_ADVANCE_HEAD = (update(_HEADS).where(_HEADS.c.id == 1)
                 .values(seq=_HEADS.c.seq + bindparam("count")).returning(_HEADS.c.seq))
_INSERT_CHANGE = insert(_CHANGES)


def read_changes(session: Session, since: int, limit: int,
                 study_uids: frozenset[str] | None = None,
                 access_tags: frozenset[str] | None = None) -> ChangePage:
    """Up to `limit` changes with a sequence number above `since`, in order.

    `study_uids`: only changes of these studies (a share link's); `access_tags`: only
    changes of studies carrying one of these tags (a principal limited to tags; a deleted
    study's tags went with it, so its deletion is not listed). The page still advances
    `last` over the others so the reader moves on."""
    limit = max(1, min(limit, MAX_CHANGES_PER_PAGE))
    rows = session.scalars(
        select(Change).where(Change.seq > since).order_by(Change.seq).limit(limit + 1)
    ).all()
    done = len(rows) <= limit
    rows = rows[:limit]
    last = rows[-1].seq if rows else since
    if access_tags is not None:
        tagged = set(session.scalars(select(StudyAccessTag.study_instance_uid).where(
            StudyAccessTag.tag.in_(sorted(access_tags)),
            StudyAccessTag.study_instance_uid.in_({r.study_instance_uid for r in rows}))))
        rows = [r for r in rows if r.study_instance_uid in tagged]
    changes = [ChangeRecord(r.seq, r.at, r.kind, r.level, r.study_instance_uid,
                            r.series_instance_uid, r.sop_instance_uid, r.patient_id,
                            r.issuer_of_patient_id)
               for r in rows if study_uids is None or r.study_instance_uid in study_uids]
    return ChangePage(changes, last, done)


def head_seq(session: Session) -> int:
    """The last sequence number given (0 for an empty feed)."""
    return session.scalar(select(ChangeHead.seq).where(ChangeHead.id == 1)) or 0


def ingest_changes(study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str,
                   patient_id: str, issuer_of_patient_id: str, created: Sequence[str],
                   replaced: bool) -> list[ChangeEvent]:
    """The changes one stored instance makes: its study and series when it created
    them (`created` holds "study", "series"), then the instance itself (updated when it
    replaced a stored one)."""
    def event(kind: ChangeKind, level: ChangeLevel, series: str = "", sop: str = ""
              ) -> ChangeEvent:
        return ChangeEvent(kind, level, study_instance_uid, series, sop, patient_id,
                           issuer_of_patient_id)

    events = []
    if "study" in created:
        events.append(event("created", "study"))
    if "series" in created:
        events.append(event("created", "series", series_instance_uid))
    events.append(event("updated" if replaced else "created", "instance",
                        series_instance_uid, sop_instance_uid))
    return events


def deletion_changes(records: Sequence[InstanceRecord]) -> list[ChangeEvent]:
    """A study deleted with its instances `records`: one change for the study, then one
    per series (its instances go with it; they are not listed one by one)."""
    if not records:
        return []
    first = records[0]
    events = [ChangeEvent("deleted", "study", first.study_instance_uid,
                          patient_id=first.patient_id)]
    for series in dict.fromkeys(r.series_instance_uid for r in records):
        events.append(ChangeEvent("deleted", "series", first.study_instance_uid, series,
                                  patient_id=first.patient_id))
    return events
