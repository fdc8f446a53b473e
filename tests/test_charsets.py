"""Per-AE character-set options: unlabelled or mislabelled Vietnamese from a modality is
stored readable; consoles that cannot show UTF-8 get ASCII answers, storage unchanged."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import httpx
from pydicom import Dataset, dcmread
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    ModalityWorklistInformationFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from conftest import ServerProcess
from dimse_peers import c_find, dataset_bytes
from factories import make_dataset, to_part10
from retrieve_peers import register_ae

NAME = "Nguyễn^Văn Đức"


def _title(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:8].upper()


def _send(server: ServerProcess, path: Path, calling: str) -> Dataset:
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        return assoc.send_c_store(path)
    finally:
        assoc.release()


def _raw_utf8_instance(tmp_path: Path, patient_id: str, label: str | None) -> Path:
    """An instance whose PatientName bytes are UTF-8, labelled `label` (None: no label)."""
    ds = make_dataset(patient_id=patient_id, study_uid=generate_uid())
    if label is None:
        del ds.SpecificCharacterSet
    else:
        ds.SpecificCharacterSet = label
    ds[0x00100010] = DataElement(0x00100010, "PN", NAME.encode("utf-8"))
    path = tmp_path / f"{patient_id}.dcm"
    path.write_bytes(to_part10(ds))
    return path


def _stored_name(server: ServerProcess, patient_id: str) -> str:
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 192"
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = patient_id
    query.PatientName = ""
    (match,) = c_find(server, query)
    return str(match.PatientName)


def test_unlabelled_utf8_from_an_ae_with_a_default_charset_is_stored_readable(
    server: ServerProcess, tmp_path: Path
) -> None:
    calling = _title("NL")
    register_ae(server, calling, 104, default_charset="ISO_IR 192")
    patient_id = "CS-DEF-" + calling
    path = _raw_utf8_instance(tmp_path, patient_id, label=None)
    status = _send(server, path, calling)
    assert status.Status == 0xB000  # coercion of data elements (PS3.4 B.2.3)
    assert _stored_name(server, patient_id) == NAME


def test_mislabelled_latin1_that_is_really_utf8_is_remapped(
    server: ServerProcess, tmp_path: Path
) -> None:
    calling = _title("ML")
    register_ae(server, calling, 104, charset_remap_from="ISO_IR 100",
                charset_remap_to="ISO_IR 192")
    patient_id = "CS-MAP-" + calling
    path = _raw_utf8_instance(tmp_path, patient_id, label="ISO_IR 100")
    assert _send(server, path, calling).Status == 0xB000
    assert _stored_name(server, patient_id) == NAME
    # only the label changed: the name's bytes are the ones the modality sent
    study = dcmread(path).StudyInstanceUID
    qido = httpx.get(f"{server.dicomweb_url}/studies/{study}/metadata", headers=server.auth).json()
    assert qido[0]["00080005"]["Value"] == ["ISO_IR 192"]


def test_same_bytes_from_an_ae_without_options_are_stored_untouched(
    server: ServerProcess, tmp_path: Path
) -> None:
    patient_id = "CS-NONE-" + uuid.uuid4().hex[:6]
    path = _raw_utf8_instance(tmp_path, patient_id, label="ISO_IR 100")
    assert _send(server, path, "PLAINAE").Status == 0x0000
    assert _stored_name(server, patient_id) != NAME  # decoded as Latin-1, as labelled
    study = dcmread(path).StudyInstanceUID
    series = dcmread(path).SeriesInstanceUID
    sop = dcmread(path).SOPInstanceUID
    response = httpx.get(
        f"{server.dicomweb_url}/studies/{study}/series/{series}/instances/{sop}",
            headers=server.auth)
    body = response.content
    assert dataset_bytes(path.read_bytes()) in body


def test_ascii_responses_go_only_to_the_ae_that_asked_for_them(
    server: ServerProcess, tmp_path: Path
) -> None:
    calling = _title("OLD")
    register_ae(server, calling, 104, ascii_responses=True)
    patient_id = "CS-ASCII-" + calling
    ds = make_dataset(patient_id=patient_id, patient_name=NAME, StudyDescription="Chụp ngực")
    path = tmp_path / "vn.dcm"
    path.write_bytes(to_part10(ds))
    assert _send(server, path, "MODALITY1").Status == 0x0000

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = patient_id
    query.PatientName = ""
    query.StudyDescription = ""
    query.SpecificCharacterSet = ""
    ae = AE(ae_title=calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    matches = [ds for status, ds in assoc.send_c_find(
        query, StudyRootQueryRetrieveInformationModelFind) if status.Status == 0xFF00]
    httpx.post(f"{server.http_url}/admin/worklist",
               json={"patient_id": patient_id, "patient_name": NAME, "modality": "CT"},
                   headers=server.auth)
    mwl = Dataset()
    mwl.PatientID = patient_id
    mwl.PatientName = ""
    mwl.ScheduledProcedureStepSequence = Sequence([])
    items = [ds for status, ds in assoc.send_c_find(mwl, ModalityWorklistInformationFind)
             if status.Status == 0xFF00]
    assoc.release()
    (match,) = matches
    assert str(match.PatientName) == "Nguyen^Van Duc"
    assert match.StudyDescription == "Chup nguc"
    assert match.get("SpecificCharacterSet", "") in ("", "ISO_IR 6")
    assert str(items[0].PatientName) == "Nguyen^Van Duc"
    assert _stored_name(server, patient_id) == NAME  # others still get UTF-8
    stored = dcmread(io.BytesIO(path.read_bytes()))
    assert str(stored.PatientName) == NAME


def test_unlabelled_utf8_query_from_an_ae_with_a_default_charset_finds_its_patient(
    server: ServerProcess, tmp_path: Path
) -> None:
    # A modality that stores without (0008,0005) also queries without it: its "Nguyễn*"
    # must be read in its registered charset, like what it stored.
    calling = _title("NQ")
    register_ae(server, calling, 104, default_charset="ISO_IR 192")
    patient_id = "CS-QRY-" + calling
    assert _send(server, _raw_utf8_instance(tmp_path, patient_id, label=None),
                 calling).Status == 0xB000

    def query() -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.PatientID = patient_id
        ds[0x00100010] = DataElement(0x00100010, "PN", "Nguyễn^Văn*".encode())
        return ds

    (match,) = c_find(server, query(), calling=calling)
    assert str(match.PatientName) == NAME
    # The same bytes from an AE without the option are read as the default repertoire.
    assert c_find(server, query(), calling="PLAINAE") == []
