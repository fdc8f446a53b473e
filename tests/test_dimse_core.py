"""C-ECHO, C-STORE and C-FIND against the real server, with dcmtk and pynetdicom peers."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from conftest import ServerProcess
from dimse_peers import c_find, dataset_bytes, run_dcmtk, storescu
from factories import ENCODABLE_TRANSFER_SYNTAXES, make_instance


def _wado(server: ServerProcess, study: str, series: str, sop: str) -> bytes:
    url = f"{server.dicomweb_url}/studies/{study}/series/{series}/instances/{sop}"
    # transfer-syntax=*: as stored (without it PS3.18 §8.7.3.5.2 means Explicit VR LE)
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    response = httpx.get(url, timeout=30, headers={**server.auth, "Accept": accept})
    assert response.status_code == 200, response.text
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0]
    body = response.content
    head_end = body.index(b"\r\n\r\n") + 4
    tail = body.rindex(f"\r\n--{boundary}--".encode())
    return body[head_end:tail]


def test_echoscu_gets_an_answer(server: ServerProcess) -> None:
    result = run_dcmtk("echoscu", "-aec", server.ae_title, "127.0.0.1", str(server.dicom_port))
    assert result.returncode == 0, result.stderr


def test_storescu_then_findscu_then_wado_round_trip_vietnamese_name(
    server: ServerProcess, tmp_path: Path
) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    path = tmp_path / "ct.dcm"
    path.write_bytes(make_instance(study_uid=study, series_uid=series, sop_uid=sop,
                                   patient_name="Nguyễn^Văn An", patient_id="RT-VN-1"))
    stored = storescu(server, path)
    assert stored.returncode == 0, stored.stderr

    found = run_dcmtk(
        "findscu", "-S", "-aec", server.ae_title,
        "-k", "SpecificCharacterSet=ISO_IR 192", "-k", "QueryRetrieveLevel=STUDY",
        "-k", "PatientID=RT-VN-1", "-k", "PatientName", "-k", f"StudyInstanceUID={study}",
        "127.0.0.1", str(server.dicom_port),
    )
    assert found.returncode == 0, found.stderr
    assert "Nguyễn^Văn An" in found.stderr + found.stdout

    identifier = Dataset()
    identifier.SpecificCharacterSet = "ISO_IR 192"
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientName = "nguyễn^văn*"
    identifier.StudyInstanceUID = study
    (match,) = c_find(server, identifier)
    assert str(match.PatientName) == "Nguyễn^Văn An"

    qido = httpx.get(f"{server.dicomweb_url}/studies", params={"PatientID": "RT-VN-1"},
                     headers=server.auth).json()
    assert qido[0]["00100010"]["Value"][0]["Alphabetic"] == "Nguyễn^Văn An"

    retrieved = _wado(server, study, series, sop)
    assert dataset_bytes(retrieved) == dataset_bytes(path.read_bytes())
    assert str(dcmread(path).PatientName) == str(
        dcmread(__import__("io").BytesIO(retrieved)).PatientName)


@pytest.mark.parametrize("transfer_syntax", ENCODABLE_TRANSFER_SYNTAXES,
                         ids=lambda ts: ts.name)
def test_cstore_in_every_transfer_syntax_keeps_the_dataset_bytes(
    server: ServerProcess, tmp_path: Path, transfer_syntax: str
) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    path = tmp_path / "in.dcm"
    path.write_bytes(make_instance(study_uid=study, series_uid=series, sop_uid=sop,
                                   transfer_syntax=transfer_syntax))
    ae = AE(ae_title="TESTSTORE")
    ae.add_requested_context(CTImageStorage, [transfer_syntax])
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(path)  # sends the file's encoded dataset as is
    finally:
        assoc.release()
    assert status.Status == 0x0000
    retrieved = _wado(server, study, series, sop)
    assert dataset_bytes(retrieved) == dataset_bytes(path.read_bytes())
    assert dcmread(__import__("io").BytesIO(retrieved)).file_meta.TransferSyntaxUID == (
        transfer_syntax)


def test_every_storage_transfer_syntax_is_accepted_at_association() -> None:
    from minipacs.dimse.server import build_ae

    ae = build_ae("MINIPACS")
    ct = [cx for cx in ae.supported_contexts if cx.abstract_syntax == CTImageStorage][0]
    assert set(ALL_TRANSFER_SYNTAXES) <= set(ct.transfer_syntax)


def _send_dataset(server: ServerProcess, ds: Dataset) -> Dataset:
    ae = AE(ae_title="TESTSTORE")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        return assoc.send_c_store(ds)
    finally:
        assoc.release()


@pytest.mark.parametrize(
    ("change", "expected_status"),
    [({"StudyInstanceUID": None}, 0xA900), ({"SeriesInstanceUID": None}, 0xA900),
     ({"StudyInstanceUID": "1.2.abc"}, 0xA900)],
)
def test_dataset_with_missing_or_bad_uids_is_refused_and_the_association_carries_on(
    server: ServerProcess, change: dict[str, str | None], expected_status: int
) -> None:
    ds = dcmread(__import__("io").BytesIO(make_instance(patient_id="BAD-UID", **change)))
    status = _send_dataset(server, ds)
    assert status.Status == expected_status
    assert "UID" in str(status.get("ErrorComment", ""))
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientID = "BAD-UID"
    identifier.StudyInstanceUID = ""
    assert c_find(server, identifier) == []
    # the server still stores good data afterwards
    good = dcmread(__import__("io").BytesIO(make_instance(patient_id="GOOD-AFTER-BAD")))
    assert _send_dataset(server, good).Status == 0x0000


def test_garbage_on_the_dicom_port_does_not_stop_the_server(server: ServerProcess) -> None:
    for payload in (b"\x00" * 10, b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 40):
        with socket.create_connection(("127.0.0.1", server.dicom_port), timeout=5) as sock:
            sock.sendall(payload)
            sock.settimeout(5)
            try:
                sock.recv(1024)
            except (TimeoutError, ConnectionResetError):
                pass
    result = run_dcmtk("echoscu", "-aec", server.ae_title, "127.0.0.1", str(server.dicom_port))
    assert result.returncode == 0, result.stderr


def _store_many(server: ServerProcess, tmp_path: Path, **common: str) -> tuple[str, list[str]]:
    study, ct_series, mr_series = generate_uid(), generate_uid(), generate_uid()
    files = []
    sops = []
    for number, modality in enumerate(["CT", "CT", "MR"], start=1):
        sop = generate_uid()
        sops.append(sop)
        path = tmp_path / f"{number}.dcm"
        series = ct_series if modality == "CT" else mr_series
        path.write_bytes(make_instance(study_uid=study, series_uid=series, sop_uid=sop,
                                       modality=modality, InstanceNumber=number, **common))
        files.append(path)
    assert storescu(server, *files).returncode == 0
    return study, sops


def test_findscu_series_and_image_levels(server: ServerProcess, tmp_path: Path) -> None:
    study, sops = _store_many(server, tmp_path, patient_id="LEVELS-1")
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = study
    identifier.SeriesInstanceUID = ""
    identifier.Modality = "CT"
    identifier.NumberOfSeriesRelatedInstances = ""
    (series,) = c_find(server, identifier)
    assert series.Modality == "CT" and int(series.NumberOfSeriesRelatedInstances) == 2

    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID = study
    identifier.SeriesInstanceUID = ""
    identifier.SOPInstanceUID = "\\".join(sops[:2])
    found = c_find(server, identifier)
    assert sorted(str(ds.SOPInstanceUID) for ds in found) == sorted(sops[:2])


def test_findscu_date_range_wildcards_and_universal_keys(server: ServerProcess, tmp_path: Path
                                                         ) -> None:
    study, _ = _store_many(server, tmp_path, patient_id="RANGE-1", study_date="20190704",
                           accession_number="ACC-RANGE-77")
    result = run_dcmtk(
        "findscu", "-S", "-aec", server.ae_title, "-k", "QueryRetrieveLevel=STUDY",
        "-k", "StudyDate=20190701-20190710", "-k", "AccessionNumber=ACC-RANGE-7?",
        "-k", "PatientID=RANGE*", "-k", "StudyInstanceUID", "-k", "ModalitiesInStudy",
        "-k", "NumberOfStudyRelatedInstances", "127.0.0.1", str(server.dicom_port),
    )
    output = result.stdout + result.stderr
    assert study in output
    assert "CT\\MR" in output
    assert "[3 ]" in output or "[3]" in output
    miss = run_dcmtk(
        "findscu", "-S", "-aec", server.ae_title, "-k", "QueryRetrieveLevel=STUDY",
        "-k", "StudyDate=20190705-", "-k", "PatientID=RANGE-1", "-k", "StudyInstanceUID",
        "127.0.0.1", str(server.dicom_port),
    )
    assert study not in miss.stdout + miss.stderr


def test_sample_studies_are_listed_by_findscu_and_qido(server: ServerProcess) -> None:
    result = run_dcmtk(
        "findscu", "-S", "-aec", server.ae_title, "-k", "QueryRetrieveLevel=STUDY",
        "-k", "PatientName", "-k", "StudyInstanceUID", "-k", "SpecificCharacterSet=ISO_IR 192",
        "127.0.0.1", str(server.dicom_port),
    )
    assert result.returncode == 0
    qido = httpx.get(f"{server.dicomweb_url}/studies", params={"Manufacturer": ""},
                     headers=server.auth)
    assert qido.status_code == 200
    names = {m["00100010"]["Value"][0]["Alphabetic"] for m in qido.json()
             if "Value" in m.get("00100010", {})}
    assert any("Nguyễn" in n for n in names), names
    assert "Nguyễn" in result.stdout + result.stderr
