"""Access tags in SQL (`access/tags.py` says what they mean): the condition that keeps a
principal limited to tags to the studies carrying one of them, and the tag rows.

`visible(level, tags)` is the one condition every query and retrieve of the archive adds
to the statement that answers it; None means unlimited (no condition at all).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from sqlalchemy import ColumnElement, delete, exists, select, true
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from minipacs.index.levels import Level
from minipacs.index.models import Patient, Study, StudyAccessTag


def _study_tagged(tags: frozenset[str]) -> ColumnElement[bool]:
    return exists(
        select(StudyAccessTag.tag).where(
            StudyAccessTag.study_instance_uid == Study.study_instance_uid,
            StudyAccessTag.tag.in_(sorted(tags)))
    )


def visible(level: Level, tags: frozenset[str] | None) -> ColumnElement[bool]:
    """Rows at `level` a principal limited to `tags` may see: studies (and their series
    and instances) carrying one of the tags; patients with at least one such study.
    The statement must select from `Study` at the study level and below."""
    if tags is None:
        return true()
    if level == "PATIENT":
        return exists(select(Study.id).where(Study.patient_pk == Patient.id,
                                             _study_tagged(tags)))
    return _study_tagged(tags)


def add_tags(session: Session, study_instance_uid: str, tags: Iterable[str]) -> None:
    """Give the study these tags (those it has already are left alone), in the caller's
    transaction: one INSERT ... ON CONFLICT DO NOTHING, no read."""
    rows = [{"study_instance_uid": study_instance_uid, "tag": tag} for tag in sorted(tags)]
    if not rows:
        return
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(StudyAccessTag).values(rows).on_conflict_do_nothing())


def remove_tags(session: Session, study_instance_uid: str, tags: Iterable[str]) -> int:
    """Take these tags off the study; returns how many it had."""
    result = session.execute(delete(StudyAccessTag).where(
        StudyAccessTag.study_instance_uid == study_instance_uid,
        StudyAccessTag.tag.in_(sorted(tags))))
    return int(getattr(result, "rowcount", 0) or 0)


def forget_study(session: Session, study_instance_uid: str) -> None:
    """Drop a deleted study's tags (a study stored again later starts untagged)."""
    session.execute(delete(StudyAccessTag).where(
        StudyAccessTag.study_instance_uid == study_instance_uid))


def tags_of(session: Session, study_instance_uid: str) -> frozenset[str]:
    return frozenset(session.scalars(select(StudyAccessTag.tag).where(
        StudyAccessTag.study_instance_uid == study_instance_uid)))


class RecentStudyTags:
    """The tags this node wrote for a study in the last `ttl` seconds, so the instances of
    a series after the first write nothing. Per node and short-lived on purpose: another
    node's admin removing a tag is at worst re-added by an instance arriving here within
    `ttl` seconds, as the rule or AE that gave it says."""

    def __init__(self, ttl: float = 60.0, size: int = 10_000) -> None:
        self._ttl, self._size = ttl, size
        self._known: dict[str, tuple[frozenset[str], float]] = {}
        self._lock = threading.Lock()

    def missing(self, study_uid: str, tags: frozenset[str]) -> frozenset[str]:
        """`tags`, or nothing when all were written for this study lately."""
        if not tags:
            return tags
        with self._lock:
            known, at = self._known.get(study_uid, (frozenset(), float("-inf")))
        return frozenset() if tags <= known and time.monotonic() - at < self._ttl else tags

    def remember(self, study_uid: str, tags: frozenset[str]) -> None:
        """After the commit that wrote `tags` for the study."""
        if not tags:
            return
        with self._lock:
            if len(self._known) > self._size:
                self._known.clear()
            known, _at = self._known.get(study_uid, (frozenset(), 0.0))
            self._known[study_uid] = (known | tags, time.monotonic())

    def forget(self, study_uid: str) -> None:
        with self._lock:
            self._known.pop(study_uid, None)
