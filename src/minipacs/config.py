"""Every setting minipacs has, its default, and its ``MINIPACS_`` environment variable.

`Settings` is built once (by the CLI, or by a test) and passed down; nothing reads the
environment anywhere else. Each field also becomes a ``minipacs serve`` flag: the field
``dicom_port`` is ``--dicom-port`` and ``MINIPACS_DICOM_PORT``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_REPO_SAMPLES = Path(__file__).resolve().parents[2] / "sample_dicom"
# `serve` on its defaults runs one worker per core up to this many: each is a full node
# with its own memory, and beyond four cores the index (SQLite's one writer, or the
# database server's own cores) limits ingest before Python does.
AUTO_WORKERS_MAX = 4


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
    alert_patients_per_hour: int = Field(
        50, ge=1, description="Alert when one principal opens more patients' studies than "
        "this within an hour.")
    alert_downloads_per_hour: int = Field(
        100, ge=1, description="Alert when one principal downloads more studies than this "
        "within an hour.")
    alert_failed_logins: int = Field(
        10, ge=1, description="Alert when more logins than this fail from one address "
        "within 15 minutes.")
    alert_share_addresses: int = Field(
        3, ge=1, description="Alert when one share link is used from more addresses.")
    alert_working_hours: str = Field(
        "06:00-20:00", pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$",
        description="Reading patient data outside these local hours raises an alert.")
    alert_timezone: str = Field(
        "Asia/Ho_Chi_Minh", description="Time zone of the working hours.")
    alert_scan_seconds: float = Field(
        30, gt=0, description="How often each node checks the audit trail for alerts.")
    audit_syslog: str | None = Field(
        None, pattern=r"^[^:\s]+:\d{1,5}$",
        description="HOST:PORT of a syslog collector (SIEM, the provincial security "
        "operations centre) to send every audit event to, as DICOM audit messages in "
        "RFC 5424 syslog over TLS (RFC 5425), e.g. siem.soyte.gov.vn:6514.")
    audit_syslog_tls: bool = Field(
        True, description="Use TLS to the syslog collector (turn off only for a collector "
        "on the same machine).")
    audit_syslog_ca: Path | None = Field(
        None, description="PEM CA bundle that signed the collector's certificate (default: "
        "the system's trusted CAs).")
    audit_syslog_seconds: float = Field(
        2, gt=0, description="How often new audit events are sent to the collector.")
    audit_retention_days: int | None = Field(
        None, ge=30, description="Delete audit events older than this many days (checked "
        "hourly; the chain stays verifiable and the pruning is itself recorded). Unset: keep "
        "them forever. Set it no lower than your regulations require.")
    audit_key: str | None = Field(
        None,
        description="Secret that signs audit-trail checkpoints (kept outside the database). "
        "Every node of a cluster needs the same; default: DATA_DIR/audit.key, created on "
        "first use (the first checkpoint, or `minipacs audit verify`). Not in backups: "
        "keep a copy with your other secrets.",
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

    # --- DICOM listeners and transport limits (issue #10, DIMSE stream) ---
    dicom_tls_port: int | None = Field(
        None, ge=0, le=65535,
        description="With DICOM_TLS_CERT and DICOM_TLS_KEY: a second DICOM port that speaks "
        "TLS while DICOM_PORT stays plain TCP (0: any free port). Unset: DICOM_PORT itself "
        "speaks TLS when a certificate is configured.",
    )
    dicom_max_associations: int = Field(
        32, ge=1, le=500,
        description="Most DICOM associations at once (both ports); one more is rejected "
        "with A-ASSOCIATE-RJ, transient, local limit exceeded.",
    )
    dicom_max_connections: int = Field(
        400, ge=2, le=900,
        description="Most open DICOM connections at once (both ports, including those not "
        "yet associated); more are closed on accept. Each costs three threads; keep it "
        "well below the open-file limit.",
    )
    dicom_max_connections_per_address: int = Field(
        32, ge=1, le=900,
        description="Most open DICOM connections from one remote IP address; more are "
        "closed on accept.",
    )
    dicom_artim_timeout: float = Field(
        10.0, gt=0, le=600,
        description="Seconds a new DICOM connection has to finish its TLS handshake and "
        "send its A-ASSOCIATE-RQ (ARTIM timer, PS3.8 9.1.5); also the wait for A-ASSOCIATE "
        "and A-RELEASE answers.",
    )
    dicom_pdu_timeout: float = Field(
        30.0, gt=0, le=3600,
        description="Seconds within which a DICOM PDU, once begun, must arrive whole, and "
        "within which a send to a peer must make progress; else the connection is closed.",
    )
    dicom_max_pdu_length: int = Field(
        1024 * 1024, ge=16384, le=64 * 1024 * 1024,
        description="Maximum PDU length we advertise (PS3.8 D.1) and accept, in bytes; a "
        "longer PDU is answered with A-ABORT. Bounds the memory one association holds.",
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
    # issue #11 TOTP second factor for administrators
    auth_admin_totp: Literal["optional", "required"] = Field(
        "optional",
        description="Second factor (TOTP, RFC 6238) for administrators. 'required' (the VN "
        "level-3 preset): an admin without one may log in only to enrol "
        "(POST /auth/totp/enroll, then /auth/totp/confirm). 'optional': only accounts "
        "enrolled with `minipacs user totp NAME` need a code.",
    )

    # --- issue #11 (HTTPS and security headers of the HTTP door) ---
    http_tls_cert: Path | None = Field(
        None, description="PEM certificate (chain) for HTTPS on the HTTP port; with "
        "HTTP_TLS_KEY the port speaks only HTTPS (TLS 1.2 or later) and sends HSTS.",
    )
    http_tls_key: Path | None = Field(
        None, description="PEM private key of HTTP_TLS_CERT.",
    )
    frame_ancestors: str = Field(
        "'none'",
        description="Who may show our pages in a frame (CSP frame-ancestors): 'none', "
        "'self', or space-separated origins, e.g. https://emr.example.org for an EMR that "
        "embeds the viewer.",
    )
    viewer_connect_origins: str = Field(
        "",
        description="Other DICOMweb origins the viewer may fetch from with ?server= "
        "(CSP connect-src), comma-separated, e.g. https://pacs2.example.org; empty: only "
        "this server.",
    )
    # --- issue #13, ingest throughput (ingest-speed stream) ---
    workers: int = Field(
        0, ge=0, le=64,
        description="Node processes `minipacs serve` runs on this machine, sharing the DICOM "
        "and HTTP ports (one queue of connections, taken by whichever worker is free): one "
        "Python process uses one core. 0 (the default): one per core this process may run "
        f"on, at most {AUTO_WORKERS_MAX}; 1: a single process. Each is a full node on the "
        "same index and blob store, with its own memory (~230 MB under load).",
    )

    def worker_processes(self) -> int:
        """How many node processes `serve` runs: `workers`, or when it is 0 one per core
        this process may run on (its CPU affinity), at most AUTO_WORKERS_MAX."""
        if self.workers:
            return self.workers
        return max(1, min(len(os.sched_getaffinity(0)), AUTO_WORKERS_MAX))

    # --- issue #11 (single sign-on with OpenID Connect; access/oidc.py, web/oidc.py) ---
    oidc_issuer: str = Field(
        "", description="OpenID Provider's issuer URL, e.g. "
        "https://sso.example.org/realms/hospital (Keycloak); its "
        "/.well-known/openid-configuration is read at first use. Empty: single sign-on off.",
    )
    oidc_client_id: str = Field("", description="minipacs' client id at the provider.")
    oidc_client_secret: str = Field(
        "", description="minipacs' client secret at the provider (confidential client); "
        "empty for a public client (PKCE only).",
    )
    oidc_scopes: str = Field(
        "openid profile", description="Scopes asked for at sign-in, space-separated "
        "(must include openid).",
    )
    oidc_audience: str = Field(
        "", description="The 'aud' an API caller's access token (Bearer JWT) must carry; "
        "empty: the client id.",
    )
    oidc_username_claim: str = Field(
        "preferred_username", description="Claim whose value becomes the minipacs user "
        "name (the 'sub' claim when the token has none).",
    )
    oidc_roles_claim: str = Field(
        "roles", description="Claim holding the user's roles or groups; a dotted path "
        "reaches into objects, e.g. realm_access.roles (Keycloak realm roles).",
    )
    oidc_role_map: str = Field(
        "", description="Provider role or group → minipacs role, comma-separated "
        "NAME=ROLE pairs, e.g. 'pacs-admin=admin,pacs-radiologist=radiologist'; the first "
        "pair whose NAME the token carries decides. A token matching none is refused.",
    )
    oidc_provider_name: str = Field(
        "OpenID Connect", description="How the viewer's sign-in button names the "
        "provider ('Sign in with ...').",
    )
    oidc_clock_skew_seconds: int = Field(
        30, ge=0, le=300, description="Leeway for 'exp', 'iat' and 'nbf' of tokens from "
        "the provider (clock drift between machines).",
    )
    # --- issue #12, keeping the EMR in sync (emr/fhir_push.py): the FHIR push ---
    fhir_push_url: str | None = Field(
        None, description="Base URL of the hospital's FHIR R4 server, e.g. "
        "https://emr.example.org/fhir: each study, once stable, is created or updated "
        "there as Patient + ImagingStudy (a transaction Bundle). Unset: no push.",
    )
    fhir_push_token: str | None = Field(
        None, description="Bearer token sent to FHIR_PUSH_URL (Authorization: Bearer).",
    )
    fhir_push_username: str | None = Field(
        None, description="User for HTTP Basic auth at FHIR_PUSH_URL (with "
        "FHIR_PUSH_PASSWORD; ignored when FHIR_PUSH_TOKEN is set).",
    )
    fhir_push_password: str | None = Field(
        None, description="Password for HTTP Basic auth at FHIR_PUSH_URL.",
    )
    fhir_push_stable_seconds: float = Field(
        300.0, ge=0, description="A study is pushed once no instance has arrived for "
        "this many seconds (it is then 'stable').",
    )
    fhir_push_interval_seconds: float = Field(
        5.0, gt=0, description="How often a node looks for studies to push.",
    )
    fhir_push_retry_seconds: float = Field(
        30.0, gt=0, description="Wait before the first retry of a failed push; each "
        "further failure doubles it, up to FHIR_PUSH_RETRY_MAX_SECONDS.",
    )
    fhir_push_retry_max_seconds: float = Field(
        3600.0, gt=0, description="Longest wait between retries of a failed push.",
    )
    fhir_push_timeout_seconds: float = Field(
        30.0, gt=0, description="Timeout of each request to FHIR_PUSH_URL.",
    )

    # --- issue #11 (access tags: which studies a principal limited to tags sees) ---
    access_tag_rules: str = Field(
        "",
        description="Rules giving studies access tags at store, as a JSON list of "
        '{"attribute": DICOM keyword, "pattern": value with * and ? wildcards '
        '(case-insensitive), "tag": tag}, e.g. [{"attribute": '
        '"InstitutionalDepartmentName", "pattern": "CARDIO*", "tag": "cardio"}]. '
        "Users, tokens and AEs limited to tags see only studies carrying one of theirs.",
    )

    @field_validator("access_tag_rules")
    @classmethod
    def _access_tag_rules_parse(cls, value: str) -> str:
        from minipacs.access.tags import parse_rules

        parse_rules(value)  # raises ValueError saying which rule is wrong and how
        return value

    # --- issue #12, HL7 v2 over MLLP (hl7 stream) ---
    hl7_host: str = Field("0.0.0.0", description="Address the HL7 v2 (MLLP) port binds to.")
    hl7_port: int | None = Field(
        None, ge=0, le=65535,
        description="HL7 v2 over MLLP port for orders (ORM^O01, OMI^O23) and patient "
        "updates (ADT^A08/A31/A40); unset: no HL7 listener; 0: any free port.",
    )
    hl7_allowed_senders: str = Field(
        "",
        description="Who may send HL7 messages, comma-separated MSH-3^MSH-4 (sending "
        "application^facility), each optionally @IP, e.g. HIS^BVCR@10.0.0.5,RIS^BVCR; they "
        "act with the 'emr' role. Empty: every message is refused (AR).",
    )
    hl7_max_message_bytes: int = Field(
        1024 * 1024, ge=1024,
        description="Longest HL7 message accepted (bytes inside one MLLP frame); a longer "
        "one is answered AR and its connection closed.",
    )
    hl7_max_connections: int = Field(
        32, ge=1,
        description="MLLP connections served at once; one more is closed on arrival.",
    )
    hl7_idle_timeout: float = Field(
        300.0, gt=0,
        description="Seconds an MLLP connection may stay silent (or stall inside a frame) "
        "before it is closed.",
    )
    hl7_tls_cert: Path | None = Field(
        None,
        description="PEM certificate: with HL7_TLS_KEY the MLLP port speaks only TLS (1.2 "
        "or later; IHE ATNA secure node), and it is presented to the ORU^R01 peer when "
        "HL7_REPORT_TLS asks for TLS there.",
    )
    hl7_tls_key: Path | None = Field(None, description="PEM private key of HL7_TLS_CERT.")
    hl7_tls_ca: Path | None = Field(
        None,
        description="PEM CA bundle: with HL7_TLS_CERT and _KEY, HL7 senders must present a "
        "certificate it signed (mutual TLS).",
    )
    # --- reports (issue #14: reports/, web/fhir_reports.py)
    report_hospital_name: str = Field(
        "minipacs",
        description="The hospital header printed at the top of every signed report's PDF "
        "(e.g. 'Bệnh viện Chợ Rẫy - Khoa Chẩn đoán hình ảnh').",
    )
    # --- MPR (issue #14 reading: volumes.py, dicom/mpr.py, web/mpr.py)
    mpr_cache_bytes: int = Field(
        1024 * 1024 * 1024, ge=0,
        description="Memory (bytes of voxels) kept for series volumes built for multiplanar "
        "reconstruction, least recently used dropped first; a 300-slice 512x512 CT takes "
        "157 MB. Per server process (each of `serve --workers N` keeps its own). 0 keeps "
        "none (every reslice request rebuilds its volume).",
    )
    mpr_max_volume_bytes: int = Field(
        768 * 1024 * 1024, ge=1024,
        description="Largest series volume (bytes of voxels: images x rows x columns x "
        "bytes per pixel) that is reconstructed; a larger one is refused with a 400 naming "
        "its size.",
    )
    # --- issue #13, no stalled associations (memory-stalls stream) ---
    dicom_network_timeout: float = Field(
        120.0, gt=0, le=3600,
        description="Seconds an established DICOM association may stay silent while we "
        "wait for the peer (no PDU from it since its last one or our last message) before "
        "it is aborted; time we spend answering a request does not count.",
    )
    # --- insurance claims (issue #14: reports/claims.py, web/claims.py)
    claim_machine_codes: str = Field(
        "",
        description="Machine codes (MA_MAY of QĐ 130/QĐ-BYT XML3) per imaging device: "
        "'KEY=CODE' pairs separated by commas or a JSON object, where KEY is a device's "
        "Station Name (0008,1010), Device Serial Number (0018,1000) or the order's "
        "scheduled station AE title, e.g. 'CT01=KSK.1.79071.123456'. Unmapped: MA_MAY empty.",
    )
    claim_timezone: str = Field(
        "Asia/Ho_Chi_Minh",
        description="Local time zone of the claim times (NGAY_YL, NGAY_TH_YL, NGAY_KQ, "
        "yyyyMMddHHmm): the signing and order times kept in UTC are given in it.",
    )
    # --- report delivery (issue #14: reports/signing.py; PAdES digital signature)
    report_signing_p12: Path | None = Field(
        None,
        description="A PKCS#12 (.p12/.pfx) file with the hospital's signing certificate and "
        "private key. When set, every signed or amended report's PDF carries a PAdES "
        "digital signature (ETSI EN 319 142, SHA-256) made with it; the server refuses to "
        "start when the file cannot be read, the password is wrong or the certificate is "
        "not valid today. Unset: PAdES off (signer, time and PDF SHA-256 only).",
    )
    report_signing_password: str = Field(
        "",
        description="The password of MINIPACS_REPORT_SIGNING_P12 (empty: none).",
    )

    # --- reports as HL7 v2 ORU^R01 over MLLP (issue #14: hl7/oru_sender.py)
    hl7_report_peer: str = Field(
        "",
        description="host:port of the MLLP peer (the EMR/RIS) that receives each signed "
        "or amended report as an HL7 v2.5 ORU^R01; empty: no ORU is sent.",
    )
    hl7_report_sending_application: str = Field(
        "MINIPACS", description="MSH-3 of the ORU^R01 sent (this PACS's application name).")
    hl7_report_sending_facility: str = Field(
        "", description="MSH-4 of the ORU^R01 sent (this hospital/department).")
    hl7_report_receiving_application: str = Field(
        "", description="MSH-5 of the ORU^R01 sent (the receiving EMR/RIS application).")
    hl7_report_receiving_facility: str = Field(
        "", description="MSH-6 of the ORU^R01 sent (the receiving facility).")
    hl7_report_include_pdf: bool = Field(
        False, description="Also send the signed PDF, base64, in an ED OBX of the ORU^R01.")
    hl7_report_tls: bool = Field(
        False,
        description="Send ORU^R01 over TLS (the peer's certificate checked against "
        "HL7_REPORT_TLS_CA or the system's CAs, and its name against HL7_REPORT_PEER's "
        "host; HL7_TLS_CERT shown if the peer asks for ours).",
    )
    hl7_report_tls_ca: Path | None = Field(
        None,
        description="PEM CA bundle the ORU^R01 peer's certificate is checked against "
        "(unset: the system's CAs). Kept apart from HL7_TLS_CA, which says who may send "
        "to us.",
    )
    hl7_report_timeout_seconds: float = Field(
        10.0, gt=0, description="Seconds one ORU^R01 send (connect, send, ACK) may take.")
    hl7_report_retry_seconds: float = Field(
        5.0, gt=0,
        description="Wait before resending an ORU^R01 that failed (refused connection, "
        "timeout, ACK AE/AR); doubled after each further failure.")
    hl7_report_retry_max_seconds: float = Field(
        300.0, gt=0, description="Longest wait between two attempts at one ORU^R01.")
    hl7_report_interval_seconds: float = Field(
        1.0, gt=0, description="How often the sender looks for reports to send.")
    hl7_report_sender: bool = Field(
        True,
        description="Whether this node runs the ORU^R01 sender (with several nodes on one "
        "index, turn it off on all but one; `serve --workers N` runs it in worker 0 only).",
    )

    @field_validator("hl7_report_peer")
    @classmethod
    def _hl7_report_peer_is_host_port(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"MINIPACS_HL7_REPORT_PEER {value!r} must be host:port "
                             "(port 1-65535), e.g. his.example.org:2575")
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
        scheme = "https" if self.http_tls_cert and self.http_tls_key else "http"
        return f"{scheme}://{host}:{http_port if http_port is not None else self.http_port}"

    @property
    def viewer_connect_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.viewer_connect_origins.split(",")
                if o.strip()]
