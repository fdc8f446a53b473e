"""C-FIND pending responses we encode ourselves (`dimse/find_responses.py`) are the bytes
pynetdicom would send; over a real association they arrive whole, however small the
peer's PDUs. (The identifiers' own encoding: tests/test_plain_encoding.py.)"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

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
