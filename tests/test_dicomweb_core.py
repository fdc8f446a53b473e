"""QIDO-RS and WADO-RS basics with the dicomweb-client library and httpx."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.uid import generate_uid

from conftest import ServerProcess
from dimse_peers import storescu
from factories import make_instance


@pytest.fixture(scope="module")
def stored(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("qido")
    uids = {"study": generate_uid(), "series": generate_uid(), "sop": generate_uid()}
    path = folder / "a.dcm"
    path.write_bytes(make_instance(
        study_uid=uids["study"], series_uid=uids["series"], sop_uid=uids["sop"],
        patient_name="Trần^Thị Thu Hà", patient_id="QIDO-1", accession_number="QACC-1",
        study_date="20240202", InstitutionName="Bệnh viện Demo",
    ))
    assert storescu(server, path).returncode == 0
    uids["path"] = str(path)
    return uids


@pytest.fixture
def client(server: ServerProcess) -> DICOMwebClient:
    return DICOMwebClient(url=server.dicomweb_url, headers=server.auth)


def test_dicomweb_client_searches_studies_by_fuzzy_name(
    client: DICOMwebClient, stored: dict[str, str]
) -> None:
    found = client.search_for_studies(
        search_filters={"PatientName": "tran thi thu*"}, fuzzymatching=True)
    assert [s["0020000D"]["Value"][0] for s in found] == [stored["study"]]
    assert found[0]["00100010"]["Value"][0]["Alphabetic"] == "Trần^Thị Thu Hà"
    assert found[0]["00081190"]["Value"][0].endswith(f"/studies/{stored['study']}")


def test_qido_series_and_instances_of_a_study(client: DICOMwebClient, stored: dict[str, str]
                                              ) -> None:
    series = client.search_for_series(stored["study"])
    assert [s["0020000E"]["Value"][0] for s in series] == [stored["series"]]
    instances = client.search_for_instances(stored["study"], stored["series"])
    assert [i["00080018"]["Value"][0] for i in instances] == [stored["sop"]]


def test_qido_tag_keys_includefield_and_date_range(server: ServerProcess,
                                                   stored: dict[str, str]) -> None:
    response = httpx.get(
        f"{server.dicomweb_url}/studies",
        params={"00100020": "QIDO-1", "StudyDate": "20240201-20240203",
                "includefield": "InstitutionName"},
     headers=server.auth)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+json")
    (study,) = response.json()
    assert study["00080080"]["Value"] == ["Bệnh viện Demo"]


def test_retrieve_instance_is_byte_identical(client: DICOMwebClient, server: ServerProcess,
                                             stored: dict[str, str]) -> None:
    ds = client.retrieve_instance(stored["study"], stored["series"], stored["sop"])
    assert ds.SOPInstanceUID == stored["sop"]
    assert str(ds.PatientName) == "Trần^Thị Thu Hà"
    raw = httpx.get(
        f"{server.dicomweb_url}/studies/{stored['study']}/series/{stored['series']}"
        f"/instances/{stored['sop']}"
    , headers=server.auth).content
    original = Path(stored["path"]).read_bytes()
    assert original[144 + int.from_bytes(original[140:144], "little"):] in raw


def test_metadata_has_bulkdata_uri_resolved_against_our_base(
    client: DICOMwebClient, server: ServerProcess, stored: dict[str, str]
) -> None:
    (meta,) = client.retrieve_series_metadata(stored["study"], stored["series"])
    assert meta["7FE00010"]["BulkDataURI"].startswith(server.dicomweb_url + "/studies/")
    assert meta["00100010"]["Value"][0]["Alphabetic"] == "Trần^Thị Thu Hà"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/studies/1.2.3.999999", 404),
        ("/studies/not-a-uid", 400),
        ("/studies/1.2.3.999999/series/1.2.3/metadata", 404),
        ("/studies?StudyDate=yesterday", 400),
        ("/studies?NoSuchKeyword=1", 400),
        ("/studies?limit=-1", 400),
    ],
)
def test_bad_requests_get_clear_errors(server: ServerProcess, path: str, status: int) -> None:
    response = httpx.get(server.dicomweb_url + path, headers=server.auth)
    assert response.status_code == status
    assert response.json()["error"]


def test_unservable_accept_is_406(server: ServerProcess, stored: dict[str, str]) -> None:
    response = httpx.get(
        f"{server.dicomweb_url}/studies/{stored['study']}",
        headers={**server.auth, "Accept": "application/pdf"},
    )
    assert response.status_code == 406


def test_limit_and_offset_page_through_results(server: ServerProcess, tmp_path: Path) -> None:
    files = []
    for n in range(3):
        path = tmp_path / f"{n}.dcm"
        path.write_bytes(make_instance(patient_id="PAGE-1", study_date=f"2021010{n + 1}"))
        files.append(path)
    assert storescu(server, *files).returncode == 0
    url = f"{server.dicomweb_url}/studies"
    first = httpx.get(url, params={"PatientID": "PAGE-1", "limit": 2}, headers=server.auth)
    assert len(first.json()) == 2 and "Warning" in first.headers
    rest = httpx.get(url, params={"PatientID": "PAGE-1", "limit": 2, "offset": 2},
                     headers=server.auth).json()
    assert len(rest) == 1
    dates = [s["00080020"]["Value"][0] for s in first.json() + rest]
    assert dates == ["20210103", "20210102", "20210101"]


def test_study_retrieve_returns_every_instance(server: ServerProcess, tmp_path: Path) -> None:
    study = generate_uid()
    files = []
    for n in range(3):
        path = tmp_path / f"{n}.dcm"
        path.write_bytes(make_instance(study_uid=study))
        files.append(path)
    assert storescu(server, *files).returncode == 0
    client = DICOMwebClient(url=server.dicomweb_url, headers=server.auth)
    instances = client.retrieve_study(study)
    assert len(instances) == 3
    assert {dcmread(io.BytesIO(f.read_bytes())).SOPInstanceUID for f in files} == {
        ds.SOPInstanceUID for ds in instances}
