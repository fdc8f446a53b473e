"""Signed reports reach the configured MLLP peer as HL7 v2 ORU^R01 (issue #14,
hl7/oru_sender.py): a real server, a real MLLP listener on 127.0.0.1 that records what it
gets and answers ACKs; signing over FHIR sends F, amending sends C, a peer that is down or
answers AE gets the message later, and each delivery is an audited disclosure."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hl7
import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from conftest import Backends, ServerProcess, require_tool
from dicomweb_peers import store
from factories import make_instance
from minipacs.fhir.diagnostic_report import FINDINGS_URL
from minipacs.fhir.ids import step_id_of
from minipacs.hl7.oru_sender import OruNotDelivered, check_ack, exchange
from minipacs.tls import client_context, server_context
from test_access_and_tls import _certificate
from test_fhir_push import eventually

PASSWORD = "Doc-ket-qua-2024"
FINDINGS = "Phổi hai bên sáng đều.\nBóng tim không to | góc sườn hoành nhọn ^ rõ & ~."
CONCLUSION = "Nốt mờ thùy trên phổi phải, đường kính 8 mm; đề nghị chụp lại sau 3 tháng."
AMENDED = "Nốt mờ thùy trên phổi phải 8 mm, bờ đều: theo dõi sau 6 tháng."
CCCD, BHYT = "079068012345", "DN4797933102123"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
HOSPITAL = "http://fhir.ehealth.gov.vn/core/sid/patient-internal-id"


class MllpPeer:
    """An MLLP listener (0x0B message 0x1C 0x0D) on 127.0.0.1 in a thread: records each
    message and answers an ACK whose MSA-1 is the next of `codes` (then AA)."""

    def __init__(self, port: int = 0, codes: tuple[str, ...] = (),
                 tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls  # MLLP inside TLS, with this server context
        self.refused: list[str] = []  # failed TLS handshakes, why
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen()
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.codes = list(codes)
        self.messages: list[hl7.Message] = []
        self.answered: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(10)
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    self.refused.append(str(exc))
                    conn.close()
                    continue
            with conn:
                data = b""
                while b"\x1c\r" not in data and len(data) < 10_000_000:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if b"\x1c\r" not in data:
                    continue
                text = data[data.index(b"\x0b") + 1:data.index(b"\x1c\r")].decode("utf-8")
                message = hl7.parse(text)
                code = self.codes.pop(0) if self.codes else "AA"
                self.messages.append(message)
                self.answered.append(code)
                control = str(message.segment("MSH")[10])
                ack = (f"MSH|^~\\&|HIS|BVCR|MINIPACS|CDHA|20261204093100||ACK^R01^ACK|A{control}"
                       f"|P|2.5\rMSA|{code}|{control}|"
                       + ("Tạm thời không nhận" if code != "AA" else "") + "\r")
                conn.sendall(b"\x0b" + ack.encode("utf-8") + b"\x1c\r")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _server(tmp_path: Path, backends: Backends, port: int, *extra: str,
            env: dict[str, str] | None = None) -> ServerProcess:
    (tmp_path / "pacs").mkdir()
    return ServerProcess(tmp_path / "pacs", ["--no-load-samples", *backends.server_args(),
                                             *extra],
                         env={"MINIPACS_HL7_REPORT_PEER": f"127.0.0.1:{port}",
                              "MINIPACS_HL7_REPORT_SENDING_FACILITY": "BV Chợ Rẫy",
                              "MINIPACS_HL7_REPORT_RECEIVING_APPLICATION": "HIS",
                              "MINIPACS_HL7_REPORT_RECEIVING_FACILITY": "Khoa CĐHA",
                              "MINIPACS_HL7_REPORT_INCLUDE_PDF": "true",
                              "MINIPACS_HL7_REPORT_INTERVAL_SECONDS": "0.1",
                              "MINIPACS_HL7_REPORT_RETRY_SECONDS": "0.3",
                              "MINIPACS_HL7_REPORT_RETRY_MAX_SECONDS": "1",
                              "MINIPACS_HL7_REPORT_TIMEOUT_SECONDS": "5", **(env or {})}
                         ).start()


@pytest.fixture
def peer() -> Iterator[MllpPeer]:
    listener = MllpPeer()
    yield listener
    listener.stop()


def _study_with_order(server: ServerProcess) -> dict[str, str]:
    """An order over FHIR (accession, placer number, Study Instance UID) and a CT stored
    for it whose patient has a CCCD and a BHYT number."""
    study, patient = generate_uid(), "BN" + uuid.uuid4().hex[:8].upper()
    accession, placer = "AC" + uuid.uuid4().hex[:8].upper(), "PL" + uuid.uuid4().hex[:6]
    order = server.http.post("/fhir/ServiceRequest", json={
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "identifier": [
            {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "value": accession},
            {"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]}, "value": placer},
            {"system": "urn:dicom:uid", "value": f"urn:oid:{study}"}],
        "code": {"text": "CT ngực không tiêm thuốc"},
        "subject": {"identifier": {"system": HOSPITAL, "value": patient}},
    })
    assert order.status_code == 201, order.text
    others = []
    for value, issuer in ((CCCD, "CCCD"), (BHYT, "BHYT")):
        item = Dataset()
        item.PatientID, item.IssuerOfPatientID = value, issuer
        others.append(item)
    store(server, make_instance(patient_id=patient, patient_name="Phạm^Thị Hương",
                                study_uid=study, accession_number=accession,
                                IssuerOfPatientID="BVCR", OtherPatientIDsSequence=others,
                                PatientBirthDate="19680312", PatientSex="M"))
    return {"study": study, "patient": patient, "accession": accession, "placer": placer,
            "order": order.json()["id"]}


def _report(made: dict[str, str], status: str, conclusion: str) -> dict[str, Any]:
    return {"resourceType": "DiagnosticReport", "status": status,
            "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
            "imagingStudy": [{"reference": f"ImagingStudy/{made['study']}"}],
            "basedOn": [{"reference": f"ServiceRequest/{made['order']}"}],
            "conclusion": conclusion,
            "extension": [{"url": FINDINGS_URL, "valueString": FINDINGS}]}


def _doctor(server: ServerProcess) -> httpx.Client:
    name = "bs" + uuid.uuid4().hex[:8]
    server.add_user(name, "radiologist", PASSWORD)
    return httpx.Client(base_url=f"{server.http_url}/fhir", timeout=120,
                        auth=(name, PASSWORD))


def _sign(server: ServerProcess, made: dict[str, str]) -> str:
    with _doctor(server) as doctor:
        answer = doctor.post("/DiagnosticReport", json=_report(made, "final", CONCLUSION))
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])


def _disclosures(server: ServerProcess) -> str:
    rows = server.http.get("/admin/audit", params={"action": "report-disclosure"}).json()
    return " ".join(str(row) for row in rows)


def _text(message: hl7.Message, segment: hl7.Segment, field: int) -> str:
    return str(message.unescape(str(segment[field]))).replace("\r", "\n")


def test_signed_then_amended_report_reaches_the_mllp_peer(
    tmp_path: Path, backends: Backends, peer: MllpPeer,
) -> None:
    server = _server(tmp_path, backends, peer.port)
    try:
        made = _study_with_order(server)
        first = _sign(server, made)
        eventually(lambda: len(peer.messages) >= 1, "ORU^R01 of the final report")
        message = peer.messages[0]
        msh = message.segment("MSH")
        assert str(msh[9]) == "ORU^R01^ORU_R01"
        assert (str(msh[3]), str(msh[4]), str(msh[5]), str(msh[6])) == (
            "MINIPACS", "BV Chợ Rẫy", "HIS", "Khoa CĐHA")
        pid = message.segment("PID")
        assert [(str(r[0]), str(r[3]), str(r[4])) for r in pid[3]] == [
            (made["patient"], "BVCR", "MR"), (CCCD, "CCCD", "NI"), (BHYT, "BHYT", "HC")]
        assert str(pid[5]) == "Phạm^Thị Hương"
        obr = message.segment("OBR")
        assert (str(obr[2]), str(obr[3]), str(obr[18]), str(obr[25])) == (
            made["placer"], step_id_of(made["order"]), made["accession"], "F")
        obx = list(message.segments("OBX"))
        assert [str(o[2]) for o in obx] == ["FT", "FT", "ED"]
        assert _text(message, obx[0], 5) == FINDINGS
        assert _text(message, obx[1], 5) == CONCLUSION
        assert str(obx[2][5][0][3]) == "Base64"
        control = str(msh[10])
        eventually(lambda: f"message control id {control}" in _disclosures(server),
                   "the delivery audited")
        assert f"report {first} (final) sent as HL7 ORU^R01 to the MLLP peer " \
               f"127.0.0.1:{peer.port}" in _disclosures(server)

        with _doctor(server) as doctor:
            amended = doctor.put(f"/DiagnosticReport/{first}",
                                 json=_report(made, "amended", AMENDED))
            assert amended.status_code == 201, amended.text
            second = amended.json()["id"]
        eventually(lambda: len(peer.messages) >= 2, "ORU^R01 of the amendment")
        correction = peer.messages[1]
        assert str(correction.segment("OBR")[25]) == "C"
        assert [str(o[11]) for o in correction.segments("OBX")] == ["C", "C", "C"]
        assert _text(correction, list(correction.segments("OBX"))[1], 5) == AMENDED
        eventually(lambda: f"report {second} (amended) sent" in _disclosures(server),
                   "the amendment's delivery audited")
        state = server.http.get("/admin/hl7-reports").json()
        assert (state["enabled"], state["sent"], state["pending"]) == (True, 2, 0)
        assert len(peer.messages) == 2
    finally:
        server.stop()


def test_a_report_signed_while_the_peer_is_down_is_delivered_once_it_listens(
    tmp_path: Path, backends: Backends,
) -> None:
    port = _free_port()
    server = _server(tmp_path, backends, port)
    peer = None
    try:
        report = _sign(server, _study_with_order(server))
        failing = eventually(
            lambda: [f for f in server.http.get("/admin/hl7-reports").json()["failing"]
                     if f["attempts"] >= 2], "attempts recorded while the peer is down")
        assert failing[0]["report"] == int(report)
        assert "ConnectionRefusedError" in failing[0]["last_error"]
        assert f"report {report} (final) sent" not in _disclosures(server)
        peer = MllpPeer(port)
        eventually(lambda: len(peer.messages) == 1, "delivered once the peer listens")
        assert str(peer.messages[0].segment("OBR")[25]) == "F"
        eventually(lambda: f"report {report} (final) sent" in _disclosures(server),
                   "the delivery audited")
        state = server.http.get("/admin/hl7-reports").json()
        assert (state["sent"], state["pending"], state["failing"]) == (1, 0, [])
    finally:
        server.stop()
        if peer is not None:
            peer.stop()


def test_a_report_refused_with_ae_is_sent_again_until_accepted(
    tmp_path: Path, backends: Backends,
) -> None:
    peer = MllpPeer(codes=("AE",))
    server = _server(tmp_path, backends, peer.port)
    try:
        report = _sign(server, _study_with_order(server))
        eventually(lambda: len(peer.messages) == 2, "sent again after AE")
        assert peer.answered == ["AE", "AA"]
        controls = [str(m.segment("MSH")[10]) for m in peer.messages]
        assert controls[0] != controls[1]  # each attempt its own MSH-10
        eventually(lambda: f"report {report} (final) sent" in _disclosures(server),
                   "the delivery audited")
        audited = _disclosures(server)
        assert f"message control id {controls[1]}" in audited
        assert f"message control id {controls[0]}" not in audited
        assert "ACK AE" in server.log() and "Tạm thời không nhận" in server.log()
    finally:
        server.stop()
        peer.stop()


def test_with_two_workers_one_sender_delivers_each_report_once(
    tmp_path: Path, backends: Backends, peer: MllpPeer,
) -> None:
    server = _server(tmp_path, backends, peer.port, "--workers", "2")
    try:
        reports = [_sign(server, _study_with_order(server)) for _ in range(3)]
        for report in reports:
            eventually(lambda r=report: f"report {r} (final) sent" in _disclosures(server),
                       f"report {report} delivered")
        sent = [str(m.segment("MSH")[10]).split("-")[0] for m in peer.messages]
        assert sent == [f"RPT{r}" for r in reports]  # once each, in signing order
        state = server.http.get("/admin/hl7-reports").json()
        assert (state["sent"], state["pending"]) == (3, 0)
    finally:
        server.stop()


def test_with_report_tls_the_oru_waits_for_a_peer_whose_certificate_is_trusted(
    tmp_path: Path, backends: Backends,
) -> None:
    """MINIPACS_HL7_REPORT_TLS: the ORU^R01 goes inside TLS, the peer's certificate
    checked against MINIPACS_HL7_REPORT_TLS_CA. A peer showing another certificate gets
    nothing: the handshake's failure is kept on the row and the send retried, until the
    peer shows the trusted one."""
    for name in ("trusted", "other"):
        (tmp_path / name).mkdir()
    trusted, other = _certificate(tmp_path / "trusted"), _certificate(tmp_path / "other")
    peer = MllpPeer(tls=server_context(*other))
    server = _server(tmp_path, backends, peer.port, env={
        "MINIPACS_HL7_REPORT_TLS": "true", "MINIPACS_HL7_REPORT_TLS_CA": str(trusted[0])})
    try:
        report = _sign(server, _study_with_order(server))
        failing = eventually(
            lambda: [f for f in server.http.get("/admin/hl7-reports").json()["failing"]
                     if f["attempts"] >= 2], "attempts against the untrusted certificate")
        assert "CERTIFICATE_VERIFY_FAILED" in failing[0]["last_error"]
        assert peer.messages == [] and peer.refused
        peer.tls = server_context(*trusted)
        eventually(lambda: len(peer.messages) == 1, "the ORU^R01 delivered over TLS")
        assert str(peer.messages[0].segment("OBR")[25]) == "F"
        eventually(lambda: f"report {report} (final) sent" in _disclosures(server),
                   "the delivery audited")
    finally:
        server.stop()
        peer.stop()


def test_tls_to_the_peer_checks_its_certificate_and_its_name(tmp_path: Path) -> None:
    """A self-signed certificate checked against the system's CAs fails, and so does a
    trusted certificate made out to another name: nothing reaches the peer."""
    cert, key = _certificate(tmp_path)
    elsewhere, elsewhere_key = tmp_path / "elsewhere.pem", tmp_path / "elsewhere-key.pem"
    made = subprocess.run(
        [require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
         str(elsewhere_key), "-out", str(elsewhere), "-days", "2", "-subj",
         "/CN=his.example.org", "-addext", "subjectAltName=DNS:his.example.org"],
        capture_output=True, text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    for served, trusted, why in ((cert, None, "self-signed"),
                                 (elsewhere, elsewhere, "mismatch")):
        peer = MllpPeer(tls=server_context(served, key if served == cert else elsewhere_key))
        try:
            with pytest.raises(ssl.SSLCertVerificationError, match=why):
                exchange("127.0.0.1", peer.port, "MSH|^~\\&|A\r", 5,
                         client_context(trusted))
            assert peer.messages == []
        finally:
            peer.stop()


def test_a_malformed_peer_stops_the_start_naming_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "minipacs", "serve", "--data-dir", str(tmp_path),
         "--http-port", "0", "--dicom-port", "0", "--no-load-samples"],
        env={**os.environ, "MINIPACS_HL7_REPORT_PEER": "his.example.org"},
        capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "'his.example.org' must be host:port" in done.stdout + done.stderr


@pytest.mark.parametrize(("answer", "reason"), [
    ("MSH|^~\\&|HIS|BV|||20260101||ACK|1|P|2.5\rMSA|AR|RPT1-1-1\rERR||||E||||Sai mã BN\r",
     "ACK AR for RPT1-1-1: Sai mã BN"),
    ("MSH|^~\\&|HIS|BV|||20260101||ACK|1|P|2.5\rMSA|AA|RPT9-9-9\r",
     "ACK AA names message 'RPT9-9-9', not 'RPT1-1-1'"),
    ("not hl7 at all", "the answer is not an HL7 ACK with MSA"),
])
def test_an_ack_that_does_not_accept_the_message_says_why(answer: str, reason: str) -> None:
    with pytest.raises(OruNotDelivered, match=re.escape(reason)):
        check_ack(answer, "RPT1-1-1")


@pytest.mark.parametrize("code", ["AA", "CA"])
def test_aa_or_ca_echoing_our_control_id_accepts(code: str) -> None:
    check_ack(f"MSH|^~\\&|HIS|BV|||20260101||ACK|1|P|2.5\r\nMSA|{code}|RPT1-1-1\r\n",
              "RPT1-1-1")


def test_a_peer_that_never_answers_times_out_within_the_bound() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            exchange("127.0.0.1", silent.getsockname()[1], "MSH|^~\\&|A\r", 0.5)
        assert time.monotonic() - started < 3
