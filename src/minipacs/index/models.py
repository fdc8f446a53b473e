"""Index tables. A value gets a column when we filter, sort, join or count on it;
everything else lives in the instance's stored DICOM JSON (`Instance.metadata_json`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
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
    __table_args__ = (
        UniqueConstraint("patient_id", "issuer_of_patient_id"),
        # PostgreSQL only (`info["dialects"]`): a name-prefix search, LIKE 'nguyễn^v%', can
        # use a btree index only in the "C" collation or with pattern operators; the plain
        # index above serves equality and the patient list's ORDER BY in the database's
        # collation. SQLite needs none: its LIKE is case-sensitive here (index/database.py)
        # and uses ix_patients_patient_name_lower as a range. (issue #13, scale)
        Index("ix_patients_patient_name_lower_pattern", "patient_name_lower",
              postgresql_ops={"patient_name_lower": "varchar_pattern_ops"},
              info={"dialects": ("postgresql",)}),
    )

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
    # Demographics set by reconciliation (emr/reconciliation.py): arriving instances no
    # longer overwrite them (they are served corrected instead).
    reconciled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

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
    # Reconciliation: the patient attributes as the stored blob holds them (JSON, keyword
    # -> value) when they differ from the patient row's; NULL when they agree. Set, the
    # blob is served with the patient row's values patched in (dicom/patient_header.py).
    stored_patient: Mapped[str | None] = mapped_column(Text, nullable=True)

    series: Mapped[Series] = relationship(back_populates="instances")


class AuditEvent(Base):
    """Who did what to which patient's data, when, from where, with what outcome.

    Hash-chained (`audit/chain.py`): `seq` orders the events without gaps, and `hash`
    covers the event's fields and the previous event's hash, so changing, deleting or
    inserting a row breaks the chain from there on. Never deleted with a study."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now(), index=True)
    action: Mapped[str] = mapped_column(String(32), index=True)
    actor: Mapped[str] = mapped_column(String(128), default="", index=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    role: Mapped[str] = mapped_column(String(32), default="")
    source: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True, nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64), default="")
    hash: Mapped[str] = mapped_column(String(64), default="")


class AuditHead(Base):
    """The chain's last event (one row): appenders lock it, so several nodes on one
    PostgreSQL append one after the other and the chain never forks."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64), default="")
    # Retention: events up to `base_seq` were pruned; the chain now starts from the hash
    # of that last pruned event (`audit/chain.py: prune`).
    base_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    base_hash: Mapped[str] = mapped_column(String(64), default="")


class UserAccount(Base):
    """A person's account. The password is kept only as an Argon2id hash."""

    __tablename__ = "user_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    full_name: Mapped[str] = mapped_column(String(128), default="")
    password_hash: Mapped[str] = mapped_column(String(256))
    # Earlier hashes, newest first, "\n"-separated: reuse is refused (password history).
    password_history: Mapped[str] = mapped_column(Text, default="")
    password_changed_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled_reason: Mapped[str] = mapped_column(String(128), default="")
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    # TOTP second factor (access/totp.py): a shared secret, kept as is (the server must
    # compute codes); pending until confirmed when enrolled over HTTP. The last time step
    # used is kept so a code is never accepted twice.
    totp_secret: Mapped[str] = mapped_column(String(64), default="")
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    totp_last_step: Mapped[int] = mapped_column(Integer, default=0)
    # Single sign-on (access/oidc.py): the issuer and 'sub' of an account the OpenID
    # Provider vouches for; such an account has no usable password. Empty: a local account.
    identity_provider: Mapped[str] = mapped_column(String(255), default="")
    external_subject: Mapped[str] = mapped_column(String(255), default="")
    # Access tags (`access/tags.py`): comma-separated; "" = every study.
    access_tags: Mapped[str] = mapped_column(Text, default="", server_default="")
    # Practising-certificate code (mã chứng chỉ hành nghề, e.g. 003539/HCM-CCHN): the
    # reading doctor of insurance claims (reports/claims.py). "" = none recorded.
    practising_certificate: Mapped[str] = mapped_column(String(64), default="",
                                                        server_default="")


class ApiToken(Base):
    """A bearer credential: an API token (`kind` "api", its own name and role) or a
    login session ("session", of a user). Only the SHA-256 of the token is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="api")
    name: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(32))
    user_pk: Mapped[int | None] = mapped_column(
        ForeignKey("user_accounts.id", ondelete="CASCADE"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # kind "share": the session a share link was exchanged for, and the studies it opens
    share_pk: Mapped[int | None] = mapped_column(
        ForeignKey("share_links.id", ondelete="CASCADE"), nullable=True, index=True
    )
    scope_study_uids: Mapped[str] = mapped_column(Text, default="")
    # Access tags of an API token (`access/tags.py`): comma-separated; "" = every study.
    access_tags: Mapped[str] = mapped_column(Text, default="", server_default="")


class ShareLink(Base):
    """An expiring, revocable, read-only link to one study or one patient's studies
    (for the EMR and for referrals). The token is kept as its SHA-256, the PIN as an
    Argon2id hash; the token travels in the URL fragment, never in a request line."""

    __tablename__ = "share_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    note: Mapped[str] = mapped_column(String(256), default="")
    pin_hash: Mapped[str] = mapped_column(String(256), default="")
    failed_pins: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_source: Mapped[str] = mapped_column(String(64), default="")
    # The creator's access tags: the link opens only studies carrying one ("" = any).
    access_tags: Mapped[str] = mapped_column(Text, default="", server_default="")


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
    # Access tags (`access/tags.py`), comma-separated: given to the studies it stores,
    # and limiting what it may query and retrieve ("" = no tag / every study).
    store_tags: Mapped[str] = mapped_column(Text, default="", server_default="")
    access_tags: Mapped[str] = mapped_column(Text, default="", server_default="")


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
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
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
    # The order this step is (emr/orders.py, issue 12): its version (FHIR ETag, bumped by
    # every change), the placer's order number, the study its images arrived as, the
    # MPPS instance a modality reported it with, and why it needs reconciling ("": no).
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    placer_order_number: Mapped[str] = mapped_column(String(64), default="",
                                                     server_default="")
    performed_study_uid: Mapped[str] = mapped_column(String(64), default="",
                                                     server_default="")
    performed_procedure_step_uid: Mapped[str] = mapped_column(
        String(64), default="", server_default="", index=True)
    reconciliation: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, server_default=func.now(), onupdate=func.now()
    )


class SecurityAlert(Base):
    """An abnormal-access alert (`audit/alerts.py`). (rule, subject, time window) is unique, so
    several nodes scanning the same trail raise each alert once."""

    __tablename__ = "security_alerts"
    __table_args__ = (UniqueConstraint("rule", "subject", "time_window"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now(), index=True)
    rule: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(128))
    time_window: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    acknowledged_by: Mapped[str] = mapped_column(String(128), default="")
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class RestrictedPatient(Base):
    """A patient (PatientID, IssuerOfPatientID) whose studies need a break-the-glass
    reason to read (`access/restricted.py`)."""

    __tablename__ = "restricted_patients"
    __table_args__ = (UniqueConstraint("patient_id", "issuer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    restricted_by: Mapped[str] = mapped_column(String(128), default="")
    at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())


class AuditForwarding(Base):
    """How far the audit trail has been sent to the syslog collector (one row)."""

    __tablename__ = "audit_forwarding"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class PatientCorrection(Base):
    """One reconciliation of a patient (`emr/reconciliation.py`): demographics corrected
    ("update") or another patient's studies merged in ("merge"), with the values before
    and after, so the originals stay visible to admins (a history per patient)."""

    __tablename__ = "patient_corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    kind: Mapped[str] = mapped_column(String(16))
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    issuer: Mapped[str] = mapped_column(String(64), default="")
    # merge: the patient whose studies came in (and whose row is gone)
    source_patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    source_issuer: Mapped[str] = mapped_column(String(64), default="")
    actor: Mapped[str] = mapped_column(String(128), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    before_json: Mapped[str] = mapped_column(Text, default="{}")
    after_json: Mapped[str] = mapped_column(Text, default="{}")
    study_uids: Mapped[str] = mapped_column(Text, default="")


class PatientAlias(Base):
    """A patient key merged away: instances arriving later with it are filed under
    `patient_pk` (the merge target), served with the target's attributes."""

    __tablename__ = "patient_aliases"
    __table_args__ = (UniqueConstraint("patient_id", "issuer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(64), default="")
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
class StudyAccessTag(Base):
    """An access tag a study carries (`access/tags.py`): principals limited to tags see
    only studies carrying one of theirs. Keyed by the study's UID; removed with it."""

    __tablename__ = "study_access_tags"
    __table_args__ = (Index("ix_study_access_tags_tag", "tag", "study_instance_uid"),)

    study_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
