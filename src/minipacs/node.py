"""One minipacs node: settings in, archive plus DIMSE and HTTP servers running."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import ssl
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from minipacs.access.accounts import AccountPolicy, Accounts
from minipacs.access.principal import system_principal
from minipacs.access.tags import parse_rules
from minipacs.ae_registry import AERegistry
from minipacs.archive import Archive
from minipacs.audit.alerts import AlertMonitor, AlertRules
from minipacs.audit.forward import SyslogForwarder
from minipacs.config import Settings
from minipacs.dimse.outgoing import OutgoingTransport
from minipacs.dimse.server import start_dimse_server
from minipacs.dimse.spool_files import spool_incoming_datasets, sweep_incoming_datasets
from minipacs.dimse.transport_limits import TransportLimits
from minipacs.emr.fhir_push import FhirPush, PushSettings
from minipacs.folder_import import import_files, iter_files
from minipacs.hl7.oru_sender import OruSender, OruSettings
from minipacs.hl7.server import start_hl7_listener
from minipacs.index.database import create_index_engine
from minipacs.patient_identity import IdentitySystems
from minipacs.periodic import PeriodicTask
from minipacs.reports.signing import load_report_signer
from minipacs.storage import create_store
from minipacs.storage.scratch import stow_spool, sweep_folders
from minipacs.tls import client_context, configured_server_context
from minipacs.web.app import create_app
from minipacs.web.request_bounds import header_limited_protocol
from minipacs.worklist import Worklist

log = logging.getLogger(__name__)


def worker_header(app: Any) -> Any:
    """ASGI wrapper adding `X-Minipacs-Worker: <pid>` to every HTTP response."""
    value = str(os.getpid()).encode()

    async def with_header(scope: Any, receive: Any, send: Any) -> None:
        async def send_with_pid(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                   (b"x-minipacs-worker", value)]}
            await send(message)

        await app(scope, receive, send_with_pid if scope["type"] == "http" else send)

    return with_header


def open_archive(settings: Settings) -> Archive:
    """The archive the settings describe (creating folders and tables as needed)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Archive(
        create_store(settings),
        create_index_engine(settings.index_url),
        write_engine=create_index_engine(settings.index_url, writer=True),
        duplicate_policy=settings.duplicate_policy,
        max_query_results=settings.max_query_results,
        access_tag_rules=parse_rules(settings.access_tag_rules),
    )


def load_samples(archive: Archive, sample_dir: Path) -> None:
    files = list(iter_files([sample_dir]))
    summary = import_files(archive.acting_as(system_principal("sample-preload")),
                           [f for f in files if f.suffix == ".dcm"],
                           received_from="sample_dicom")
    log.info("loaded sample studies from %s: %d stored, %d rejected", sample_dir,
             summary.stored, len(summary.rejected))


def dicom_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS for the DICOM port when a certificate and key are configured."""
    return configured_server_context("DICOM TLS", "MINIPACS_DICOM_TLS",
                                     settings.dicom_tls_cert, settings.dicom_tls_key,
                                     settings.dicom_tls_ca)


def transport_limits(settings: Settings) -> TransportLimits:
    return TransportLimits(
        max_pdu_length=settings.dicom_max_pdu_length,
        artim_timeout=settings.dicom_artim_timeout,
        pdu_timeout=settings.dicom_pdu_timeout,
        max_associations=settings.dicom_max_associations,
        max_connections=settings.dicom_max_connections,
        max_connections_per_address=settings.dicom_max_connections_per_address,
        network_timeout=settings.dicom_network_timeout,
    )


def listen_on(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port) (port 0: a free one): the HTTP port, and in
    the supervisor of `serve --workers N` each port its workers accept on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def http_parser_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options bounding what one request head may cost: at most
    `http_max_header_bytes` read, 431 beyond (uvicorn's parsers have no such bound)."""
    return {"http": header_limited_protocol(settings.http_max_header_bytes)}


def http_tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's HTTPS options when both a certificate and a key are configured."""
    cert, key = settings.http_tls_cert, settings.http_tls_key
    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        raise SystemExit("HTTPS needs both MINIPACS_HTTP_TLS_CERT and MINIPACS_HTTP_TLS_KEY "
                         f"(PEM files); only {'the certificate' if key is None else 'the key'}"
                         " is set")
    for name, path in (("MINIPACS_HTTP_TLS_CERT", cert), ("MINIPACS_HTTP_TLS_KEY", key)):
        if not path.is_file():
            raise SystemExit(f"{name}={str(path)!r} is not a readable file")
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


def start_fhir_push(archive: Archive, settings: Settings, public_base: str
                    ) -> FhirPush | None:
    """The FHIR push worker when FHIR_PUSH_URL is set (emr/fhir_push.py)."""
    push = PushSettings.from_settings(settings)
    if push is None:
        return None
    log.info("FHIR push to %s: studies stable for %s s", push.url,
             settings.fhir_push_stable_seconds)
    return FhirPush(archive, push, IdentitySystems.from_settings(settings),
                    public_base=public_base, timezone=settings.fhir_timezone)


def start_oru_sender(archive: Archive, settings: Settings) -> OruSender | None:
    """The ORU^R01 sender when MINIPACS_HL7_REPORT_PEER is set and this node sends
    (hl7/oru_sender.py; one node of those sharing an index, worker 0 of several)."""
    oru = OruSettings.from_settings(settings)
    if oru is None or not settings.hl7_report_sender:
        return None
    log.info("signed reports go as HL7 ORU^R01 to the MLLP peer %s", oru.peer)
    return OruSender(archive, oru, IdentitySystems.from_settings(settings),
                     settings.identity_hospital_type)


def serve(settings: Settings) -> None:
    """Run until interrupted: DIMSE in background threads, HTTP in this thread; with
    more than one worker (`Settings.worker_processes`: by default one per core), that
    many such processes on the same ports (`minipacs.workers`)."""
    workers = settings.worker_processes()
    if workers > 1:
        from minipacs.workers import serve_workers

        serve_workers(settings.model_copy(update={"workers": workers}))
        return
    run_node(settings.model_copy(update={"workers": 1}))


def start_banner(settings: Settings, counts: dict[str, int], base: str, dicom_port: int | None,
                 dicom_tls_port: int | None, hl7_port: int | None,
                 one_time_password: str | None, not_durable: list[str],
                 worker_pids: list[int] | None = None) -> str:
    """What `serve` prints once it answers: where to reach it, the admin's one-time
    password, warnings; `worker_pids` for `serve --workers N`."""
    running = (f"with {len(worker_pids)} workers (pids {', '.join(map(str, worker_pids))}; "
               if worker_pids else "(")
    if dicom_tls_port is not None and dicom_port == dicom_tls_port:  # TLS only
        # With a CA the server asks for the peer's certificate (dcmtk: +tls key cert).
        peer = (f"+tls YOUR-KEY.pem YOUR-CERT.pem +cf {settings.dicom_tls_ca}"
                if settings.dicom_tls_ca else f"+tla +cf {settings.dicom_tls_cert}")
        dicom = (f"TLS port {dicom_port} (e.g. echoscu {peer} -aec {settings.ae_title} "
                 f"127.0.0.1 {dicom_port})")
    else:
        dicom = (f"port {dicom_port} (e.g. echoscu -aec {settings.ae_title} 127.0.0.1 "
                 f"{dicom_port})"
                 f"{f', TLS port {dicom_tls_port}' if dicom_tls_port is not None else ''}")
    return (
        f"\nminipacs is running {running}{counts['studies']} studies, "
        f"{counts['instances']} instances in {settings.data_dir})\n"
        f"  DICOM   AE title {settings.ae_title}, {dicom}\n"
        + (f"  HL7 v2  MLLP port {hl7_port}"
           f"{', TLS' if settings.hl7_tls_cert and settings.hl7_tls_key else ''}"
           f"{' (worker 0)' if worker_pids else ''}\n"
           if hl7_port is not None else "") +
        f"  Viewer  {base}/viewer/\n"
        f"  DICOMweb {base}/dicom-web/studies\n"
        f"  API docs {base}/docs\n"
        + (f"  Accounts: none yet, so 'admin' was created with the one-time password\n"
           f"           {one_time_password}\n"
           f"           (shown only now; it must be changed at first login)\n"
           if one_time_password else "")
        + ("  WARNING: MINIPACS_AUTH=off, no login is required\n"
           if settings.auth == "off" else "")
        + "".join(f"  WARNING: {problem}\n" for problem in not_durable)
        + "Press Ctrl+C to stop."
    )


async def _warm_up(app: Any) -> None:
    """One request through the whole HTTP stack before the node says it is ready, given
    to the ASGI app directly (no socket, no TLS). The first request a process serves
    builds Starlette's middleware stack, starts the threadpool's first thread and opens
    the first database connection: ~50 ms here, which otherwise fell on whichever client
    reached a fresh worker first."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/healthz", "raw_path": b"/healthz",
             "query_string": b"", "root_path": "", "headers": [(b"host", b"127.0.0.1")],
             "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0)}
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    try:
        await app(scope, receive, send)
    except Exception as exc:  # a warm-up only: the node serves without it
        log.warning("HTTP warm-up request failed: %s", exc)
        return
    if status != [200]:
        log.warning("HTTP warm-up request answered %s", status)


def _exit_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)  # a stop asked for and done: the `finally` of run_node runs


def run_node(settings: Settings, *,
             listening: dict[str, socket.socket] | None = None) -> None:
    """One node until interrupted. A worker of `serve --workers N` is given its
    supervisor's `listening` sockets ("http_port", "dicom_port", "dicom_tls_port") to
    accept on, leaves start-up chores (samples, the one-time admin password, the
    banner) to its supervisor, and says which process answered each HTTP request in an
    `X-Minipacs-Worker` header."""
    worker = listening is not None
    https = http_tls_options(settings)  # a half-configured HTTPS stops us before anything
    report_signer = load_report_signer(settings)  # a bad certificate stops us here too
    archive = open_archive(settings)  # its blob store sweeps its own temp files
    # Success is answered once a row commits; that is a promise only if commits are
    # durable. A site's database settings can break it: say so at every start.
    not_durable = archive.durability_problems()
    for problem in not_durable:
        log.warning("the index does not keep acknowledged instances safe: %s. Change this "
                    "setting on the database server (docs/deployment.md, \"Durability\").",
                    problem)
    sweep_folders(stow_spool(settings.data_dir))  # STOW-RS bodies of killed requests
    if not worker and settings.load_samples and settings.sample_dir.is_dir() \
            and archive.is_empty():
        load_samples(archive, settings.sample_dir)
    http_sock = (listening["http_port"] if listening is not None
                 else listen_on(settings.http_host, settings.http_port))
    http_port = http_sock.getsockname()[1]
    # One registry and one worklist per node, shared by both doors (built once: each
    # construction would otherwise re-run the schema upgrade and own its sessions).
    registry = AERegistry(archive.engine, archive.write_engine)
    worklist = Worklist(archive.engine, archive.write_engine)
    ssl_context = dicom_tls_context(settings)
    if settings.dicom_tls_port is not None and ssl_context is None:
        raise SystemExit("MINIPACS_DICOM_TLS_PORT needs MINIPACS_DICOM_TLS_CERT and "
                         "MINIPACS_DICOM_TLS_KEY (PEM files)")
    # C-STORE datasets go to disk as they arrive, next to the blobs (bounded memory).
    incoming = settings.data_dir / "incoming"
    spool_files = spool_incoming_datasets(incoming)
    sweep_incoming_datasets(incoming, settings.dicom_network_timeout)
    dimse = start_dimse_server(
        archive, settings.ae_title, settings.dicom_host, settings.dicom_port,
        registry, worklist,
        registered_aes_only=settings.dicom_registered_aes_only,
        ssl_context=ssl_context,
        tls_port=settings.dicom_tls_port,
        limits=transport_limits(settings),
        outgoing=OutgoingTransport(client_context(
            settings.dicom_tls_ca, settings.dicom_tls_cert, settings.dicom_tls_key)),
        listening=listening,
    )
    # The port the ready file and banner call "dicom_port": the plain one, or the TLS
    # one when that is all there is (a certificate and no DICOM_TLS_PORT).
    dicom_port = dimse.plain_port if dimse.plain_port is not None else dimse.tls_port
    dicom_tls_port = dimse.tls_port
    hl7 = start_hl7_listener(settings, archive, worklist)  # None: MINIPACS_HL7_PORT unset
    hl7_port = hl7.port if hl7 is not None else None
    accounts = Accounts(archive.engine, archive.write_engine,
                        AccountPolicy.from_settings(settings))
    one_time_password = accounts.ensure_admin() if settings.auth == "on" else None
    if settings.auth == "off":
        log.warning("MINIPACS_AUTH=off: anyone who reaches %s can read and delete every "
                    "patient's images. Use this only on an isolated test network; access "
                    "is still audited.", settings.base_url(http_port))
    alerts = AlertMonitor(archive.engine, archive.write_engine,
                          AlertRules.from_settings(settings))
    background = [
        PeriodicTask("alert-scan", alerts.scan, settings.alert_scan_seconds),
        PeriodicTask("incoming-sweep", lambda: sweep_incoming_datasets(
            incoming, settings.dicom_network_timeout), 3600),
    ]
    if settings.audit_syslog:
        forwarder = SyslogForwarder.from_settings(archive.engine, archive.write_engine,
                                                  settings)
        background.append(PeriodicTask("audit-syslog", forwarder.forward_pending,
                                       settings.audit_syslog_seconds))
    if settings.audit_retention_days:
        days = settings.audit_retention_days
        keeper = archive.acting_as(system_principal("audit-retention"))
        background.append(PeriodicTask("audit-retention",
                                       lambda: keeper.prune_audit(days), 3600))
    fhir_push = start_fhir_push(archive, settings, settings.base_url(http_port))
    if fhir_push is not None:
        background.append(PeriodicTask("fhir-push", fhir_push.run_once,
                                       settings.fhir_push_interval_seconds))
    oru_sender = start_oru_sender(archive, settings)
    if oru_sender is not None:
        background.append(PeriodicTask("hl7-oru", oru_sender.run_once,
                                       settings.hl7_report_interval_seconds))
    for task in background:
        task.start()
    app: Any = create_app(archive, settings.model_copy(update={"http_port": http_port}),
                          registry=registry, worklist=worklist, accounts=accounts,
                          alerts=alerts)
    app.state.report_signer = report_signer  # PAdES of report PDFs (None: off)
    if worker:
        app = worker_header(app)
    config = uvicorn.Config(app, log_level=settings.log_level.lower(), access_log=False,
                            timeout_graceful_shutdown=5, **http_parser_options(settings),
                            **https)
    if config.is_ssl:
        config.load()
        assert config.ssl is not None
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8996: no TLS 1.0/1.1
    server = uvicorn.Server(config)
    base = settings.base_url(http_port)
    counts = archive.counts()

    def announce() -> None:
        if worker:
            log.info("worker pid %d serving DICOM port %s, HTTP port %s", os.getpid(),
                     dicom_port, http_port)
        else:
            print(start_banner(settings, counts, base, dicom_port, dicom_tls_port, hl7_port,
                               one_time_password, not_durable), flush=True)
        if settings.ready_file:
            # Written aside then renamed: a poller never reads a half-written file.
            partial = settings.ready_file.with_name(settings.ready_file.name + ".partial")
            partial.write_text(
                json.dumps({"dicom_port": dicom_port, "dicom_tls_port": dicom_tls_port,
                            "http_port": http_port, "hl7_port": hl7_port, "url": base})
            )
            partial.replace(settings.ready_file)

    original_startup = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original_startup(sockets=sockets)
        await _warm_up(app)
        announce()

    server.startup = startup  # type: ignore[method-assign]
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # uvicorn stops on SIGTERM, then raises it again with the handler it found: by
        # default that ended the process before the `finally` below could stop our
        # threads and remove the spool files made ahead.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # What start-up built lives as long as the node: out of the collector's sight, a
    # full collection (Python's own, now and then) scans only what came after it, a
    # fraction of a millisecond instead of ~120 ms holding the GIL, every association
    # and request stalled meanwhile.
    gc.collect()
    gc.freeze()
    try:
        server.run(sockets=[http_sock])
    finally:
        for task in background:
            task.stop()
        dimse.shutdown()
        spool_files.close()
        if hl7 is not None:
            hl7.shutdown()
        log.info("minipacs stopped")
