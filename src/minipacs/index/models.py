"""Index tables. A value gets a column when we filter, sort, join or count on it;
everything else lives in the instance's stored DICOM JSON (`Instance.metadata_json`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Patient(Base):
    """A patient as one issuer identifies them: keyed by (PatientID, IssuerOfPatientID)."""

    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("patient_id", "issuer_of_patient_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_name_lower: Mapped[str] = mapped_column(String(324), default="", index=True)
    patient_name_folded: Mapped[str] = mapped_column(String(324), default="", index=True)
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    # "|"-delimited, with a leading and trailing "|": "|079...|DN47...|", so one
    # LIKE '%|ID|%' finds a national ID (CCCD) or insurance number.
    other_patient_ids: Mapped[str] = mapped_column(String(1024), default="")
    # The patient's indexed sequences as DICOM JSON (index/sequences.py); NULL: not derived.
    sequences_json: Mapped[str | None] = mapped_column(Text, nullable=True)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (Index("ix_studies_date_time", "study_date", "study_time"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_id: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(256), default="")
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")
    # The study's indexed sequences as DICOM JSON (index/sequences.py); NULL: not derived.
    sequences_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, server_default=func.now(), onupdate=func.now()
    )

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str] = mapped_column(String(256), default="")
    series_date: Mapped[str] = mapped_column(String(8), default="")
    series_time: Mapped[str] = mapped_column(String(16), default="")
    body_part_examined: Mapped[str] = mapped_column(String(64), default="")
    # The series' indexed sequences as DICOM JSON (index/sequences.py); NULL: not derived.
    sequences_json: Mapped[str | None] = mapped_column(Text, nullable=True)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64), default="")
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64), default="")
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bits_allocated: Mapped[int | None] = mapped_column(Integer, nullable=True)
    number_of_frames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    blob_key: Mapped[str] = mapped_column(String(300))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    metadata_json: Mapped[str] = mapped_column(Text)
    received_from: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())

    series: Mapped[Series] = relationship(back_populates="instances")


class AuditEvent(Base):
    """Who did what to which patient's data (PS3.15 A.5 in spirit; exported as needed)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now(), index=True)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text, default="")


class RemoteApplicationEntity(Base):
    """A DICOM peer we know: where to reach it (C-MOVE destination, Storage Commitment
    reports), what it may ask of us, and how to treat its character sets."""

    __tablename__ = "remote_aes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    # Comma-separated subset of store,query,retrieve,worklist,commitment.
    rights: Mapped[str] = mapped_column(String(128), default="")
    # When true, associations with this calling AE title must come from `host`.
    pin_ip: Mapped[bool] = mapped_column(default=False)
    # (0008,0005) assumed for its data sets that carry none ("" = ISO_IR 6, the default).
    default_charset: Mapped[str] = mapped_column(String(64), default="")
    # Charset it labels its data with but actually means `charset_remap_to`.
    charset_remap_from: Mapped[str] = mapped_column(String(64), default="")
    charset_remap_to: Mapped[str] = mapped_column(String(64), default="")
    # Send C-FIND/worklist answers transliterated to ASCII (Nguyễn → Nguyen).
    ascii_responses: Mapped[bool] = mapped_column(default=False)
    description: Mapped[str] = mapped_column(String(256), default="")
    # Associations we open to it (C-MOVE, Storage Commitment reports) use TLS.
    tls: Mapped[bool] = mapped_column(default=False, server_default=false())


class ScheduledProcedureStep(Base):
    """A Modality Worklist item (PS3.4 Annex K): one scheduled procedure step of an order.

    `status` is the SPS status (0040,0020): SCHEDULED until performed; CANCELLED items
    stay for the record but are never offered to modalities."""

    __tablename__ = "scheduled_procedure_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scheduled_procedure_step_id: Mapped[str] = mapped_column(String(16), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="SCHEDULED", index=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_name_lower: Mapped[str] = mapped_column(String(324), default="", index=True)
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="", index=True)
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    requested_procedure_id: Mapped[str] = mapped_column(String(16), default="")
    requested_procedure_description: Mapped[str] = mapped_column(String(64), default="")
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    scheduled_station_ae_title: Mapped[str] = mapped_column(String(16), default="", index=True)
    scheduled_start_date: Mapped[str] = mapped_column(String(8), default="", index=True)
    scheduled_start_time: Mapped[str] = mapped_column(String(16), default="")
    scheduled_performing_physician_name: Mapped[str] = mapped_column(String(324), default="")
    scheduled_procedure_step_description: Mapped[str] = mapped_column(String(64), default="")
    # ReferencedStudySequence, RequestedProcedureCodeSequence and, inside the one
    # ScheduledProcedureStepSequence item, ScheduledProtocolCodeSequence, as DICOM JSON.
    sequences_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, server_default=func.now(), onupdate=func.now()
    )
