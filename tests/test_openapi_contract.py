"""The OpenAPI document is a contract: every operation declares the statuses and media
types it answers, a bad value for any parameter is a 4xx it declares (never FastAPI's
422) in the error format, and bounded property-based fuzzing from the document
(schemathesis) finds no 5xx, no undocumented status or media type, and changes no data
on the shared server."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import ServerProcess

pytestmark = pytest.mark.door_only  # runs in the embedded pass only (conftest.py)

DICOMWEB_PREFIXES = ("/dicom-web", "/wado")
# A value each kind of parameter cannot take (by name first, then by schema type).
BAD_BY_NAME = {
    "study": "not-a-uid", "series": "1.2.x", "instance": "1..2", "frames": "one,two",
    "tag": "ZZZZ", "limit": "lots", "offset": "-3", "fuzzymatching": "perhaps",
    "includefield": "NoSuchKeyword", "window": "a,b", "viewport": "wide",
    "quality": "500", "accept": "text/x-nothing", "requestType": "NOPE",
    "studyUID": "x", "seriesUID": "x", "objectUID": "x", "contentType": "text/x-nothing",
    "frameNumber": "0", "rows": "-1", "columns": "huge", "imageQuality": "101",
    "include_cancelled": "maybe", "windowCenter": "c", "windowWidth": "w",
    "transferSyntax": "not-a-uid",
}
BAD_BY_TYPE = {"integer": "one", "boolean": "maybe", "number": "n"}


@schemathesis.serializer('multipart/related; type="application/dicom"', "multipart/related")
def _multipart_body(ctx: Any, value: Any) -> bytes:
    """STOW-RS bodies as schemathesis generates them: arbitrary bytes (the document says
    only "binary"), which the server must refuse with a declared 4xx, never a 5xx."""
    return value if isinstance(value, bytes) else str(value).encode()


def _openapi(server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(f"{server.http_url}/openapi.json", timeout=10, headers=server.auth)
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in document["paths"].items()
            for method, op in item.items() if method in ("get", "put", "post", "delete")]


def test_every_operation_declares_its_error_statuses_and_media_types(
    server: ServerProcess,
) -> None:
    document = _openapi(server)
    assert "HTTPValidationError" not in document["components"]["schemas"]
    operations = _operations(document)
    assert len(operations) > 30
    for path, method, op in operations:
        responses = op["responses"]
        where = f"{method.upper()} {path}"
        assert "422" not in responses, where
        if op.get("parameters") or "requestBody" in op:
            assert "400" in responses, where
        for status in (s for s in responses if s.startswith("4") and s != "409"):
            if path.startswith("/fhir"):  # FHIR errors are OperationOutcomes (tests/test_fhir)
                assert "application/fhir+json" in responses[status]["content"], where
                continue
            error_media = responses[status]["content"]["application/json"]["schema"]
            assert error_media == {"$ref": "#/components/schemas/Error"}, f"{where} {status}"
        if "{" in path:
            assert "404" in responses, where
        if path.startswith(DICOMWEB_PREFIXES) and method == "get":
            assert "406" in responses, where
            ok = responses["200"]["content"]
            assert "application/json" not in ok, f"{where} does not answer application/json"
        for status, entry in responses.items():
            if status not in ("204", "303", "304"):  # no body: nothing, or a redirect
                assert entry.get("content"), f"{where} {status} declares no media type"



def _bad_value(param: dict[str, Any]) -> str:
    name = param["name"]
    if name in BAD_BY_NAME:
        return BAD_BY_NAME[name]
    schema = param.get("schema", {})
    limits = [s.get("maxLength") for s in [schema, *schema.get("anyOf", [])]
              if s.get("maxLength")]
    if limits:  # free text with a length limit: one character too many
        return "x" * (limits[0] + 1)
    kinds = [schema.get("type")] + [s.get("type") for s in schema.get("anyOf", [])]
    for kind in kinds:
        if kind in BAD_BY_TYPE:
            return BAD_BY_TYPE[kind]
    return "%00\\bad"


def test_a_bad_value_for_each_parameter_is_a_declared_4xx_in_the_error_format(
    empty_server: ServerProcess,
) -> None:
    """Against a throwaway server: some operations write (PUT, POST, DELETE)."""
    document = _openapi(empty_server)
    checked = 0
    with httpx.Client(base_url=empty_server.http_url, timeout=30,
                      headers=empty_server.auth) as client:
        for path, method, op in _operations(document):
            if path.startswith("/fhir"):
                continue  # FHIR's own rules for bad searches: tests/test_fhir.py
            good_path = {p["name"]: "1.2.3" for p in op.get("parameters", [])
                         if p["in"] == "path"}
            for param in op.get("parameters", []):
                values = dict(good_path)
                query: dict[str, str] = {}
                if param["in"] == "path":
                    values[param["name"]] = _bad_value(param)
                elif param["in"] == "query":
                    query[param["name"]] = _bad_value(param)
                else:
                    continue
                json_body = {"bogus": []} if "requestBody" in op else None
                if json_body is not None and "multipart/related" in str(op["requestBody"]):
                    json_body = None
                response = client.request(method.upper(), path.format(**values),
                                          params=query, json=json_body)
                where = f"{method.upper()} {path} with {param['name']}={_bad_value(param)!r}"
                assert response.status_code != 422, where
                assert 400 <= response.status_code < 500, f"{where}: {response.status_code}"
                assert str(response.status_code) in op["responses"], \
                    f"{where}: {response.status_code} is not declared"
                body = response.json()
                assert isinstance(body.get("error"), str) and body["error"], where
                checked += 1
            if "requestBody" in op:
                content = op["requestBody"]["content"]
                headers = {"Content-Type": "application/json"}
                if "application/json" not in content:
                    headers = {"Content-Type": "text/plain"}
                response = client.request(method.upper(), path.format(**good_path),
                                          content=b'{"port": "not a number"', headers=headers)
                where = f"{method.upper()} {path} with a malformed body"
                assert response.status_code in (400, 415), f"{where}: {response.status_code}"
                assert str(response.status_code) in op["responses"], where
                assert response.json()["error"], where
                checked += 1
    assert checked > 60


def _fuzz(server: ServerProcess, *, methods: tuple[str, ...], max_examples: int,
          budget_s: float) -> tuple[list[str], int]:
    """Run schemathesis over the operations with these methods: failures as text, and
    how many requests were sent."""
    schema = schemathesis.openapi.from_url(f"{server.http_url}/openapi.json")
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    failures: list[str] = []
    sent = [0]
    deadline = time.monotonic() + budget_s
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.lower() not in methods or time.monotonic() > deadline:
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            response = case.call(base_url=server.http_url, timeout=30, headers=server.auth)
            sent[0] += 1
            assert response.status_code < 500, \
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
            case.validate_response(response, checks=checks)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:2000])
    return failures, sent[0]


def test_fuzzing_read_routes_finds_no_5xx_nor_undocumented_answers_and_changes_nothing(
    server: ServerProcess,
) -> None:
    before = httpx.get(f"{server.http_url}/healthz", timeout=10, headers=server.auth).json()
    failures, sent = _fuzz(server, methods=("get",), max_examples=25, budget_s=45)
    assert sent > 100
    after = httpx.get(f"{server.http_url}/healthz", timeout=10, headers=server.auth).json()
    assert before == after
    assert failures == [], "\n\n".join(failures)


@pytest.mark.timeout(180)
def test_fuzzing_write_routes_on_a_throwaway_server_finds_no_5xx(
    empty_server: ServerProcess,
) -> None:
    failures, sent = _fuzz(empty_server, methods=("put", "post", "delete"), max_examples=20,
                           budget_s=45)
    assert sent > 40
    assert failures == [], "\n\n".join(failures)
    assert httpx.get(f"{empty_server.http_url}/healthz", timeout=10,
                     headers=empty_server.auth).status_code == 200
