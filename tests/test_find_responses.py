"""C-FIND pending responses we encode ourselves (`dimse/find_responses.py`) are the bytes
pynetdicom would send, and identifiers we encode (`dicom/plain_encoding.py`) the bytes
pydicom would write; over a real association they arrive whole, however small the
peer's PDUs."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pydicom.valuerep import IS, DSfloat, PersonName
from pynetdicom import AE
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from conftest import SAMPLE_DIR, ServerProcess
from dimse_peers import c_find, storescu
from factories import make_instance
from minipacs.dicom.plain_encoding import encode_plain
from minipacs.dimse.find_responses import pending_response

pytestmark = pytest.mark.door_only  # the DIMSE door's encoding; C-FIND on every backend
# is what the rest of the suite runs

_VIETNAMESE = "Nguyễn^Văn An=阮^文安=グエン^ヴァン"


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


def _both_ways(ds: Dataset) -> None:
    # Ours first: pydicom's writer keeps the bytes it made in each PersonName, which
    # `encode_plain` then leaves to pydicom.
    ours = {implicit: encode_plain(ds, implicit) for implicit in (True, False)}
    for implicit in (True, False):
        assert ours[implicit] is not None, "expected the fast path"
        assert ours[implicit] == encode(ds, implicit, True), (
            "implicit VR" if implicit else "explicit VR")


def _plain_part(ds: Dataset) -> Dataset:
    """The elements of `ds` that an identifier may carry as plain text, names made
    from text as an identifier's are (one read from a file keeps its bytes, which are
    left to pydicom: see below)."""
    plain = Dataset()
    for elem in ds:
        if elem.VR == "PN":
            plain.add(DataElement(elem.tag, "PN", str(elem.value)))
        elif elem.VR in {"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR", "DS", "IS", "LO",
                         "LT", "SH", "ST", "UC", "UT"}:
            plain.add(elem)
    return plain


@pytest.mark.parametrize("path", sorted(SAMPLE_DIR.rglob("*.dcm"))[::5],
                         ids=lambda p: str(p.relative_to(SAMPLE_DIR)))
def test_sample_headers_encode_as_pydicom_writes_them(path: Path) -> None:
    ds = _plain_part(dcmread(path, stop_before_pixels=True))
    assert len(ds) > 10
    _both_ways(ds)


def test_odd_values_encode_as_pydicom_writes_them() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = _VIETNAMESE  # three component groups, UTF-8
    ds.ReferringPhysicianName = ["Trần^Thị", "Lê^Bình"]  # several names
    ds.OperatorsName = ""
    ds.PatientID = "123456789012"
    ds.StudyDescription = "CT ngực có cản quang"  # odd byte count: padded
    ds.ModalitiesInStudy = ["CT", "MR", ""]
    ds.StudyInstanceUID = "1.2.3.45"  # odd length: NUL padded
    ds.StudyDate = None
    ds.NumberOfStudyRelatedInstances = IS("0042")  # the original string kept
    ds.NumberOfStudyRelatedSeries = 3
    ds.SliceThickness = DSfloat("1.250")
    ds.PixelSpacing = [DSfloat("0.5"), 0.75]
    ds.add(DataElement(0x00081190, "UR", "http://pacs/studies/1 "))
    ds.add(DataElement(0x00400275, "UT", "dài " * 20000))  # beyond 64 KiB: 4-byte length
    ds.add(DataElement(0x00180015, "UC", ["ĐẦU", "CỔ"]))
    ds.add(DataElement(0x00204000, "LT", "dòng 1\\không tách"))
    ds.add(DataElement(0x00091010, "LO", "private, odd"))
    _both_ways(ds)
    ascii_only = Dataset()
    ascii_only.PatientName = "Nguyen^Van An"
    ascii_only.QueryRetrieveLevel = "STUDY"
    _both_ways(ascii_only)


def test_what_it_does_not_encode_is_left_to_pydicom() -> None:
    def with_(**elements: object) -> Dataset:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientID = "1"
        for keyword, value in elements.items():
            setattr(ds, keyword, value)
        return ds

    item = Dataset()
    item.CodeValue = "1"
    assert encode_plain(with_(ProcedureCodeSequence=[item]), True) is None  # SQ
    assert encode_plain(with_(PixelData=b"\0\0"), True) is None  # binary
    assert encode_plain(with_(SpecificCharacterSet="ISO_IR 100"), True) is None
    assert encode_plain(with_(SpecificCharacterSet=["", "ISO 2022 IR 87"]), True) is None
    assert encode_plain(with_(Modality="CTé"), True) is None  # CS is ASCII only
    no_charset = Dataset()
    no_charset.PatientName = "Nguyễn"  # ASCII declared: not ours to guess
    assert encode_plain(no_charset, True) is None
    read_back = PersonName(b"Nguy\xe1\xbb\x85n", ["utf_8"])  # bytes kept as read
    assert encode_plain(with_(PatientName=read_back), True) is None
    assert encode_plain(with_(StudyDescription="x" * 70000), False) is None  # 2-byte length
    assert encode_plain(with_(), True) == encode(with_(), True, True)


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
