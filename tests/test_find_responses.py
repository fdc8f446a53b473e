"""Responses we encode ourselves (C-FIND's in `dimse/find_responses.py`, C-STORE's and
C-ECHO's in `dimse/response_encoding.py`) are the bytes pynetdicom would send; over a
real association they arrive whole, however small the peer's PDUs. (The identifiers'
own encoding: tests/test_plain_encoding.py.)"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from conftest import ServerProcess
from dimse_peers import c_find, storescu
from factories import make_instance
from minipacs.dimse.find_responses import pending_response

pytestmark = pytest.mark.door_only  # the DIMSE door's encoding; C-FIND on every backend
# is what the rest of the suite runs



def _pynetdicom_bytes(context_id: int, sop_class: str, message_id: int, status: int,
                      identifier: bytes, max_pdu: int) -> bytes:
    """What pynetdicom's `send_msg` hands its DUL for the same response, encoded."""
    rsp = C_FIND()
    rsp.MessageID = message_id
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.Status = status
    rsp.Identifier = BytesIO(identifier)
    message = C_FIND_RSP()
    message.primitive_to_message(rsp)
    return b"".join(P_DATA_TF(p).encode() for p in message.encode_msg(context_id, max_pdu))


@pytest.mark.parametrize("max_pdu", [0, 16384, 4096, 64, 21])
@pytest.mark.parametrize("size", [2, 57, 300, 5000])
def test_pending_responses_are_the_bytes_pynetdicom_sends(max_pdu: int, size: int) -> None:
    identifier = bytes(range(256)) * (size // 256) + bytes(size % 256)
    for context_id, sop_class, message_id, status in [
        (1, str(StudyRootQueryRetrieveInformationModelFind), 1, 0xFF00),
        (7, str(ModalityWorklistInformationFind), 65535, 0xFF01),  # odd-length UID
        (255, "1.2.840.10008.5.1.4.1.2.1.1", 300, 0xFF00),
    ]:
        assert pending_response(context_id, sop_class, message_id, status, identifier,
                                max_pdu) == _pynetdicom_bytes(
            context_id, sop_class, message_id, status, identifier, max_pdu)


def test_identifiers_arrive_whole_over_tiny_pdus_and_in_batches(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Over a real association: more matches than one batch, a peer whose PDUs are
    smaller than one identifier (fragments), and the same answers as with large PDUs."""
    patient_id = "FR-" + generate_uid()[-10:]
    files = []
    for n in range(19):
        path = tmp_path / f"{n}.dcm"
        path.write_bytes(make_instance(study_uid=generate_uid(), patient_id=patient_id,
                                       patient_name="Nguyễn^Văn An",
                                       study_date=f"202301{n + 1:02d}"))
        files.append(path)
    assert storescu(server, *files).returncode == 0
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 192"
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = patient_id
    for keyword in ("PatientName", "StudyInstanceUID", "StudyDate", "ModalitiesInStudy",
                    "NumberOfStudyRelatedInstances", "StudyDescription"):
        setattr(query, keyword, "")

    def answers(max_pdu: int) -> list[bytes]:
        ae = AE(ae_title="TESTFIND")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title,
                             max_pdu=max_pdu)
        assert assoc.is_established
        found = []
        try:
            statuses = []
            for status, ds in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                statuses.append(status.Status)
                if ds is not None:
                    found.append(encode(ds, True, True))
            assert statuses == [0xFF00] * 19 + [0x0000]
        finally:
            assoc.release()
        return sorted(found)

    small = answers(64)  # PS3.8 allows any length; every identifier is cut in pieces
    assert small == answers(0)  # unlimited: one PDU per message part
    names = {str(dcm_name) for dcm_name in (_decoded(b).PatientName for b in small)}
    assert names == {"Nguyễn^Văn An"}
    assert len(c_find(server, query)) == 19


def _decoded(data: bytes) -> Dataset:
    from pynetdicom.dsutils import decode
    return decode(BytesIO(data), True, True)


def _pynetdicom_message_bytes(primitive: Any, context_id: int, max_pdu: int) -> bytes:
    from pynetdicom.dimse import _RSP_TO_MESSAGE  # pynetdicom's own primitive -> message map

    message = _RSP_TO_MESSAGE[type(primitive)]()
    message.primitive_to_message(primitive)
    return b"".join(P_DATA_TF(p).encode() for p in message.encode_msg(context_id, max_pdu))


@pytest.mark.parametrize("max_pdu", [0, 16384, 64, 21])
def test_store_and_echo_responses_are_the_bytes_pynetdicom_sends(max_pdu: int) -> None:
    from pynetdicom.dimse_primitives import C_ECHO, C_STORE

    from minipacs.dimse.response_encoding import encoded_response

    for status in (0x0000, 0xA700, 0xB007, 0xC000):
        for instance in ("1.2.3.4", "1.2.826.0.1.3680043.8.498.1234567890123456789012345"):
            store = C_STORE()
            store.MessageID = store.MessageIDBeingRespondedTo = 42
            store.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            store.AffectedSOPInstanceUID = instance
            store.Status = status
            assert encoded_response(store, 3, max_pdu) == _pynetdicom_message_bytes(
                store, 3, max_pdu)
        echo = C_ECHO()
        echo.MessageID = echo.MessageIDBeingRespondedTo = 65535
        echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
        echo.Status = status
        assert encoded_response(echo, 1, max_pdu) == _pynetdicom_message_bytes(echo, 1, max_pdu)


def test_responses_with_more_than_a_status_are_left_to_pynetdicom() -> None:
    from pynetdicom.dimse_primitives import C_ECHO, C_STORE

    from minipacs.dimse.response_encoding import encoded_response

    def store(**fields: Any) -> C_STORE:
        rsp = C_STORE()
        rsp.MessageID = rsp.MessageIDBeingRespondedTo = 1
        rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        rsp.AffectedSOPInstanceUID = "1.2.3"
        rsp.Status = 0x0000
        for name, value in fields.items():
            setattr(rsp, name, value)
        return rsp

    assert encoded_response(store(), 1, 0) is not None
    assert encoded_response(store(Status=0xA900, ErrorComment="bad UID"), 1, 0) is None
    assert encoded_response(store(Status=0xA900, OffendingElement=[0x0020000D]), 1, 0) is None
    assert encoded_response(store(AffectedSOPInstanceUID=None), 1, 0) is None
    request = store()
    request.MessageIDBeingRespondedTo = None  # a request (C-GET's sub-operations)
    assert encoded_response(request, 1, 0) is None
    find = C_FIND()
    find.MessageIDBeingRespondedTo = 1
    find.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    find.Status = 0x0000
    assert encoded_response(find, 1, 0) is None
    echo = C_ECHO()
    echo.MessageIDBeingRespondedTo = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    echo.Status = 0x0000
    echo.ErrorComment = "x"
    assert encoded_response(echo, 1, 0) is None


@pytest.fixture
def scripted_find() -> Iterator[tuple[int, list[Any]]]:
    """Our DICOM transport (event-driven associations, `serve_find`) on a free port,
    with a C-FIND handler that yields what each test puts in the script: a status and
    identifier, or an exception to raise."""
    from pynetdicom import evt

    from minipacs.dimse.server import build_ae
    from minipacs.dimse.transport_limits import (
        ConnectionLedger,
        TransportLimits,
        start_guarded_server,
    )

    script: list[Any] = []

    def handler(event: Any) -> Iterator[Any]:
        for step in script:
            if isinstance(step, Exception):
                raise step
            yield step

    limits = TransportLimits()
    server = start_guarded_server(build_ae("SCRIPTED"), ("127.0.0.1", 0),
                                  [(evt.EVT_C_FIND, handler)], limits,
                                  ConnectionLedger(limits))
    try:
        yield server.server_address[1], script
    finally:
        server.shutdown()
        server.server_close()


def _answers(port: int, queries: int = 1) -> list[list[tuple[int, str | None]]]:
    """The responses to `queries` C-FINDs, one after the other on one association."""
    ae = AE(ae_title="TESTFIND")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="SCRIPTED")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = ""
    try:
        return [[(status.Status, None if ds is None else str(ds.PatientName))
                 for status, ds in assoc.send_c_find(
                     query, StudyRootQueryRetrieveInformationModelFind)]
                for _ in range(queries)]
    finally:
        assoc.release()


def _match(name: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = name
    return ds


def test_a_handler_failing_midway_ends_the_query_with_0xc311_after_what_it_sent(
    scripted_find: tuple[int, list[Any]],
) -> None:
    port, script = scripted_find
    script += [(0xFF00, _match("Lê^Bình")), RuntimeError("index gone")]
    assert _answers(port, 2) == [[(0xFF00, "Lê^Bình"), (0xC311, None)]] * 2
    script.clear()  # the same server answers the next association as ever
    assert _answers(port) == [[(0x0000, None)]]


def test_statuses_pynetdicom_encodes_keep_their_place_among_ours(
    scripted_find: tuple[int, list[Any]],
) -> None:
    """A pending status given as a data set and a final warning (0xB001) or failure go
    through pynetdicom's encoder, among pending responses we write: the peer gets them
    in order, and nothing after a final status."""
    port, script = scripted_find
    status_set = Dataset()
    status_set.Status = 0xFF01
    script += [(0xFF00, _match("A")), (status_set, _match("B")), (0xFF00, _match("C"))]
    assert _answers(port) == [[(0xFF00, "A"), (0xFF01, "B"), (0xFF00, "C"), (0x0000, None)]]
    for final in (0xB001, 0xA700):
        script[:] = [(0xFF00, _match("A")), (final, None), (0xFF00, _match("never"))]
        # The second query on the association gets its own answers, nothing left over.
        assert _answers(port, 2) == [[(0xFF00, "A"), (final, None)]] * 2


def test_a_request_naming_a_malformed_sop_class_is_left_to_pynetdicom(
    scripted_find: tuple[int, list[Any]], caplog: pytest.LogCaptureFixture,
) -> None:
    """A C-FIND-RQ on a Find context whose Affected SOP Class UID is not a UID (a fuzzer
    found one with non-ASCII bytes) is handled as pynetdicom always did (it aborts: no
    service class for that UID), not by our encoder failing on it; the server serves on."""
    from pynetdicom.dimse_primitives import C_FIND as C_FIND_PRIMITIVE

    port, script = scripted_find
    script += [(0xFF00, _match("A"))]
    ae = AE(ae_title="TESTFIND")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="SCRIPTED")
    assert assoc.is_established
    context = assoc._get_valid_context(StudyRootQueryRetrieveInformationModelFind, "", "scu")
    request = C_FIND_PRIMITIVE()
    request.MessageID = 7
    request.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelFind
    request.Priority = 2
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    request.Identifier = BytesIO(encode(query, True, True))
    request._affected_sop_class_uid = "1.2.840.1000é.5.1.4.1.2.2.1"  # past the setter
    assoc.dimse.send_msg(request, context.context_id)
    deadline = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted  # pynetdicom's answer to a SOP class it has no service for
    ours = [r for r in caplog.records
            if r.name.startswith("minipacs") and r.levelno >= logging.ERROR]
    assert ours == []
    assert _answers(port) == [[(0xFF00, "A"), (0x0000, None)]]
