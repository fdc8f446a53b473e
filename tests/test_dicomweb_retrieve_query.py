"""WADO-RS transfer syntax negotiation, metadata caching headers, QIDO-RS completeness,
WADO-URI, CORS and the OpenAPI description, against real servers."""

from __future__ import annotations

import gzip
import io

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from conftest import ServerProcess
from dicomweb_peers import Stored, multipart_parts, store
from factories import make_instance

DICOM = 'multipart/related; type="application/dicom"'


@pytest.fixture(scope="module")
def rle(server: ServerProcess) -> Stored:
    return store(server, make_instance(transfer_syntax=RLELossless, frames=2,
                                       patient_name="Đặng^Thị Lan", patient_id="RQ-1",
                                       InstitutionName="BV Đà Nẵng"))[0]


def _get(server: ServerProcess, path: str, accept: str | None = None, **params: str
         ) -> httpx.Response:
    headers = {"Accept": accept} if accept else {}
    return httpx.get(server.dicomweb_url + path,
                     headers={**server.auth, **headers}, params=params, timeout=60)


# ---------------------------------------------------------------------- WADO-RS retrieve
def test_retrieve_without_transfer_syntax_is_explicit_vr_little_endian(
    server: ServerProcess, rle: Stored
) -> None:
    response = _get(server, rle.path, DICOM)
    assert response.headers["content-type"].endswith(f"transfer-syntax={ExplicitVRLittleEndian}")
    ((headers, data),) = multipart_parts(response)
    ds = dcmread(io.BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPInstanceUID == rle.sop  # a new encoding, never a new instance
    assert np.array_equal(ds.pixel_array, rle.dataset().pixel_array)
    assert headers["content-type"] == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"


def test_retrieve_as_stored_and_as_implicit_vr(server: ServerProcess, rle: Stored) -> None:
    ((_, stored),) = multipart_parts(_get(server, rle.path, DICOM + "; transfer-syntax=*"))
    assert stored == rle.data
    ((_, implicit),) = multipart_parts(
        _get(server, f"/studies/{rle.study}/series/{rle.series}",
             f"{DICOM}; transfer-syntax={ImplicitVRLittleEndian}"))
    assert dcmread(io.BytesIO(implicit)).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian


def test_retrieve_in_a_syntax_we_cannot_produce_is_406(server: ServerProcess, rle: Stored
                                                       ) -> None:
    response = _get(server, f"/studies/{rle.study}", f"{DICOM}; transfer-syntax={JPEG2000Lossless}")
    assert response.status_code == 406
    assert RLELossless in response.json()["error"]
    # ...unless the client also accepts something we can send
    fallback = f"{DICOM}; transfer-syntax={JPEG2000Lossless}, {DICOM}; transfer-syntax=*; q=0.5"
    assert _get(server, f"/studies/{rle.study}", fallback).status_code == 200


def test_dicomweb_client_retrieves_study_series_and_instance(server: ServerProcess,
                                                             rle: Stored) -> None:
    client = DICOMwebClient(url=server.dicomweb_url, headers=server.auth)
    assert [ds.SOPInstanceUID for ds in client.retrieve_study(rle.study)] == [rle.sop]
    assert [ds.SOPInstanceUID for ds in client.retrieve_series(rle.study, rle.series)] == [
        rle.sop]
    assert client.retrieve_instance(rle.study, rle.series, rle.sop).SOPInstanceUID == rle.sop


# ---------------------------------------------------------------------- metadata
def test_metadata_has_an_etag_answers_304_and_is_gzipped(server: ServerProcess, rle: Stored
                                                        ) -> None:
    url = f"{server.dicomweb_url}/studies/{rle.study}/metadata"
    with httpx.Client(headers=server.auth) as client:
        first = client.get(url, headers={"Accept-Encoding": "gzip"})
        raw = client.build_request("GET", url, headers={"Accept-Encoding": "gzip"})
        streamed = client.send(raw, stream=True)
        body = b"".join(streamed.iter_raw())
        streamed.close()
    assert first.headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == first.content
    assert first.json()[0]["00100010"]["Value"][0]["Alphabetic"] == "Đặng^Thị Lan"
    etag = first.headers["etag"]
    again = httpx.get(url, headers={**server.auth, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert httpx.get(url, headers={**server.auth, "If-None-Match": '"other"'}).status_code == 200
    assert httpx.get(url,
                     headers={**server.auth, "Accept": "application/dicom+xml"}).status_code == 406


# ---------------------------------------------------------------------- QIDO-RS
@pytest.mark.parametrize(
    ("resource", "level_url"),
    [("/studies", "{base}/studies/{study}"),
     ("/series", "{base}/studies/{study}/series/{series}"),
     ("/instances", "{base}/studies/{study}/series/{series}/instances/{sop}"),
     ("/studies/{study}/series", "{base}/studies/{study}/series/{series}"),
     ("/studies/{study}/instances", "{base}/studies/{study}/series/{series}/instances/{sop}"),
     ("/studies/{study}/series/{series}/instances",
      "{base}/studies/{study}/series/{series}/instances/{sop}")],
)
def test_every_qido_resource_answers_with_retrieve_urls(
    server: ServerProcess, rle: Stored, resource: str, level_url: str
) -> None:
    uids = {"study": rle.study, "series": rle.series, "sop": rle.sop}
    response = _get(server, resource.format(**uids), PatientID="RQ-1")
    assert response.status_code == 200
    (match,) = response.json()
    assert match["00081190"]["Value"] == [level_url.format(base=server.dicomweb_url, **uids)]


def test_series_and_instances_across_studies_carry_study_attributes(
    server: ServerProcess, rle: Stored
) -> None:
    (series,) = _get(server, "/series", PatientID="RQ-1").json()
    assert series["00100010"]["Value"][0]["Alphabetic"] == "Đặng^Thị Lan"
    assert series["0020000D"]["Value"] == [rle.study]
    (instance,) = _get(server, "/instances", PatientID="RQ-1").json()
    assert instance["00080060"]["Value"] == ["CT"]  # a series attribute
    assert instance["00080020"]["Value"] == ["20240315"]  # a study attribute


def test_study_level_required_attributes(server: ServerProcess, rle: Stored) -> None:
    (study,) = _get(server, "/studies", PatientID="RQ-1").json()
    assert study["00080061"]["Value"] == ["CT"]
    assert study["00201206"]["Value"] == [1] and study["00201208"]["Value"] == [1]
    assert study["00080056"]["Value"] == ["ONLINE"]
    assert "00080080" not in study
    (all_fields,) = _get(server, "/studies", PatientID="RQ-1", includefield="all").json()
    assert all_fields["00080080"]["Value"] == ["BV Đà Nẵng"]


@pytest.mark.parametrize("name", ["dang thi lan", "lan", "DANG", "đặng*", "thi"])
def test_fuzzy_matching_ignores_case_diacritics_and_d_stroke(server: ServerProcess,
                                                             rle: Stored, name: str) -> None:
    found = _get(server, "/studies", PatientName=name, fuzzymatching="true").json()
    assert rle.study in [s["0020000D"]["Value"][0] for s in found]


@pytest.mark.parametrize(
    ("params", "named"),
    [({"StudyInstanceUID": "1.2.abc"}, "StudyInstanceUID"),
     ({"includefield": "NotAKeyword"}, "NotAKeyword"),
     ({"SeriesNumber": "one"}, "SeriesNumber"),
     ({"fuzzymatching": "maybe"}, "fuzzymatching"),
     ({"offset": "x"}, "offset")],
)
def test_bad_qido_parameters_are_400_naming_the_parameter(
    server: ServerProcess, params: dict[str, str], named: str
) -> None:
    path = "/series" if "SeriesNumber" in params else "/studies"
    response = _get(server, path, **params)
    assert response.status_code == 400
    assert named in response.json()["error"]


def test_query_results_are_capped_by_the_configured_maximum(limited_server: ServerProcess
                                                            ) -> None:
    store(limited_server, *[make_instance(patient_id="CAP-1") for _ in range(3)])
    response = _get(limited_server, "/studies", PatientID="CAP-1", limit="50")
    assert len(response.json()) == 2
    assert response.headers["warning"].startswith("299 ")


# ---------------------------------------------------------------------- WADO-URI
def test_wado_uri_returns_the_instance_or_a_rendered_image(server: ServerProcess,
                                                           rle: Stored) -> None:
    params = {"requestType": "WADO", "studyUID": rle.study, "seriesUID": rle.series,
              "objectUID": rle.sop}
    url = f"{server.http_url}/wado"
    dicom = httpx.get(url, params={**params, "contentType": "application/dicom"},
                      headers=server.auth)
    assert dicom.headers["content-type"] == "application/dicom" and dicom.content == rle.data
    explicit = httpx.get(url, params={**params, "contentType": "application/dicom",
                                      "transferSyntax": ExplicitVRLittleEndian},
                                          headers=server.auth)
    assert dcmread(io.BytesIO(explicit.content)).file_meta.TransferSyntaxUID == (
        ExplicitVRLittleEndian)
    jpeg = httpx.get(url, params=params, headers=server.auth)
    assert Image.open(io.BytesIO(jpeg.content)).format == "JPEG"
    png = httpx.get(url, params={**params, "contentType": "image/png", "rows": "32",
                                 "windowCenter": "0", "windowWidth": "500", "frameNumber": "2"},
                                     headers=server.auth)
    assert Image.open(io.BytesIO(png.content)).size == (32, 32)


@pytest.mark.parametrize(
    ("change", "status"),
    [({"requestType": "WADOX"}, 400), ({"objectUID": "1.2.3.4.5.6.7"}, 404),
     ({"windowCenter": "40"}, 400), ({"contentType": "text/html"}, 406),
     ({"studyUID": "bad uid"}, 400), ({"anonymize": "yes"}, 400)],
)
def test_wado_uri_errors(server: ServerProcess, rle: Stored, change: dict[str, str],
                         status: int) -> None:
    params = {"requestType": "WADO", "studyUID": rle.study, "seriesUID": rle.series,
              "objectUID": rle.sop, **change}
    assert httpx.get(f"{server.http_url}/wado", params=params,
                     headers=server.auth).status_code == status


# ---------------------------------------------------------------------- CORS, OpenAPI
def test_cors_allows_the_configured_origin_only(limited_server: ServerProcess,
                                                server: ServerProcess) -> None:
    origin = "https://viewer.example.org"
    preflight = httpx.options(
        f"{limited_server.dicomweb_url}/studies",
        headers={**limited_server.auth, "Origin": origin, "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "accept"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    simple = httpx.get(f"{limited_server.dicomweb_url}/studies",
                       headers={**limited_server.auth, "Origin": origin})
    assert simple.headers["access-control-allow-origin"] == origin
    assert "ETag" in simple.headers["access-control-expose-headers"]
    other = httpx.get(f"{limited_server.dicomweb_url}/studies",
                      headers={**limited_server.auth, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    default = httpx.get(f"{server.dicomweb_url}/studies", headers={**server.auth, "Origin": origin})
    assert "access-control-allow-origin" not in default.headers


def test_openapi_describes_every_endpoint_and_parameter(server: ServerProcess) -> None:
    spec = httpx.get(f"{server.http_url}/openapi.json", headers=server.auth).json()
    series = "/dicom-web/studies/{study}/series/{series}"
    instance = series + "/instances/{instance}"
    expected = [
        "/dicom-web/studies", "/dicom-web/series", "/dicom-web/instances",
        "/dicom-web/studies/{study}/series", "/dicom-web/studies/{study}/instances",
        "/dicom-web/studies/{study}/series/{series}/instances", "/dicom-web/studies/{study}",
        "/dicom-web/studies/{study}/series/{series}", instance,
        "/dicom-web/studies/{study}/metadata", series + "/metadata",
        instance + "/metadata", instance + "/frames/{frames}", instance + "/bulkdata/{tag}",
        "/dicom-web/studies/{study}/rendered", series + "/rendered",
        instance + "/rendered", instance + "/frames/{frames}/rendered",
        "/dicom-web/studies/{study}/thumbnail",
        "/dicom-web/studies/{study}/series/{series}/thumbnail", instance + "/thumbnail", "/wado",
    ]
    assert [p for p in expected if p not in spec["paths"]] == []
    stow = spec["paths"]["/dicom-web/studies"]["post"]
    assert 'multipart/related; type="application/dicom"' in stow["requestBody"]["content"]
    assert {"202", "409", "413", "415"} <= set(stow["responses"])
    rendered = {p["name"] for p in spec["paths"][instance + "/rendered"]["get"]["parameters"]}
    assert {"window", "viewport", "quality"} <= rendered
    qido = {p["name"] for p in spec["paths"]["/dicom-web/series"]["get"]["parameters"]}
    assert {"limit", "offset", "fuzzymatching", "includefield"} <= qido
    wado = {p["name"] for p in spec["paths"]["/wado"]["get"]["parameters"]}
    assert {"requestType", "studyUID", "seriesUID", "objectUID", "contentType"} <= wado
