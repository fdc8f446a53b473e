"""Every setting minipacs has, its default, and its ``MINIPACS_`` environment variable.

`Settings` is built once (by the CLI, or by a test) and passed down; nothing reads the
environment anywhere else. Each field also becomes a ``minipacs serve`` flag: the field
``dicom_port`` is ``--dicom-port`` and ``MINIPACS_DICOM_PORT``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_REPO_SAMPLES = Path(__file__).resolve().parents[2] / "sample_dicom"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MINIPACS_", extra="ignore")

    data_dir: Path = Field(
        Path("./minipacs-data"),
        description="Folder for the embedded index (index.sqlite) and blob store (blobs/).",
    )
    ae_title: str = Field("MINIPACS", description="Our DICOM Application Entity title.")
    dicom_host: str = Field("0.0.0.0", description="Address the DICOM (DIMSE) port binds to.")
    dicom_port: int = Field(11112, ge=0, le=65535, description="DICOM port (0: any free port).")
    http_host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP port (0: any free port).")
    public_url: str | None = Field(
        None,
        description="Base URL clients reach us at, used in RetrieveURL and viewer links "
        "(default: http://HTTP_HOST:HTTP_PORT).",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the index, e.g. postgresql+psycopg://user:pw@host/db "
        "(default: SQLite file DATA_DIR/index.sqlite).",
    )
    storage: Literal["folder", "s3"] = Field(
        "folder", description="Blob store: 'folder' (DATA_DIR/blobs) or 's3' (MinIO/S3)."
    )
    s3_endpoint: str | None = Field(None, description="S3/MinIO endpoint, host:port.")
    s3_access_key: str | None = Field(None, description="S3/MinIO access key.")
    s3_secret_key: str | None = Field(None, description="S3/MinIO secret key.")
    s3_bucket: str = Field("minipacs", description="S3/MinIO bucket (created when missing).")
    s3_secure: bool = Field(False, description="Use HTTPS to reach the S3 endpoint.")
    s3_region: str | None = Field(None, description="S3 region, when the endpoint needs one.")
    auth: Literal["off", "on"] = Field(
        "on",
        description="Require an account or API token on every HTTP route except health, "
        "login, the viewer's files and the API description. 'off' lets anyone in (and "
        "logs a warning on every start); access is audited either way.",
    )
    auth_lockout_attempts: int = Field(
        5, ge=1, description="Failed logins in a row that lock an account."
    )
    auth_lockout_minutes: int = Field(15, ge=1, description="How long a lock lasts.")
    auth_session_idle_minutes: int = Field(
        15, ge=1, description="A login session unused this long is locked (log in again)."
    )
    auth_admin_session_idle_minutes: int = Field(
        5, ge=1, description="The same for administrators' sessions."
    )
    auth_session_max_hours: int = Field(
        12, ge=1, description="A login session ends this long after login, used or not."
    )
    auth_password_min_length: int = Field(10, ge=8, description="Shortest password accepted.")
    auth_password_history: int = Field(
        5, ge=1, description="A new password must differ from this many previous ones."
    )
    auth_admin_password_max_age_days: int = Field(
        90, ge=1, description="Administrators must change their password this often."
    )
    auth_account_idle_days: int = Field(
        45, ge=1, description="Accounts not used for this long are disabled."
    )
    audit_key: str | None = Field(
        None,
        description="Secret that signs audit-trail checkpoints (kept outside the database). "
        "Every node of a cluster needs the same; default: DATA_DIR/audit.key, created on "
        "first start.",
    )
    load_samples: bool = Field(
        True, description="On first start with an empty archive, import SAMPLE_DIR."
    )
    sample_dir: Path = Field(_REPO_SAMPLES, description="Folder of sample studies to preload.")
    duplicate_policy: Literal["replace", "reject"] = Field(
        "replace",
        description="Same SOP Instance UID with different bytes: replace the stored one "
        "(audited) or reject the new one.",
    )
    max_query_results: int = Field(
        1000, ge=1, description="Most matches one C-FIND or QIDO-RS query returns."
    )
    max_upload_bytes: int = Field(
        4 * 1024**3, ge=1, description="Largest STOW-RS request body accepted, in bytes."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log verbosity."
    )
    ready_file: Path | None = Field(
        None,
        description="When set, write the bound ports as JSON here once both servers "
        "accept connections (for scripts and tests starting on port 0).",
    )
    cors_origins: str = Field(
        "",
        description="Browser origins allowed to call the HTTP API from other sites (CORS), "
        "comma-separated, e.g. https://ohif.example.org; '*' for any; empty: none.",
    )
    s3_spool: bool = Field(
        True,
        description="With S3 storage, acknowledge once an instance is durable in "
        "DATA_DIR/spool and indexed; upload to S3 in the background.",
    )
    s3_upload_workers: int = Field(
        4, ge=1, le=64, description="Parallel uploads from the spool to S3."
    )

    dicom_registered_aes_only: bool = Field(
        False,
        description="Accept DICOM associations only from calling AE titles in the AE "
        "registry (minipacs ae add), from their host when pinned, and only for the "
        "services their rights allow; others get A-ASSOCIATE-RJ.",
    )
    dicom_tls_cert: Path | None = Field(
        None,
        description="PEM certificate: when set with DICOM_TLS_KEY, the DICOM port speaks "
        "TLS (PS3.15 B.1 secure transport) instead of plain TCP.",
    )
    dicom_tls_key: Path | None = Field(None, description="PEM private key for DICOM_TLS_CERT.")
    dicom_tls_ca: Path | None = Field(
        None,
        description="PEM CA bundle: when set, DICOM TLS peers must present a certificate "
        "it signed (and we check move destinations' certificates against it).",
    )

    # --- issue #12, FHIR door and patient identity (fhir stream) ---
    facility_name: str = Field(
        "minipacs",
        description="The facility that assigns the hospital patient ID (PatientID), named "
        "as its FHIR identifier.assigner.",
    )
    identity_hospital_system: str = Field(
        "http://fhir.ehealth.gov.vn/core/sid/patient-internal-id",
        description="FHIR identifier.system of the hospital patient ID (DICOM PatientID).",
    )
    identity_hospital_alternative_systems: str = Field(
        "", description="Other identifier.system URIs accepted on search for the hospital "
        "patient ID, comma-separated.",
    )
    identity_hospital_type: str = Field(
        "MR", description="HL7 v2-0203 code of the hospital patient ID: FHIR identifier.type "
        "and HL7 v2 PID-3.5.",
    )
    identity_cccd_issuer: str = Field(
        "CCCD", description="IssuerOfPatientID of the OtherPatientIDsSequence item carrying "
        "the national citizen ID (CCCD).",
    )
    identity_cccd_system: str = Field(
        "http://fhir.ehealth.gov.vn/core/sid/national_id",
        description="FHIR identifier.system of the national citizen ID (CCCD).",
    )
    identity_cccd_alternative_systems: str = Field(
        "http://fhir.hl7.org.vn/core/sid/cccd",
        description="Other identifier.system URIs accepted on search for the CCCD, "
        "comma-separated (default: the HL7 Vietnam community guide's).",
    )
    identity_cccd_type: str = Field(
        "NI", description="HL7 v2-0203 code of the CCCD: FHIR identifier.type and PID-3.5."
    )
    identity_bhyt_issuer: str = Field(
        "BHYT", description="IssuerOfPatientID of the OtherPatientIDsSequence item carrying "
        "the health-insurance number (BHYT).",
    )
    identity_bhyt_system: str = Field(
        "http://fhir.ehealth.gov.vn/core/sid/insurance_number",
        description="FHIR identifier.system of the health-insurance number (BHYT).",
    )
    identity_bhyt_alternative_systems: str = Field(
        "http://fhir.hl7.org.vn/core/sid/bhyt",
        description="Other identifier.system URIs accepted on search for the BHYT number, "
        "comma-separated.",
    )
    identity_bhyt_type: str = Field(
        "HC", description="HL7 v2-0203 code of the BHYT number: FHIR identifier.type and "
        "PID-3.5.",
    )
    fhir_timezone: str = Field(
        "+07:00",
        description="UTC offset given to study and series times in FHIR when the DICOM has "
        "no Timezone Offset From UTC (0008,0201).",
        pattern=r"^[+-](0\d|1[0-4]):[0-5]\d$",
    )
    fhir_page_size: int = Field(
        20, ge=1, description="FHIR search results per page when the client sends no _count."
    )

    @field_validator("ae_title")
    @classmethod
    def _ae_title_fits_dicom(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > 16 or "\\" in value:
            raise ValueError(
                f"AE title {value!r} must be 1 to 16 characters without backslash (PS3.5 AE VR)"
            )
        return value

    @property
    def index_url(self) -> str:
        """The SQLAlchemy URL actually used for the index."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    def base_url(self, http_port: int | None = None) -> str:
        """Public base URL, without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.http_host if self.http_host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{http_port if http_port is not None else self.http_port}"

