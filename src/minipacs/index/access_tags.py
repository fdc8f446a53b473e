"""Access tags in SQL (`access/tags.py` says what they mean): the condition that keeps a
principal limited to tags to the studies carrying one of them, and the tag rows.

`visible(level, tags)` is the one condition every query and retrieve of the archive adds
to the statement that answers it; None means unlimited (no condition at all).
"""

from __future__ import annotations

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
