"""STOW-RS (PS3.18 §10.5) against a real server: dicomweb-client and raw httpx bodies."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread
from pydicom.uid import RLELossless, generate_uid

from conftest import ServerProcess
from dicomweb_peers import multipart_parts, stow
from dimse_peers import c_find
from factories import make_dataset, make_instance

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _seq(body: dict[str, object], tag: str) -> list[dict[str, dict[str, list[object]]]]:
    return body.get(tag, {}).get("Value", [])  # type: ignore[attr-defined, no-any-return]


def test_dicomweb_client_stores_instances(server: ServerProcess) -> None:
    study = generate_uid()
    datasets = [make_dataset(study_uid=study), make_dataset(study_uid=study, modality="MR")]
    client = DICOMwebClient(url=server.dicomweb_url, headers=server.auth)
    response = client.store_instances(datasets)
    assert isinstance(response, Dataset)
    assert {item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence} == {
        ds.SOPInstanceUID for ds in datasets}
    assert "FailedSOPSequence" not in response
    found = client.search_for_series(study)
    assert sorted(s["00080060"]["Value"][0] for s in found) == ["CT", "MR"]


def test_stored_bytes_come_back_byte_exact_with_transfer_syntax_star(server: ServerProcess
                                                                     ) -> None:
    original = make_instance(transfer_syntax=RLELossless, frames=2)
    response = stow(server, original)
    assert response.status_code == 200
    (ref,) = _seq(response.json(), "00081199")
    url = ref["00081190"]["Value"][0]
    assert isinstance(url, str)
    ((headers, data),) = multipart_parts(httpx.get(url, headers={**server.auth,
                                                                  "Accept": AS_STORED}))
    assert data == original
    assert headers["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.5"


def test_partial_failure_is_202_with_reasons_per_instance(server: ServerProcess) -> None:
    study = generate_uid()
    good = make_instance(study_uid=study)
    other_study = make_instance()
    no_uid = make_instance(study_uid=study, SeriesInstanceUID=None)
    response = stow(server, good, b"this is not DICOM", other_study, no_uid, study=study)
    assert response.status_code == 202
    body = response.json()
    assert body["00081190"]["Value"] == [f"{server.dicomweb_url}/studies/{study}"]
    (stored,) = _seq(body, "00081199")
    assert stored["00081155"]["Value"] == [dcmread(io.BytesIO(good)).SOPInstanceUID]
    reasons = [item["00081197"]["Value"][0] for item in _seq(body, "00081198")]
    # 0xC000 cannot understand, 0xA901 other study (ours), 0xA900 missing UID
    assert reasons == [0xC000, 0xA901, 0xA900]
    refused = _seq(body, "00081198")[1]
    assert refused["00081155"]["Value"] == [dcmread(io.BytesIO(other_study)).SOPInstanceUID]
    assert httpx.get(f"{server.dicomweb_url}/studies",
                     params={"StudyInstanceUID": dcmread(io.BytesIO(other_study))
                             .StudyInstanceUID}, headers=server.auth).json() == []


def test_all_failed_is_409(server: ServerProcess) -> None:
    response = stow(server, b"garbage", b"more garbage")
    assert response.status_code == 409
    assert len(_seq(response.json(), "00081198")) == 2


@pytest.mark.parametrize(
    "content_type",
    ["application/dicom", 'multipart/related; type="application/dicom+json"; boundary=x',
     "application/json"],
)
def test_unsupported_media_types_are_415(server: ServerProcess, content_type: str) -> None:
    response = httpx.post(server.dicomweb_url + "/studies", content=make_instance(),
                          headers={**server.auth, "Content-Type": content_type})
    assert response.status_code == 415
    assert "multipart/related" in response.json()["error"]


def test_malformed_multipart_is_400(server: ServerProcess) -> None:
    response = httpx.post(
        server.dicomweb_url + "/studies", content=b"--b\r\n\r\nno closing boundary",
        headers={**server.auth,
                 "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
    assert response.status_code == 400
    assert "closing boundary" in response.json()["error"]


def test_upload_over_the_limit_is_413_and_nothing_is_stored(limited_server: ServerProcess
                                                            ) -> None:
    study = generate_uid()
    big = make_instance(study_uid=study, rows=512, columns=512)  # ~512 KiB > 300000
    response = stow(limited_server, big)
    assert response.status_code == 413
    assert "MINIPACS_MAX_UPLOAD_BYTES" in response.json()["error"]
    assert httpx.get(f"{limited_server.dicomweb_url}/studies/{study}/metadata"
                     , headers=limited_server.auth).status_code == 404


def test_stow_stored_instances_are_found_by_cfind(server: ServerProcess) -> None:
    study = generate_uid()
    assert stow(server, make_instance(study_uid=study, patient_name="Đặng^Quốc Bảo",
                                      patient_id="STOW-CF")).status_code == 200
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    query.PatientName = ""
    query.SpecificCharacterSet = "ISO_IR 192"
    (match,) = c_find(server, query)
    assert str(match.PatientName) == "Đặng^Quốc Bảo"


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def test_a_large_upload_is_streamed_not_held_in_memory(empty_server: ServerProcess) -> None:
    # 64 MiB of pixels; the server's peak memory must not grow by anything like that.
    big = make_instance(modality="MR", rows=1024, columns=1024, frames=32)
    assert empty_server.process is not None
    stow(empty_server, make_instance())  # warm up the code paths first
    before = _peak_rss_kib(empty_server.process.pid)
    response = stow(empty_server, big)
    assert response.status_code == 200, response.text
    grown = _peak_rss_kib(empty_server.process.pid) - before
    assert grown < 24 * 1024, f"peak RSS grew by {grown} KiB for a {len(big)} byte upload"
