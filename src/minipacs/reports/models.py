"""The `reports` table: one row per report version (an amendment is a new row that
points to the version it corrects; the corrected one stays readable)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from minipacs.index.models import Base


class ReportRow(Base):
    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16))  # draft|preliminary|final|amended
    findings: Mapped[str] = mapped_column(Text, default="")
    conclusion: Mapped[str] = mapped_column(Text, default="")
    based_on: Mapped[str] = mapped_column(String(64), default="")  # order step ID
    key_images: Mapped[str] = mapped_column(Text, default="")  # SOP Instance UIDs, spaces
    author: Mapped[str] = mapped_column(String(128), default="")
    signer: Mapped[str] = mapped_column(String(128), default="")
    signer_certificate: Mapped[str] = mapped_column(String(64), default="")
    amends: Mapped[int | None] = mapped_column(Integer, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    signed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    pdf_sha256: Mapped[str] = mapped_column(String(64), default="")
    pdf_sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    sr_sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")


class ReportTemplateRow(Base):
    """A report template (reports/templates.py): skeleton findings and conclusion for
    studies of some modalities and body parts; edited by administrators."""

    __tablename__ = "report_templates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    modalities: Mapped[str] = mapped_column(String(64), default="")  # "CR DX"; "": any
    body_parts: Mapped[str] = mapped_column(String(256), default="")  # "HEAD BRAIN"; "": any
    findings: Mapped[str] = mapped_column(Text, default="")
    conclusion: Mapped[str] = mapped_column(Text, default="")
    updated_by: Mapped[str] = mapped_column(String(128), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class OruOutboxRow(Base):
    """A signed report to send as HL7 v2 ORU^R01 (hl7/oru_sender.py): written in the
    transaction that signs the report, so none is missed; sent in `id` order."""

    __tablename__ = "hl7_report_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    report_id: Mapped[int] = mapped_column(Integer, index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # |sent
    created_at: Mapped[datetime] = mapped_column(DateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    control_id: Mapped[str] = mapped_column(String(64), default="")  # MSH-10 of the last try
    peer: Mapped[str] = mapped_column(String(256), default="")  # where it was delivered
