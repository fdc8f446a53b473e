"""Access control (registered calling AEs only, IP pinning, per-AE rights) and DICOM TLS."""

from __future__ import annotations

import io
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from conftest import ServerProcess, require_tool
from dimse_peers import run_dcmtk, storescu
from factories import make_instance
from minipacs.config import Settings
from minipacs.node import dicom_tls_context
from minipacs.tls import server_context
from node_tools import minipacs_cli, server_settings
from test_commitment import Reports, _commit, _request

pytestmark = pytest.mark.door_only  # AE access rules and TLS are the DICOM door's


def _start(tmp_path: Path, *args: str) -> ServerProcess:
    proc = ServerProcess(tmp_path / "data", ["--no-load-samples", *args])
    proc.data_dir.mkdir()
    return proc.start()


@pytest.fixture
def guarded_server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = _start(tmp_path, "--dicom-registered-aes-only")
    yield proc
    proc.stop()


def _register(server: ServerProcess, title: str, **options: object) -> None:
    body = {"host": "127.0.0.1", "port": 104, **options}
    response = httpx.put(f"{server.http_url}/admin/ae/{title}", json=body, headers=server.auth)
    assert response.status_code == 200, response.text


def _associate(server: ServerProcess, calling: str) -> tuple[bool, tuple[int, int, int]]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    if assoc.is_established:
        assoc.release()
        return True, (0, 0, 0)
    rj = assoc.acceptor.primitive
    assert assoc.is_rejected and rj is not None
    return False, (rj.result, rj.result_source, rj.diagnostic)


def test_unknown_calling_ae_is_rejected_with_the_right_reason(
    guarded_server: ServerProcess
) -> None:
    accepted, reason = _associate(guarded_server, "STRANGER")
    # PS3.8 9.3.4: rejected-permanent, DICOM UL service-user, calling AE not recognized
    assert (accepted, reason) == (False, (0x01, 0x01, 0x03))
    echo = run_dcmtk("echoscu", "-aet", "STRANGER", "-aec", guarded_server.ae_title,
                     "127.0.0.1", str(guarded_server.dicom_port))
    assert echo.returncode != 0
    assert "Calling AE Title Not Recognized" in echo.stdout + echo.stderr
    assert "not registered" in guarded_server.log()
    _register(guarded_server, "STRANGER")
    assert _associate(guarded_server, "STRANGER")[0]


def test_pinned_ae_is_accepted_only_from_its_host(guarded_server: ServerProcess) -> None:
    _register(guarded_server, "PINNED", pin_ip=True)
    assert _associate(guarded_server, "PINNED")[0]
    _register(guarded_server, "PINNED", pin_ip=True, host="192.0.2.10")  # TEST-NET-1
    assert _associate(guarded_server, "PINNED") == (False, (0x01, 0x01, 0x03))


def test_rights_limit_what_a_registered_ae_may_do(
    guarded_server: ServerProcess, tmp_path: Path
) -> None:
    _register(guarded_server, "VIEWER", rights=["query"])
    path = tmp_path / "one.dcm"
    study = generate_uid()
    path.write_bytes(make_instance(study_uid=study))
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", guarded_server.dicom_port,
                         ae_title=guarded_server.ae_title)
    status = assoc.send_c_store(dcmread(path))
    assoc.release()
    assert status.Status == 0x0124  # Refused: Not Authorised
    assert "no 'store' right" in status.ErrorComment
    _register(guarded_server, "MODALITY", rights=["store"])
    assert storescu(guarded_server, path, extra=("-aet", "MODALITY")).returncode == 0

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    for calling, expected in (("VIEWER", [0xFF00, 0x0000]), ("MODALITY", [0x0124])):
        ae = AE(ae_title=calling)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", guarded_server.dicom_port,
                             ae_title=guarded_server.ae_title)
        statuses = [s.Status for s, _ in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind)]
        assoc.release()
        assert statuses == expected, calling


def test_a_right_withdrawn_stops_the_next_request_on_an_open_association(
    guarded_server: ServerProcess
) -> None:
    """The registry entry is read once per association for admission, charset options
    and the principal, but a right is checked against the registry at each request: a
    worklist or query client that keeps its association open loses the right at once."""
    _register(guarded_server, "POLLER", rights=["query"])
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = generate_uid()
    ae = AE(ae_title="POLLER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", guarded_server.dicom_port,
                         ae_title=guarded_server.ae_title)
    try:
        def statuses() -> list[int]:
            return [s.Status for s, _ in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind)]

        assert statuses() == [0x0000]
        _register(guarded_server, "POLLER", rights=["store"])
        assert statuses() == [0x0124]
    finally:
        assoc.release()


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        [require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert made.returncode == 0, made.stderr
    return cert, key


def test_dicom_tls_port_talks_to_tls_peers_only(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    server = _start(tmp_path, "--dicom-tls-cert", str(cert), "--dicom-tls-key", str(key))
    try:
        port = str(server.dicom_port)
        # The banner's example is a TLS one: a plain echoscu would fail here.
        assert (f"TLS port {port} (e.g. echoscu +tla +cf {cert} -aec {server.ae_title} "
                f"127.0.0.1 {port})") in server.log()
        dcmtk = run_dcmtk("echoscu", "+tla", "+cf", str(cert), "-aec", server.ae_title,
                          "127.0.0.1", port)
        assert dcmtk.returncode == 0, dcmtk.stdout + dcmtk.stderr
        plain = run_dcmtk("echoscu", "-to", "5", "-aec", server.ae_title, "127.0.0.1", port)
        assert plain.returncode != 0

        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        ae = AE(ae_title="TLSFIND")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title,
                             tls_args=(client, "localhost"))
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        query.PatientName = ""

        def found() -> list[tuple[int, str | None]]:
            return [(s.Status, None if ds is None else str(ds.PatientName))
                    for s, ds in assoc.send_c_find(query,
                                                   StudyRootQueryRetrieveInformationModelFind)]

        assert found() == [(0x0000, None)]
        stored = dcmread(io.BytesIO(make_instance()))
        assert assoc.send_c_store(stored).Status == 0x0000
        # Answers over TLS are written by the DUL's thread, never beside its reads.
        assert found() == [(0xFF00, "Nguyễn^Văn An"), (0x0000, None)]
        assoc.release()
    finally:
        server.stop()


def test_plain_and_tls_ports_side_by_side_and_silent_tls_peers_block_no_one(
    tmp_path: Path,
) -> None:
    cert, key = _certificate(tmp_path)
    server = _start(tmp_path, "--dicom-tls-cert", str(cert), "--dicom-tls-key", str(key),
                    "--dicom-tls-port", "0")
    held: list[socket.socket] = []
    try:
        ports = json.loads((server.data_dir / "ready.json").read_text())
        tls_port = ports["dicom_tls_port"]
        assert isinstance(tls_port, int) and tls_port not in (0, server.dicom_port)
        plain = run_dcmtk("echoscu", "-to", "5", "-aec", server.ae_title, "127.0.0.1",
                          str(server.dicom_port))
        assert plain.returncode == 0, plain.stdout + plain.stderr
        # Connections that never start the TLS handshake: the handshake runs in each
        # connection's own thread, so they hold no one else up.
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", tls_port), timeout=5)
            held.append(sock)
        started = time.monotonic()
        secure = run_dcmtk("echoscu", "+tla", "+cf", str(cert), "-aec", server.ae_title,
                           "127.0.0.1", str(tls_port))
        assert secure.returncode == 0, secure.stdout + secure.stderr
        assert time.monotonic() - started < 5
        refused = run_dcmtk("echoscu", "-to", "5", "-aec", server.ae_title, "127.0.0.1",
                            str(tls_port))
        assert refused.returncode != 0
    finally:
        for sock in held:
            sock.close()
        server.stop()


def test_tls_port_without_a_certificate_is_refused_at_start(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data", ["--no-load-samples", "--dicom-tls-port", "0"])
    proc.data_dir.mkdir()
    with pytest.raises(RuntimeError, match="MINIPACS_DICOM_TLS_PORT needs"):
        proc.start()


def test_a_tls_key_that_cannot_be_read_stops_the_start_naming_the_files(
        tmp_path: Path) -> None:
    cert, _ = _certificate(tmp_path)
    missing = tmp_path / "nope.key"
    settings = Settings(data_dir=tmp_path / "data", dicom_tls_cert=cert, dicom_tls_key=missing)
    with pytest.raises(SystemExit, match=f"cannot use the DICOM TLS certificate {cert} "
                                         f"with key {missing}: .*No such file"):
        dicom_tls_context(settings)


def test_cmove_reaches_a_destination_registered_with_tls_over_tls(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    server = _start(tmp_path, "--dicom-tls-cert", str(cert), "--dicom-tls-key", str(key),
                    "--dicom-tls-ca", str(cert), "--dicom-tls-port", "0")
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    destination = AE(ae_title="TLSDEST")
    destination.add_supported_context(CTImageStorage, ALL_TRANSFER_SYNTAXES)
    destination.add_supported_context(Verification)
    tls_server = destination.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)],
        ssl_context=server_context(cert, key))
    assert tls_server is not None
    try:
        study = generate_uid()
        stored = storescu(server, *_write(tmp_path, study, 2))
        assert stored.returncode == 0, stored.stderr

        def move() -> int:
            ae = AE(ae_title="MOVER")
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
            assert assoc.is_established
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "STUDY"
            identifier.StudyInstanceUID = study
            statuses = [int(s.Status) for s, _ in assoc.send_c_move(
                identifier, "TLSDEST", StudyRootQueryRetrieveInformationModelMove)]
            assoc.release()
            return statuses[-1]

        port = str(tls_server.server_address[1])
        settings = server_settings(server)
        # Registered as plain TCP: the TLS-only destination cannot be reached.
        assert minipacs_cli(settings, "ae", "add", "TLSDEST", "127.0.0.1", port
                            ).returncode == 0
        assert move() != 0x0000
        assert received == []
        added = minipacs_cli(settings, "ae", "add", "TLSDEST", "127.0.0.1", port, "--tls")
        assert added.returncode == 0, added.stdout + added.stderr
        assert "tls" in minipacs_cli(settings, "ae", "list").stdout
        assert move() == 0x0000
        assert len(received) == 2
    finally:
        tls_server.shutdown()
        server.stop()


def _write(folder: Path, study: str, count: int) -> list[Path]:
    paths = []
    for n in range(count):
        path = folder / f"tls-{n}.dcm"
        path.write_bytes(make_instance(study_uid=study, sop_uid=generate_uid()))
        paths.append(path)
    return paths


def test_storage_commitment_report_reaches_a_tls_registered_requester_over_tls(
    tmp_path: Path,
) -> None:
    cert, key = _certificate(tmp_path)
    server = _start(tmp_path, "--dicom-tls-cert", str(cert), "--dicom-tls-key", str(key),
                    "--dicom-tls-ca", str(cert), "--dicom-tls-port", "0")
    listener = Reports()
    ae = AE(ae_title="TLSCOMMIT")
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    scp = ae.start_server(("127.0.0.1", 0), block=False, ssl_context=server_context(cert, key),
                          evt_handlers=[(evt.EVT_N_EVENT_REPORT, listener.handler)])
    assert scp is not None
    try:
        study = generate_uid()
        paths = _write(tmp_path, study, 1)
        assert storescu(server, *paths).returncode == 0
        sop = str(dcmread(paths[0]).SOPInstanceUID)
        added = minipacs_cli(server_settings(server), "ae", "add", "TLSCOMMIT", "127.0.0.1",
                             str(scp.server_address[1]), "--rights", "commitment", "--tls")
        assert added.returncode == 0, added.stdout + added.stderr
        request = _request((str(CTImageStorage), sop))
        # The requester releases at once; the report comes on a new, TLS, association.
        assert _commit(server, request, Reports(answer=0x0110), calling="TLSCOMMIT") == 0
        event_type, info = listener.wait()
        assert event_type == 1
        assert info.TransactionUID == request.TransactionUID
    finally:
        scp.shutdown()
        server.stop()
