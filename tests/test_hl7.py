"""The HL7 v2 door: real messages over a real MLLP socket to `minipacs serve`, sent with
python-hl7's MLLP client; orders checked with dcmtk's findscu -W, the audit trail over
HTTP."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import ssl
import time
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import hl7
import pytest
from hl7.mllp import open_hl7_connection
from pydicom import Dataset, dcmread

from backends import Backends
from conftest import REPO, ServerProcess
from dimse_peers import run_dcmtk, storescu
from factories import make_instance
from minipacs.archive import Archive
from minipacs.config import Settings
from minipacs.hl7.adt import PatientMerge, PatientUpdate, patient_merges, patient_update
from minipacs.hl7.dispatch import Hl7Door
from minipacs.hl7.segments import OtherIdentifier
from minipacs.hl7.senders import SenderPolicy, parse_allowed_senders
from minipacs.hl7.server import hl7_tls_context
from minipacs.patient_identity import IdentitySystems
from minipacs.worklist import Worklist
from test_access_and_tls import _certificate

SENDERS = "HIS^BVCR,RIS^BVCR@127.0.0.1,FARAWAY^BVCR@192.0.2.7"
NAME = "Nguyễn^Thị Minh Khai"
CCCD = "079185000123"
BHYT = "DN4790123456789"


@pytest.fixture(scope="module")
def hl7_server(tmp_path_factory: pytest.TempPathFactory, backends: Backends
               ) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("hl7"), backends.server_args(),
                         env={"MINIPACS_HL7_PORT": "0", "MINIPACS_HL7_ALLOWED_SENDERS": SENDERS,
                              "MINIPACS_HL7_MAX_MESSAGE_BYTES": "65536",
                              "MINIPACS_HL7_MAX_CONNECTIONS": "4",
                              "MINIPACS_LOAD_SAMPLES": "false",
                              "MINIPACS_HL7_HOST": "127.0.0.1"}).start()
    yield proc
    proc.stop()


def hl7_port(server: ServerProcess) -> int:
    """The bound MLLP port, from the ready file as the DICOM and HTTP ports are."""
    port = json.loads((server.data_dir / "ready.json").read_text())["hl7_port"]
    assert isinstance(port, int) and port > 0
    return port


async def _exchange(port: int, payload: bytes, *, framed: bool,
                    tls: ssl.SSLContext | None = None) -> hl7.Message | None:
    try:
        reader, writer = await asyncio.wait_for(open_hl7_connection(
            "127.0.0.1", port, encoding="utf-8", ssl=tls), 10)
    except ssl.SSLError:
        return None  # the server refused the handshake
    try:
        if framed:
            writer.writeblock(payload)
        else:
            writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readmessage(), 30)
    except (asyncio.IncompleteReadError, ConnectionResetError, ssl.SSLError):
        return None  # the server closed the connection without an answer
    finally:
        writer.close()


def _run(exchange: Coroutine[Any, Any, hl7.Message | None]) -> hl7.Message | None:
    """asyncio.run in a thread of its own: once a test has used the session's Playwright
    browser, its event loop runs in this one (and asyncio.run here would refuse)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, exchange).result(timeout=60)


def send(server: ServerProcess, message: str | bytes) -> hl7.Message:
    """One framed message (segments joined by CR), its ACK."""
    payload = message.encode("utf-8") if isinstance(message, str) else message
    ack = _run(_exchange(hl7_port(server), payload, framed=True))
    assert ack is not None, "the server closed the connection without an ACK"
    return ack


def send_raw(server: ServerProcess, payload: bytes) -> hl7.Message | None:
    """Bytes as they are (no MLLP framing added); the ACK, or None when closed."""
    return _run(_exchange(hl7_port(server), payload, framed=False))


def msh(event: str, control_id: str, *, sender: str = "HIS^BVCR", version: str = "2.5.1",
        charset: str = "UNICODE UTF-8", processing: str = "P") -> str:
    app, facility = sender.split("^")
    structure = {"ORM^O01": "ORM_O01", "OMI^O23": "OMI_O23"}.get(event, "ADT_A01")
    return (f"MSH|^~\\&|{app}|{facility}|MINIPACS|BVCR|20250301083000||{event}^{structure}|"
            f"{control_id}|{processing}|{version}|||AL|NE|VN|{charset}")


def pid(patient_id: str, name: str = NAME, *, cccd: str = CCCD, bhyt: str = BHYT) -> str:
    ids = f"{patient_id}^^^BVCR^MR~{cccd}^^^BCA^NI~{bhyt}^^^BHXH^HC"
    return f"PID|1||{ids}||{name}||19850215|F"


def orm(control: str, patient_id: str, accession: str, *, modality: str = "CT",
        control_id: str = "", step_id: str = "", extra: str = "") -> str:
    return "\r".join([
        msh("ORM^O01", control_id or uuid.uuid4().hex[:20]),
        pid(patient_id),
        "PV1|1|O||||||DR001^Trần^Văn Bình",
        f"ORC|{control}|P{accession}|F{accession}||SC||^^^20250310093000",
        f"OBR|1|P{accession}|F{accession}|CT-HEAD^CT sọ não^99BVCR||||||||||||||"
        f"{accession}|RP{accession}|{step_id}||||{modality}",
        *([extra] if extra else []),
    ])


def omi(control: str, patient_id: str, accession: str, step_ids: tuple[str, ...],
        station: str = "CT_BVCR_1", study_uid: str = "") -> str:
    study_uid = study_uid or f"2.25.{uuid.uuid4().int}"
    ipcs = [f"IPC|{accession}^BVCR|RP{accession}|{study_uid}|{step}|CT|"
            f"PROT1^Sọ não không cản quang^99BVCR|||{station}" for step in step_ids]
    return "\r".join([
        msh("OMI^O23", uuid.uuid4().hex[:20]),
        pid(patient_id),
        f"ORC|{control}|P{accession}|F{accession}||SC",
        "TQ1|1||||||20250311140000",
        f"OBR|1|P{accession}|F{accession}|CT-CHEST^CT ngực^99BVCR",
        *ipcs,
    ])


def ack_code(ack: hl7.Message) -> str:
    return str(ack.extract_field("MSA", 1, 1))


def err(ack: hl7.Message) -> tuple[str, str]:
    """ERR-3 code and ERR-8 user message."""
    return str(ack.extract_field("ERR", 1, 3, 1, 1)), str(ack.extract_field("ERR", 1, 8))


def worklist(server: ServerProcess, tmp_path: Path, accession: str) -> list[Dataset]:
    """What a modality sees with findscu -W for this accession number."""
    out = tmp_path / f"wl-{uuid.uuid4().hex[:8]}"
    out.mkdir()
    result = run_dcmtk(
        "findscu", "-W", "-aec", server.ae_title, "-X", "-od", str(out),
        "-k", "SpecificCharacterSet=ISO_IR 192", "-k", "PatientName", "-k", "PatientID",
        "-k", "IssuerOfPatientID", "-k", "PatientBirthDate", "-k", "PatientSex",
        "-k", f"AccessionNumber={accession}", "-k", "StudyInstanceUID",
        "-k", "RequestedProcedureID", "-k", "ReferringPhysicianName",
        "-k", "OtherPatientIDsSequence[0].PatientID",
        "-k", "OtherPatientIDsSequence[0].IssuerOfPatientID",
        "-k", "RequestedProcedureDescription",
        "-k", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
        "-k", "ScheduledProcedureStepSequence[0].Modality",
        "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
        "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
        "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
        "127.0.0.1", str(server.dicom_port))
    assert result.returncode == 0, result.stdout + result.stderr
    return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


def _accession() -> str:
    return "A" + uuid.uuid4().hex[:12].upper()


def test_orm_new_order_reaches_the_modality_worklist_with_its_vietnamese_name(
        hl7_server: ServerProcess, tmp_path: Path) -> None:
    accession, patient_id = _accession(), "BN" + uuid.uuid4().hex[:8]
    ack = send(hl7_server, orm("NW", patient_id, accession))
    assert ack_code(ack) == "AA", str(ack)
    assert str(ack.extract_field("MSH", 1, 9, 1, 1)) == "ACK"
    assert str(ack.extract_field("MSH", 1, 18)) == "UNICODE UTF-8"
    [item] = worklist(hl7_server, tmp_path, accession)
    assert str(item.PatientName) == NAME
    assert (item.PatientID, item.IssuerOfPatientID) == (patient_id, "BVCR")
    assert (item.PatientBirthDate, item.PatientSex) == ("19850215", "F")
    assert item.RequestedProcedureID == "RP" + accession
    assert str(item.ReferringPhysicianName) == "Trần^Văn Bình"
    assert item.RequestedProcedureDescription == "CT sọ não"
    step = item.ScheduledProcedureStepSequence[0]
    assert step.Modality == "CT"
    assert step.ScheduledProcedureStepID == accession  # OBR-20 empty: the accession
    assert (step.ScheduledProcedureStepStartDate,
            step.ScheduledProcedureStepStartTime) == ("20250310", "093000")


def test_orm_cancel_withdraws_the_step_and_change_updates_it(
        hl7_server: ServerProcess, tmp_path: Path) -> None:
    accession, patient_id = _accession(), "BN" + uuid.uuid4().hex[:8]
    assert ack_code(send(hl7_server, orm("NW", patient_id, accession))) == "AA"
    changed = send(hl7_server, orm("XO", patient_id, accession, modality="MR"))
    assert ack_code(changed) == "AA", str(changed)
    [item] = worklist(hl7_server, tmp_path, accession)
    assert item.ScheduledProcedureStepSequence[0].Modality == "MR"
    cancelled = send(hl7_server, orm("CA", patient_id, accession))
    assert ack_code(cancelled) == "AA", str(cancelled)
    assert worklist(hl7_server, tmp_path, accession) == []


def test_cancel_or_change_of_an_unknown_order_is_an_application_error(
        hl7_server: ServerProcess) -> None:
    for control in ("CA", "XO"):
        accession = _accession()
        ack = send(hl7_server, orm(control, "BN-NONE", accession))
        assert ack_code(ack) == "AE", str(ack)
        code, text = err(ack)
        assert code == "204" and accession in text, str(ack)
        assert accession in str(ack.extract_field("MSA", 1, 3))


def test_omi_ipc_segments_become_scheduled_steps_for_their_station(
        hl7_server: ServerProcess, tmp_path: Path) -> None:
    accession, patient_id = _accession(), "BN" + uuid.uuid4().hex[:8]
    study_uid = f"2.25.{uuid.uuid4().int}"
    steps = ("S" + accession[1:10] + "1", "S" + accession[1:10] + "2")
    ack = send(hl7_server, omi("NW", patient_id, accession, steps, study_uid=study_uid))
    assert ack_code(ack) == "AA", str(ack)
    found = worklist(hl7_server, tmp_path, accession)
    assert sorted(i.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID
                  for i in found) == sorted(steps)
    for item in found:
        assert item.StudyInstanceUID == study_uid
        assert item.RequestedProcedureID == "RP" + accession
        assert str(item.PatientName) == NAME
        step = item.ScheduledProcedureStepSequence[0]
        assert (step.ScheduledStationAETitle, step.Modality) == ("CT_BVCR_1", "CT")
        assert step.ScheduledProcedureStepStartDate == "20250311"
    assert ack_code(send(hl7_server, omi("CA", patient_id, accession, steps))) == "AA"
    assert worklist(hl7_server, tmp_path, accession) == []


def test_an_omi_with_one_bad_step_writes_none_of_its_steps(
        hl7_server: ServerProcess, tmp_path: Path) -> None:
    accession = _accession()
    message = omi("NW", "BN-HALF", accession, ("GOOD1", "TOO-LONG-STEP-ID-X"))
    ack = send(hl7_server, message)
    assert ack_code(ack) == "AE", str(ack)
    assert "scheduled_procedure_step_id is longer than 16" in err(ack)[1]
    assert worklist(hl7_server, tmp_path, accession) == []


@pytest.mark.parametrize(("message", "ack", "code", "says"), [
    (lambda a: orm("NW", "BN1", a).replace("|2.5.1|", "|2.1|", 1), "AR", "203",
     "version '2.1'"),
    (lambda a: orm("NW", "BN1", a).replace("ORM^O01^ORM_O01", "ORM^O02^ORM_O01"), "AR",
     "201", "ORM^O02"),
    (lambda a: orm("NW", "BN1", a).replace("ORM^O01^ORM_O01", "ORU^R01^ORU_R01"), "AR",
     "200", "'ORU'"),
    (lambda a: orm("NW", "BN1", a).replace("UNICODE UTF-8", "8859/1"), "AR", "103",
     "8859/1"),
    (lambda a: orm("NW", "BN1", a).replace("|P|2.5.1|", "|X|2.5.1|"), "AR", "202", "'X'"),
    (lambda a: orm("ZZ", "BN1", a), "AR", "103", "ORC-1 order control 'ZZ'"),
    (lambda a: "\r".join(s for s in orm("NW", "BN1", a).split("\r")
                         if not s.startswith("PID")), "AE", "101", "no PID segment"),
    (lambda a: orm("NW", "BN1", a).replace("|19850215|", "|1985-02-15|"), "AE", "102",
     "PID-7 '1985-02-15'"),
    (lambda a: orm("NW", "BN1", a).replace("BN1^^^BVCR^MR~", ""), "AE", "101",
     "no hospital patient ID"),
    (lambda a: "\r".join(s for s in orm("NW", "BN1", a).split("\r")
                         if not s.startswith("ORC")), "AR", "100", "before any ORC"),
    (lambda a: "PID|1||X\rMSH|^~\\&|HIS|BVCR", "AR", "100", "must begin with an MSH"),
])
def test_malformed_or_unsupported_messages_get_ae_or_ar_saying_what_was_wrong(
        hl7_server: ServerProcess, tmp_path: Path, message: object, ack: str, code: str,
        says: str) -> None:
    accession = _accession()
    answer = send(hl7_server, message(accession))  # type: ignore[operator]
    assert ack_code(answer) == ack, str(answer)
    error_code, text = err(answer)
    assert error_code == code, str(answer)
    assert says in text, str(answer)
    assert str(answer.extract_field("ERR", 1, 4)) == "E"
    assert worklist(hl7_server, tmp_path, accession) == []  # nothing written


def test_bytes_that_are_not_utf8_are_rejected(hl7_server: ServerProcess, tmp_path: Path
                                               ) -> None:
    accession = _accession()
    payload = orm("NW", "BN1", accession).encode("utf-8").replace(
        "Nguyễn".encode(), "Nguy\xean".encode("latin-1"))
    answer = send(hl7_server, payload)
    assert ack_code(answer) == "AR" and err(answer)[0] == "102", str(answer)
    assert "is not UTF-8" in err(answer)[1]
    assert worklist(hl7_server, tmp_path, accession) == []


def test_oversized_garbage_and_half_frames_leave_the_listener_serving(
        hl7_server: ServerProcess, tmp_path: Path) -> None:
    big = orm("NW", "BN1", _accession(), extra="NTE|1||" + "x" * 70_000)
    answer = send_raw(hl7_server, b"\x0b" + big.encode() + b"\x1c\r")
    assert answer is not None and ack_code(answer) == "AR", answer
    assert "longer than 65536 bytes" in err(answer)[1]
    # Garbage without a start block: the connection is closed, nothing answered.
    assert send_raw(hl7_server, b"GET / HTTP/1.1\r\n\r\n\x1c\r") is None
    # Half a frame, then the peer goes away.
    with socket.create_connection(("127.0.0.1", hl7_port(hl7_server)), timeout=10) as sock:
        sock.sendall(b"\x0b" + orm("NW", "BN1", _accession()).encode()[:80])
    accession = _accession()
    assert ack_code(send(hl7_server, orm("NW", "BN-AFTER", accession))) == "AA"
    assert len(worklist(hl7_server, tmp_path, accession)) == 1


def test_unknown_or_misplaced_senders_are_refused_and_audited(
        hl7_server: ServerProcess, tmp_path: Path) -> None:
    for sender, says in (("INTRUDER^BVCR", "not in MINIPACS_HL7_ALLOWED_SENDERS"),
                         ("FARAWAY^BVCR", "not allowed from 127.0.0.1")):
        accession = _accession()
        message = "\r".join([msh("ORM^O01", "REFUSED1", sender=sender),
                             *orm("NW", "BN1", accession).split("\r")[1:]])
        answer = send(hl7_server, message)
        assert ack_code(answer) == "AR", str(answer)
        assert says in err(answer)[1], str(answer)
        assert "192.0.2.7" not in str(answer)  # where a sender is pinned is not told
        assert worklist(hl7_server, tmp_path, accession) == []
    events = hl7_server.http.get("/admin/audit", params={"actor": "hl7:INTRUDER^BVCR"})
    assert events.status_code == 200, events.text
    assert [e["outcome"] for e in events.json()][:1] == ["refused"]


def test_every_message_is_audited_with_its_sender_patient_and_outcome(
        hl7_server: ServerProcess) -> None:
    accession, patient_id = _accession(), "BN" + uuid.uuid4().hex[:8]
    assert ack_code(send(hl7_server, orm("NW", patient_id, accession,
                                         control_id="AUDIT-" + accession))) == "AA"
    events = hl7_server.http.get("/admin/audit", params={"patient_id": patient_id}).json()
    [event] = [e for e in events if e["action"] == "hl7 ORM^O01"]
    assert event["actor"] == "hl7:HIS^BVCR" and event["role"] == "emr"
    assert event["outcome"] == "success" and event["source"] == "127.0.0.1"
    assert f"AUDIT-{accession}" in event["detail"] and accession in event["detail"]
    assert f"CCCD:{CCCD}" in event["detail"] and f"BHYT:{BHYT}" in event["detail"]


def _store(server: ServerProcess, folder: Path, patient_id: str, name: str) -> str:
    """One study of two CT instances for `patient_id` (issuer BVCR), sent with storescu."""
    study, series = f"2.25.{uuid.uuid4().int}", f"2.25.{uuid.uuid4().int}"
    paths = []
    for number in (1, 2):
        path = folder / f"{patient_id}-{number}.dcm"
        path.write_bytes(make_instance(study_uid=study, series_uid=series,
                                       patient_id=patient_id, patient_name=name,
                                       IssuerOfPatientID="BVCR", InstanceNumber=number))
        paths.append(path)
    result = storescu(server, *paths)
    assert result.returncode == 0, result.stderr
    return study


def _studies_of(server: ServerProcess, tmp_path: Path, patient_id: str) -> dict[str, str]:
    """findscu (dcmtk) at study level: study UID -> PatientName, for one PatientID."""
    out = tmp_path / f"find-{uuid.uuid4().hex[:6]}"
    out.mkdir()
    result = run_dcmtk("findscu", "-S", "-aec", server.ae_title, "-X", "-od", str(out),
                       "-k", "QueryRetrieveLevel=STUDY", "-k", "SpecificCharacterSet=ISO_IR 192",
                       "-k", f"PatientID={patient_id}", "-k", "PatientName",
                       "-k", "StudyInstanceUID", "127.0.0.1", str(server.dicom_port))
    assert result.returncode == 0, result.stderr
    return {str(d.StudyInstanceUID): str(d.PatientName)
            for d in (dcmread(p) for p in sorted(out.iterdir()))}


def test_adt_a08_corrects_and_a40_merges_and_every_door_then_agrees(
        hl7_server: ServerProcess, tmp_path: Path) -> None:
    """The EMR corrects a name (A08) and merges a patient registered twice at the modality
    (A40) over MLLP: C-FIND, QIDO-RS, retrieved headers and the audit trail follow."""
    keep, wrong = f"BN-KEEP-{uuid.uuid4().hex[:6]}", f"BN-WRONG-{uuid.uuid4().hex[:6]}"
    kept_study = _store(hl7_server, tmp_path, keep, "LE^VAN TAM")
    wrong_study = _store(hl7_server, tmp_path, wrong, "LE^TAM")

    update = "\r".join([msh("ADT^A08", "ADT-U-" + keep[-6:]), pid(keep, "Lê^Văn Tám"),
                        "PV1|1|O"])
    answer = send(hl7_server, update)
    assert ack_code(answer) == "AA", str(answer)
    assert _studies_of(hl7_server, tmp_path, keep) == {kept_study: "Lê^Văn Tám"}

    merge = "\r".join([msh("ADT^A40", "ADT-M-" + keep[-6:]), pid(keep, "Lê^Văn Tám"),
                       f"MRG|{wrong}^^^BVCR^MR"])
    answer = send(hl7_server, merge)
    assert ack_code(answer) == "AA", str(answer)
    assert _studies_of(hl7_server, tmp_path, keep) == {kept_study: "Lê^Văn Tám",
                                                       wrong_study: "Lê^Văn Tám"}
    assert _studies_of(hl7_server, tmp_path, wrong) == {}
    qido = hl7_server.http.get("/dicom-web/studies", params={"PatientID": keep},
                               headers={"Accept": "application/dicom+json"}).json()
    assert {s["0020000D"]["Value"][0] for s in qido} == {kept_study, wrong_study}
    # The merged study's instances are served under the target patient (stored bytes as sent).
    retrieved = hl7_server.http.get(f"/dicom-web/studies/{wrong_study}",
                                    headers={"Accept": "multipart/related; "
                                             "type=\"application/dicom\"; transfer-syntax=*"})
    assert retrieved.status_code == 200
    assert keep.encode() in retrieved.content and wrong.encode() not in retrieved.content

    # The EMR polling the change feed hears that both studies changed owner or name.
    feed = hl7_server.http.get("/changes", params={"since": 0, "limit": 1000}).json()
    updated = [(c["study_instance_uid"], c["patient_id"]) for c in feed["changes"]
               if c["kind"] == "updated" and c["level"] == "study"]
    assert (kept_study, keep) in updated and (wrong_study, keep) in updated, updated

    events = hl7_server.http.get("/admin/audit", params={"patient_id": keep}).json()
    actions = {(e["action"], e["actor"]) for e in events}
    assert ("patient-update", "hl7:HIS^BVCR") in actions, actions
    assert ("patient-merge", "hl7:HIS^BVCR") in actions, actions
    history = hl7_server.http.get(f"/admin/patients/{keep}/history",
                                  params={"issuer": "BVCR"}).json()
    assert [(h["kind"], h["reason"]) for h in history] == [
        ("update", f"HL7 ADT^A08 message ADT-U-{keep[-6:]} from HIS^BVCR"),
        ("merge", f"HL7 ADT^A40 message ADT-M-{keep[-6:]} from HIS^BVCR")], history

    unknown = "\r".join([msh("ADT^A08", "ADT-X"), pid("BN-NOBODY", "Ai^Đó")])
    answer = send(hl7_server, unknown)
    assert ack_code(answer) == "AE" and err(answer)[0] == "204", str(answer)
    no_mrg = "\r".join([msh("ADT^A40", "ADT3"), pid(keep)])
    answer = send(hl7_server, no_mrg)
    assert ack_code(answer) == "AE" and "no MRG segment" in err(answer)[1], str(answer)


def test_adt_a08_and_a40_parse_into_plain_patient_values(settings: Settings) -> None:
    systems = IdentitySystems.from_settings(settings)
    update = patient_update(hl7.parse("\r".join([
        msh("ADT^A08", "U1"), pid("BN-7", "Lê^Văn Tám", bhyt="HS4011234567890")])), systems)
    assert update == PatientUpdate(
        ("BN-7", "BVCR"), "Lê^Văn Tám", "19850215", "F",
        (OtherIdentifier(CCCD, "CCCD", "NI"),
         OtherIdentifier("HS4011234567890", "BHYT", "HC")))
    assert update.changes == {
        "PatientName": "Lê^Văn Tám", "PatientBirthDate": "19850215", "PatientSex": "F",
        "OtherPatientIDs": ((CCCD, "CCCD"), ("HS4011234567890", "BHYT"))}
    [merge] = patient_merges(hl7.parse("\r".join([
        msh("ADT^A40", "M1"), pid("BN-KEEP"), "MRG|BN-WRONG^^^BVCR^MR~123^^^BCA^NI"])),
        systems)
    assert merge == PatientMerge(source=("BN-WRONG", "BVCR"), target=("BN-KEEP", "BVCR"))


def test_an_invalid_cccd_is_kept_as_received_and_flagged(settings: Settings) -> None:
    update = patient_update(hl7.parse("\r".join([
        msh("ADT^A31", "U2"), pid("BN-8", cccd="07918500012")])),
        IdentitySystems.from_settings(settings))
    [cccd, _] = update.other_ids
    assert cccd.value == "07918500012" and "is not 12 digits" in (cccd.problem or "")


def test_without_an_hl7_port_there_is_no_listener(server: ServerProcess) -> None:
    assert json.loads((server.data_dir / "ready.json").read_text())["hl7_port"] is None
    assert "HL7 v2" not in server.log()


def test_a_stalled_connection_does_not_hold_up_another_sender(
        hl7_server: ServerProcess, tmp_path: Path) -> None:
    with socket.create_connection(("127.0.0.1", hl7_port(hl7_server)), timeout=10) as stalled:
        stalled.sendall(b"\x0b" + orm("NW", "BN1", _accession()).encode()[:120])
        accession = _accession()
        assert ack_code(send(hl7_server, orm("NW", "BN-BUSY", accession))) == "AA"
        assert len(worklist(hl7_server, tmp_path, accession)) == 1


def test_line_feeds_between_segments_and_escaped_names_are_read(
        hl7_server: ServerProcess, tmp_path: Path) -> None:
    accession = _accession()
    message = orm("NW", "BN-LF", accession).replace(NAME, "Phạm \\T\\ Vũ^Thị Ánh").replace(
        "\r", "\n")
    ack = send(hl7_server, message)
    assert ack_code(ack) == "AA", str(ack)
    [item] = worklist(hl7_server, tmp_path, accession)
    assert str(item.PatientName) == "Phạm & Vũ^Thị Ánh"


def test_status_changed_to_cancelled_cancels_the_order(
        hl7_server: ServerProcess, tmp_path: Path) -> None:
    accession = _accession()
    assert ack_code(send(hl7_server, orm("NW", "BN-SC", accession))) == "AA"
    status_changed = orm("SC", "BN-SC", accession).replace(
        f"ORC|SC|P{accession}|F{accession}||SC|", f"ORC|SC|P{accession}|F{accession}||CA|")
    assert ack_code(send(hl7_server, status_changed)) == "AA"
    assert worklist(hl7_server, tmp_path, accession) == []


def _framed(message: str) -> bytes:
    return b"\x0b" + message.encode() + b"\x1c\r"


def test_connections_beyond_the_limit_are_closed_until_one_frees_up(
        hl7_server: ServerProcess) -> None:
    port = hl7_port(hl7_server)
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
    try:
        deadline, refused = time.monotonic() + 20, False
        for _ in range(200):  # until the server has counted the four held connections
            if send_raw(hl7_server, _framed(orm("NW", "BN-CAP", _accession()))) is None:
                refused = True
                break
            assert time.monotonic() < deadline, "a fifth connection was never refused"
    finally:
        for sock in held:
            sock.close()
    assert refused
    deadline = time.monotonic() + 20
    for _ in range(200):  # until the server has seen the held ones close
        answer = send_raw(hl7_server, _framed(orm("NW", "BN-CAP", _accession())))
        if answer is not None:
            assert ack_code(answer) == "AA", str(answer)
            break
        assert time.monotonic() < deadline, "no connection was served again"


def test_mutated_messages_always_get_an_ack_and_never_an_exception(
        archive: Archive, settings: Settings) -> None:
    """Seeded mutations of good messages (delimiters, truncation, NUL and 0xFF bytes):
    every one is answered with AA, AE or AR (an ERR for the last two), nothing raises."""
    door = Hl7Door(archive, Worklist(archive.engine, archive.write_engine),
                   IdentitySystems.from_settings(settings),
                   SenderPolicy(parse_allowed_senders("HIS^BVCR")), "MINIPACS")
    seeds = [orm("NW", "BN-F", "ACC-F"), omi("NW", "BN-F", "ACC-G", ("F1", "F2")),
             "\r".join([msh("ADT^A40", "F3"), pid("BN-F"), "MRG|BN-G^^^BVCR^MR"]),
             "MSH", "MSH|^~\\&|HIS|BVCR"]
    rnd = random.Random(20250301)
    seen: dict[str, int] = {}
    for _ in range(300):
        data = bytearray(rnd.choice(seeds).encode())
        for _ in range(rnd.randint(1, 5)):
            at = rnd.randrange(len(data) or 1)
            roll = rnd.random()
            if roll < 0.4 and data:
                data[at] = rnd.choice(b"|^~\\&\r\n\x00\xffAZ09")
            elif roll < 0.7:
                del data[at:at + rnd.randint(1, 20)]
            else:
                data[at:at] = bytes(rnd.choice(b"|^~\\&\rMSHPIDORC")
                                    for _ in range(rnd.randint(1, 5)))
        answer = door.answer(bytes(data), "127.0.0.1").decode()
        # The ACK copies the sender's delimiters (MSH-1/2), so find MSA by position.
        msa = next((s for s in answer.split("\r") if s.startswith("MSA")), "")
        code = msa[4:6]
        assert code in ("AA", "AE", "AR"), (bytes(data), answer)
        assert code == "AA" or "\rERR" in answer, (bytes(data), answer)
        seen[code] = seen.get(code, 0) + 1
    assert seen.get("AR", 0) > 0 and seen.get("AA", 0) > 0, seen


def test_control_characters_in_a_message_are_rejected_before_anything_is_written(
        hl7_server: ServerProcess, tmp_path: Path) -> None:
    accession = _accession()
    answer = send(hl7_server, orm("NW", "BN-NUL", accession).replace("Khai", "Kh\x00ai"))
    assert ack_code(answer) == "AR" and err(answer)[0] == "102", str(answer)
    assert "control character 0x00" in err(answer)[1]
    assert worklist(hl7_server, tmp_path, accession) == []


def test_with_a_certificate_the_mllp_port_speaks_tls_to_senders_it_trusts_only(
        tmp_path: Path, backends: Backends) -> None:
    """MINIPACS_HL7_TLS_CERT/_KEY: MLLP inside TLS; MINIPACS_HL7_TLS_CA: the sender's
    certificate must be signed by it. A plain-TCP sender, one without a certificate and
    one with a certificate the CA did not sign get no ACK, nothing of theirs is written,
    each is logged, and the port keeps serving."""
    made = {}
    for name in ("server", "sender", "stranger"):
        (tmp_path / name).mkdir()
        made[name] = _certificate(tmp_path / name)
    (cert, key), (sender_cert, sender_key) = made["server"], made["sender"]
    (tmp_path / "data").mkdir()
    server = ServerProcess(tmp_path / "data", backends.server_args(), env={
        "MINIPACS_HL7_PORT": "0", "MINIPACS_HL7_HOST": "127.0.0.1",
        "MINIPACS_HL7_ALLOWED_SENDERS": SENDERS, "MINIPACS_LOAD_SAMPLES": "false",
        "MINIPACS_HL7_TLS_CERT": str(cert), "MINIPACS_HL7_TLS_KEY": str(key),
        "MINIPACS_HL7_TLS_CA": str(sender_cert)}).start()
    try:
        port = hl7_port(server)

        def client(identity: tuple[Path, Path] | None) -> ssl.SSLContext:
            context = ssl.create_default_context(cafile=str(cert))  # checks our server
            if identity is not None:
                context.load_cert_chain(*map(str, identity))
            return context

        def order(tls: ssl.SSLContext | None) -> tuple[str, hl7.Message | None]:
            accession = _accession()
            payload = orm("NW", "BN-TLS-1", accession).encode("utf-8")
            return accession, _run(_exchange(port, payload, framed=True, tls=tls))

        accession, ack = order(client((sender_cert, sender_key)))
        assert ack is not None and ack_code(ack) == "AA"
        assert [str(ds.PatientName) for ds in worklist(server, tmp_path, accession)] == [NAME]
        # The audit event names the certificate the sender showed.
        events = server.http.get("/admin/audit", params={"patient_id": "BN-TLS-1"}).json()
        [event] = [e for e in events if e["action"] == "hl7 ORM^O01" and accession in e["detail"]]
        assert event["detail"].endswith("over TLS, certificate CN=localhost")
        assert event["source"] == "127.0.0.1" and event["actor"] == "hl7:HIS^BVCR"

        for tls in (None, client(None), client(made["stranger"])):
            refused, ack = order(tls)
            assert ack is None
            assert worklist(server, tmp_path, refused) == []
        log = server.log()
        assert log.count("TLS handshake failed") == 3, log[-3000:]

        again, ack = order(client((sender_cert, sender_key)))
        assert ack is not None and ack_code(ack) == "AA"
    finally:
        server.stop()


def test_an_hl7_certificate_without_its_key_or_a_ca_alone_stops_the_start(
        settings: Settings, tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    with pytest.raises(SystemExit, match=r"MINIPACS_HL7_TLS_KEY \(PEM files\)$"):
        hl7_tls_context(settings.model_copy(update={"hl7_tls_cert": cert}))
    with pytest.raises(SystemExit, match="MINIPACS_HL7_TLS_CA alone"):
        hl7_tls_context(settings.model_copy(update={"hl7_tls_ca": cert}))
    with pytest.raises(SystemExit, match=f"cannot use the HL7 TLS certificate {key}"):
        hl7_tls_context(settings.model_copy(update={"hl7_tls_cert": key,
                                                    "hl7_tls_key": key}))


def test_the_integration_guides_order_example_reaches_the_worklist_as_it_says(
        hl7_server: ServerProcess, tmp_path: Path) -> None:
    """docs/emr-integration.md's ORM^O01, sent as printed: the modality sees the patient,
    the step and the modality the guide says (a field off by one had dropped CT)."""
    guide = (REPO / "docs" / "emr-integration.md").read_text(encoding="utf-8")
    example = guide.split("A new order (ORM^O01", 1)[1].split("```", 2)[1].strip("\n")
    accession = _accession()  # the guide's numbers, made unique for this run
    message = example.replace("ACC20250301-7", accession).replace("20250301-7", accession)
    assert ack_code(send(hl7_server, message.replace("\n", "\r"))) == "AA"
    [item] = worklist(hl7_server, tmp_path, accession)
    assert str(item.PatientName) == "Nguyễn^Thị Minh Khai" and item.PatientID == "BN0012345"
    assert [(o.PatientID, o.IssuerOfPatientID) for o in item.OtherPatientIDsSequence] == [
        ("079185000123", "CCCD"), ("DN4790123456789", "BHYT")]
    [step] = item.ScheduledProcedureStepSequence
    assert (step.Modality, step.ScheduledProcedureStepStartDate) == ("CT", "20250310")
