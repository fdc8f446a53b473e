"""The re-identification mapping of de-identified exports, kept only inside the index.

One row per exported study: who exported it when, the original patient and study, and
what they became in the ZIP. PS3.15 E.1.1 lets the de-identifier keep such a mapping so
that authorised staff can re-identify; it is never written into the export itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from minipacs.index.models import Base


class DeidentificationExport(Base):
    __tablename__ = "deidentification_exports"
    __table_args__ = (
        UniqueConstraint("export_id", "study_instance_uid"),
        Index("ix_deidentification_exports_study", "study_instance_uid"),
        Index("ix_deidentification_exports_patient", "patient_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    export_id: Mapped[str] = mapped_column(String(36), index=True)
    at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    actor: Mapped[str] = mapped_column(String(128), default="")
    options: Mapped[str] = mapped_column(Text, default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    pseudonym: Mapped[str] = mapped_column(String(64), default="")
    date_shift_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    deidentified_study_instance_uid: Mapped[str] = mapped_column(String(64))
    instances: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)
    flagged: Mapped[int] = mapped_column(Integer, default=0)


@dataclass(frozen=True)
class ExportedStudy:
    """One row of the mapping, as the core passes it around (no ORM object leaves)."""

    export_id: str
    actor: str
    options: str
    patient_id: str
    issuer_of_patient_id: str
    pseudonym: str
    date_shift_days: int | None
    study_instance_uid: str
    deidentified_study_instance_uid: str
    instances: int
    refused: int
    flagged: int
