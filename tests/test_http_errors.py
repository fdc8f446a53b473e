"""Bad HTTP input gets a 400 (or 404/405/415) in the project's error format, never
FastAPI's 422: the error names the parameter, the value and what is expected."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from backends import Backends
from conftest import ServerProcess

pytestmark = pytest.mark.door_only  # runs in the embedded pass only (conftest.py)


@pytest.fixture(scope="module")
def empty_server(tmp_path_factory: pytest.TempPathFactory,
                 backends: Backends) -> Iterator[ServerProcess]:
    """One empty server for the module: every request here is refused, so none of them
    changes what the next one sees (each test still checks that nothing was stored)."""
    proc = ServerProcess(tmp_path_factory.mktemp("errors") / "data",
                         ["--no-load-samples", *backends.server_args()])
    proc.data_dir.mkdir()
    proc.start()
    yield proc
    proc.stop()


def _error(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}, body
    return str(body["error"])


def test_admin_body_field_of_wrong_type_is_400_naming_field_and_value(
    empty_server: ServerProcess,
) -> None:
    response = httpx.put(f"{empty_server.http_url}/admin/ae/PEER",
                         json={"host": "127.0.0.1", "port": "eleven"}, timeout=10,
                             headers=empty_server.auth)
    assert response.status_code == 400
    error = _error(response)
    assert "'port'" in error and "'eleven'" in error and "integer" in error


def test_admin_body_missing_field_is_400_naming_it(empty_server: ServerProcess) -> None:
    response = httpx.put(f"{empty_server.http_url}/admin/ae/PEER", json={"port": 104},
                         timeout=10, headers=empty_server.auth)
    assert response.status_code == 400
    assert "'host' is required" in _error(response)


def test_admin_body_that_is_not_json_is_400(empty_server: ServerProcess) -> None:
    response = httpx.put(f"{empty_server.http_url}/admin/ae/PEER", content=b"{not json",
                         headers={**empty_server.auth, "Content-Type": "application/json"},
                         timeout=10)
    assert response.status_code == 400
    assert "not valid JSON" in _error(response)


def test_admin_body_in_another_media_type_is_415(empty_server: ServerProcess) -> None:
    response = httpx.put(f"{empty_server.http_url}/admin/ae/PEER", content=b"host=x",
                         headers={**empty_server.auth,
                                  "Content-Type": "application/x-www-form-urlencoded"},
                         timeout=10)
    assert response.status_code == 415
    assert "application/json" in _error(response)
    assert httpx.get(f"{empty_server.http_url}/admin/ae", timeout=10,
                     headers=empty_server.auth).json() == []


def test_query_parameter_of_wrong_type_is_400_naming_it(server: ServerProcess) -> None:
    response = httpx.get(f"{server.http_url}/admin/worklist",
                         params={"include_cancelled": "maybe"}, timeout=10, headers=server.auth)
    assert response.status_code == 400
    error = _error(response)
    assert "'include_cancelled'" in error and "'maybe'" in error


def test_wado_uri_frame_number_zero_is_400_not_422(server: ServerProcess) -> None:
    response = httpx.get(f"{server.http_url}/wado", params={
        "requestType": "WADO", "studyUID": "1.2", "seriesUID": "1.3", "objectUID": "1.4",
        "frameNumber": "0"}, timeout=10, headers=server.auth)
    assert response.status_code == 400
    assert "'frameNumber'" in _error(response)


def test_wado_uri_missing_parameter_is_400_naming_it(server: ServerProcess) -> None:
    response = httpx.get(f"{server.http_url}/wado", params={"requestType": "WADO"},
                         timeout=10, headers=server.auth)
    assert response.status_code == 400
    assert "studyUID" in _error(response) and "missing" in _error(response)


def test_unknown_path_and_method_answer_in_the_error_format(server: ServerProcess) -> None:
    missing = httpx.get(f"{server.http_url}/dicom-web/nothing-here", timeout=10,
                        headers=server.auth)
    assert missing.status_code == 404
    assert "/dicom-web/nothing-here" in _error(missing)
    wrong = httpx.patch(f"{server.http_url}/dicom-web/studies", timeout=10, headers=server.auth)
    assert wrong.status_code == 405
    assert "PATCH" in _error(wrong)
    assert "GET" in wrong.headers["allow"]


@pytest.mark.parametrize("segment", ["..%2F..", "1.2%2F..%2F3", "%2E%2E", "..", "1.2%5C3"])
def test_traversal_like_uid_is_400_naming_it(server: ServerProcess, segment: str) -> None:
    # Sent over a raw socket: httpx normalises '..' away before the request leaves it.
    path = f"/dicom-web/studies/{segment}/metadata"
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                     .encode())
        answer = b""
        for _ in range(1000):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:300]
    error = json.loads(body)["error"]
    assert ".." in error or "\\" in error
    assert "UID" in error


@pytest.mark.parametrize("value", ["' OR 1=1--", "x'; DROP TABLE instance;--", "%' OR '%'='"])
def test_sql_like_values_are_matched_literally(server: ServerProcess, value: str) -> None:
    before = httpx.get(f"{server.http_url}/healthz", timeout=10, headers=server.auth).json()
    for key in ("PatientName", "PatientID", "AccessionNumber", "StudyDescription"):
        response = httpx.get(f"{server.dicomweb_url}/studies", params={key: value},
                             timeout=10, headers=server.auth)
        assert response.status_code == 200, response.text
        assert response.json() == [] if response.content else True
    after = httpx.get(f"{server.http_url}/healthz", timeout=10, headers=server.auth).json()
    assert before == after


def test_sql_like_uid_is_400_naming_the_value(server: ServerProcess) -> None:
    response = httpx.get(f"{server.dicomweb_url}/studies",
                         params={"StudyInstanceUID": "1' OR '1'='1"}, timeout=10,
                             headers=server.auth)
    assert response.status_code == 400
    assert "1' OR '1'='1" in _error(response)


@pytest.mark.parametrize("path", [
    "/dicom-web/studies?PatientName=%00x", "/dicom-web/studies?Patient%00Name=x",
    "/admin/ae/%00bad", "/admin/worklist/A%00", "/dicom-web/studies/1.2%003/metadata",
    "/wado?requestType=WADO&studyUID=1%00&seriesUID=1&objectUID=1",
])
def test_nul_in_path_or_query_is_400_on_every_index(empty_server: ServerProcess,
                                                    path: str) -> None:
    response = httpx.get(empty_server.http_url + path, timeout=10, headers=empty_server.auth)
    assert response.status_code == 400
    assert "NUL" in _error(response)


@pytest.mark.parametrize(("path", "body"), [
    ("/admin/ae/PEER", {"host": "127.0.0.1", "port": 104, "description": "a\u0000b"}),
    ("/admin/worklist/S1", {"patient_id": "BN\u00001"}),
    ("/admin/worklist/S2", {"patient_id": "BN1", "requested_procedure_codes": [
        {"code_value": "1\u0000", "coding_scheme_designator": "LN"}]}),
])
def test_nul_in_an_admin_body_is_400_and_nothing_is_stored(
    empty_server: ServerProcess, path: str, body: dict[str, object],
) -> None:
    response = httpx.put(empty_server.http_url + path, json=body, timeout=10,
                         headers=empty_server.auth)
    assert response.status_code == 400
    assert "NUL" in _error(response)
    assert httpx.get(f"{empty_server.http_url}/admin/ae", timeout=10,
                     headers=empty_server.auth).json() == []
    assert httpx.get(f"{empty_server.http_url}/admin/worklist", timeout=10,
                     headers=empty_server.auth).json() == []
