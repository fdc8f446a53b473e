"""The audit trail leaves minipacs in the formats other systems read: CSV, DICOM audit
messages, FHIR AuditEvent, and live to a syslog collector over TLS (RFC 5424/5425)."""

from __future__ import annotations

import csv
import io
import re
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from backends import Backends
from conftest import ServerProcess
from dicomweb_peers import store
from factories import make_instance
from test_access_and_tls import _certificate


def test_audit_exports_as_csv_dicom_audit_messages_and_fhir_audit_events(
    empty_server: ServerProcess,
) -> None:
    server = empty_server
    (stored,) = store(server, make_instance(patient_id="BN-EXPORT-1"))
    assert server.http.get(f"/dicom-web/studies/{stored.study}/metadata").status_code == 200
    assert server.http.get("/dicom-web/studies", params={"PatientID": "BN-EXPORT-1"}
                           ).status_code == 200
    rows = list(csv.DictReader(io.StringIO(
        server.http.get("/admin/audit/export", params={"format": "csv"}).text)))
    view = next(r for r in rows if r["action"] == "view")
    assert view["patient_id"] == "BN-EXPORT-1" and view["actor"] == "token:tests-admin"
    assert len(view["hash"]) == 64

    xml = server.http.get("/admin/audit/export", params={"format": "dicom",
                                                         "action": "view"})
    assert xml.headers["content-type"].startswith("application/xml")
    (message,) = ET.fromstring(xml.text).findall("AuditMessage")
    assert message.find("EventIdentification/EventID").get("csd-code") == "110103"
    assert message.find("EventIdentification").get("EventActionCode") == "R"
    assert message.find("ActiveParticipant").get("UserID") == "token:tests-admin"
    objects = {o.get("ParticipantObjectTypeCode"): o.get("ParticipantObjectID")
               for o in message.findall("ParticipantObjectIdentification")}
    assert objects == {"1": "BN-EXPORT-1", "2": stored.study}

    bundle = server.http.get("/admin/audit/export", params={"format": "fhir"}).json()
    assert bundle["resourceType"] == "Bundle" and bundle["entry"]
    for entry in bundle["entry"]:
        AuditEvent.model_validate(entry["resource"])  # every one is a valid R4 AuditEvent
    query = next(e["resource"] for e in bundle["entry"]
                 if e["resource"]["type"]["code"] == "110112")
    assert query["agent"][0]["network"]["address"] == "127.0.0.1"


# ---------------------------------------------------------------------- syslog over TLS
class Collector:
    """A syslog collector (RFC 5425: TLS, octet-counted frames) on loopback."""

    def __init__(self, port: int, cert: Path, key: Path) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.5)
        self.context = context
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            with self.context.wrap_socket(raw, server_side=True) as conn:
                conn.settimeout(0.5)
                buffer = b""
                while not self._stop.is_set():
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not chunk:
                        break
                    buffer += chunk
                    while b" " in buffer:
                        length, rest = buffer.split(b" ", 1)
                        if len(rest) < int(length):
                            break
                        self.messages.append(rest[: int(length)].decode("utf-8"))
                        buffer = rest[int(length):]

    def wait_for(self, pattern: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.messages if re.search(pattern, m)]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no syslog message matching {pattern}"
            time.sleep(0.1)  # polling what arrived, bounded by the deadline

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return _certificate(tmp_path)  # the DICOM TLS tests' (valid for 127.0.0.1 too)


@pytest.fixture
def forwarding_server(tmp_path: Path, backends: Backends, certificate: tuple[Path, Path]
                      ) -> Iterator[tuple[ServerProcess, int]]:
    port = _free_port()
    server = ServerProcess(tmp_path / "data", [
        "--no-load-samples", "--audit-syslog", f"127.0.0.1:{port}",
        "--audit-syslog-ca", str(certificate[0]), "--audit-syslog-seconds", "0.3",
        *backends.server_args()])
    server.data_dir.mkdir()
    server.start()
    yield server, port
    server.stop()


def test_every_event_reaches_the_syslog_collector_even_if_it_was_down(
    forwarding_server: tuple[ServerProcess, int], certificate: tuple[Path, Path],
) -> None:
    server, port = forwarding_server
    # The collector is not up yet: events wait in the trail.
    (stored,) = store(server, make_instance(patient_id="BN-SIEM-1",
                                            patient_name="Võ^Thị Sáu"))
    assert server.http.get(f"/dicom-web/studies/{stored.study}/metadata").status_code == 200
    collector = Collector(port, *certificate)
    try:
        view = collector.wait_for(r'csd-code="110103".*BN-SIEM-1')
        assert re.match(r"^<85>1 \d{4}-\d\d-\d\dT[\d:.]+Z \S+ minipacs - IHE\+RFC-3881 - ", view)
        assert "\ufeff<AuditMessage>" in view
        assert "token:tests-admin" in view
        # New events keep flowing, and the first ones came once the collector was up.
        server.http.get("/dicom-web/studies", params={"PatientID": "BN-SIEM-1"})
        collector.wait_for(r'csd-code="110112"')
        token_events = [m for m in collector.messages if "token-create" in m
                        or "tests-admin" in m]
        assert token_events
    finally:
        collector.close()
