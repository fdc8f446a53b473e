"""Tables of the change feed and the FHIR push, joined to the index's metadata.

`changes` is the feed itself: one row per study/series/instance created, updated or
deleted, numbered by `change_head` (`changes.py` says why a head row and not an
autoincrement). `fhir_push_studies` is the push's work list, `fhir_push_cursor` how far
into the feed the push has read.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from minipacs.index.models import Base


class Change(Base):
    __tablename__ = "changes"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime)
    kind: Mapped[str] = mapped_column(String(16))  # created | updated | deleted
    level: Mapped[str] = mapped_column(String(16))  # study | series | instance
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")


class ChangeHead(Base):
    """The last sequence number given (one row, id 1). Writers update it inside their
    transaction, so they take numbers one transaction after the other."""

    __tablename__ = "change_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)


class FhirPushStudy(Base):
    """One study the FHIR push knows: the newest change seen, the change pushed last,
    when it becomes stable, and how its attempts went."""

    __tablename__ = "fhir_push_studies"

    study_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    changed_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    pushed_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    stable_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    pushed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    # The server's logical ids, once it has answered (for admins; lookups use identifiers).
    remote_patient: Mapped[str] = mapped_column(String(128), default="")
    remote_imaging_study: Mapped[str] = mapped_column(String(128), default="")
    # A node's claim: it pushes this study until `lease_until` (several nodes, one push).
    lease_owner: Mapped[str] = mapped_column(String(64), default="")
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class FhirPushCursor(Base):
    """How far the push has read the change feed (one row, id 1)."""

    __tablename__ = "fhir_push_cursor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
