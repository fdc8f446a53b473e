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
        "off",
        description="Require accounts on the HTTP API ('on' is refused until accounts exist).",
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
    # --- HTTP bounds (issue #10, HTTP stream): what one request may cost.
    http_max_header_bytes: int = Field(
        65536,
        ge=1024,
        description="Largest request line plus header block the HTTP server reads, in "
        "bytes; a bigger one is answered 431 Request Header Fields Too Large and the "
        "connection closed (RFC 6585 §5).",
    )
    http_max_json_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest request body the JSON routes (admin API) accept, in bytes; a "
        "bigger one is answered 413 without being read. STOW-RS has its own limit, "
        "MAX_UPLOAD_BYTES.",
    )
    http_max_frames_per_request: int = Field(
        2048,
        ge=1,
        description="Most frame numbers one WADO-RS /frames/{list} request may name; a "
        "longer list is answered 400 (duplicates are refused too).",
    )

    @field_validator("auth")
    @classmethod
    def _auth_not_yet_available(cls, value: str) -> str:
        # Fail closed: accepting 'on' while nothing checks accounts would leave an admin
        # believing the HTTP API is protected when it is not.
        if value == "on":
            raise ValueError(
                "accounts are not implemented yet, so MINIPACS_AUTH=on cannot be honoured; "
                "run with auth off on a trusted network, or behind a reverse proxy that "
                "authenticates (protect /admin especially)"
            )
        return value

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
