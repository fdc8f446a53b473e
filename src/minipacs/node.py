"""One minipacs node: settings in, archive plus DIMSE and HTTP servers running."""

from __future__ import annotations

import json
import logging
import socket
import ssl
from pathlib import Path

import uvicorn

from minipacs.ae_registry import AERegistry
from minipacs.archive import Archive
from minipacs.config import Settings
from minipacs.dimse.server import start_dimse_server, tls_context
from minipacs.folder_import import import_files, iter_files
from minipacs.index.database import create_index_engine
from minipacs.storage import create_store
from minipacs.storage.scratch import stow_spool, sweep_folders
from minipacs.web.app import create_app
from minipacs.worklist import Worklist

log = logging.getLogger(__name__)


def open_archive(settings: Settings) -> Archive:
    """The archive the settings describe (creating folders and tables as needed)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Archive(
        create_store(settings),
        create_index_engine(settings.index_url),
        write_engine=create_index_engine(settings.index_url, writer=True),
        duplicate_policy=settings.duplicate_policy,
        max_query_results=settings.max_query_results,
    )


def load_samples(archive: Archive, sample_dir: Path) -> None:
    files = list(iter_files([sample_dir]))
    summary = import_files(archive, [f for f in files if f.suffix == ".dcm"],
                           received_from="sample_dicom")
    log.info("loaded sample studies from %s: %d stored, %d rejected", sample_dir,
             summary.stored, len(summary.rejected))


def dicom_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS for the DICOM port when a certificate and key are configured."""
    if settings.dicom_tls_cert is None and settings.dicom_tls_key is None:
        return None
    if settings.dicom_tls_cert is None or settings.dicom_tls_key is None:
        raise SystemExit("DICOM TLS needs both MINIPACS_DICOM_TLS_CERT and "
                         "MINIPACS_DICOM_TLS_KEY (PEM files)")
    return tls_context(settings.dicom_tls_cert, settings.dicom_tls_key, settings.dicom_tls_ca)


def bind_http(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> None:
    """Run until interrupted: DIMSE in background threads, HTTP in this thread."""
    archive = open_archive(settings)  # its blob store sweeps its own temp files
    sweep_folders(stow_spool(settings.data_dir))  # STOW-RS bodies of killed requests
    if settings.load_samples and settings.sample_dir.is_dir() and archive.is_empty():
        load_samples(archive, settings.sample_dir)
    http_sock = bind_http(settings.http_host, settings.http_port)
    http_port = http_sock.getsockname()[1]
    # One registry and one worklist per node, shared by both doors (built once: each
    # construction would otherwise re-run the schema upgrade and own its sessions).
    registry = AERegistry(archive.engine, archive.write_engine)
    worklist = Worklist(archive.engine, archive.write_engine)
    dimse = start_dimse_server(
        archive, settings.ae_title, settings.dicom_host, settings.dicom_port,
        registry, worklist,
        registered_aes_only=settings.dicom_registered_aes_only,
        ssl_context=dicom_tls_context(settings),
    )
    dicom_port = dimse.server_address[1]
    app = create_app(archive, settings.model_copy(update={"http_port": http_port}),
                     registry=registry, worklist=worklist)
    config = uvicorn.Config(app, log_level=settings.log_level.lower(), access_log=False,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    base = settings.base_url(http_port)
    counts = archive.counts()

    def announce() -> None:
        print(
            f"\nminipacs is running ({counts['studies']} studies, {counts['instances']} "
            f"instances in {settings.data_dir})\n"
            f"  DICOM   AE title {settings.ae_title}, port {dicom_port} "
            f"(e.g. echoscu -aec {settings.ae_title} 127.0.0.1 {dicom_port})\n"
            f"  Viewer  {base}/viewer/\n"
            f"  DICOMweb {base}/dicom-web/studies\n"
            f"  API docs {base}/docs\n"
            "Press Ctrl+C to stop.",
            flush=True,
        )
        if settings.ready_file:
            # Written aside then renamed: a poller never reads a half-written file.
            partial = settings.ready_file.with_name(settings.ready_file.name + ".partial")
            partial.write_text(
                json.dumps({"dicom_port": dicom_port, "http_port": http_port, "url": base})
            )
            partial.replace(settings.ready_file)

    original_startup = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original_startup(sockets=sockets)
        announce()

    server.startup = startup  # type: ignore[method-assign]
    try:
        server.run(sockets=[http_sock])
    finally:
        dimse.shutdown()
        log.info("minipacs stopped")
