"""Property-based fuzzing of the read routes once per account role (issue #11): with each
role's API token, schemathesis finds no 5xx, no undocumented status or media type, and
its `ignored_auth` check (which re-sends each accepted request without credentials and
with wrong ones) finds no route that answers without valid credentials. Then every
non-public operation is called with no credentials and with a garbage bearer token: all
401. Nothing in the archive changes and the audit trail still verifies. Write routes are
fuzzed as admin by tests/test_openapi_contract.py; here as four non-admin roles, on a
throwaway server.

The OpenAPI document declares no security scheme (auth is described in docs/security.md),
so the fuzzer's copy of it is given one here, from web/route_rules.py: a bearer token on
every route that is not public. That is what lets `ignored_auth` know which routes must
refuse."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    status_code_conformance,
)

from conftest import ServerProcess
from dicomweb_peers import store
from factories import make_instance
from minipacs.web.route_rules import PUBLIC, RULES
from test_openapi_contract import _openapi, _operations

pytestmark = pytest.mark.door_only  # runs in the embedded pass only (conftest.py)

ROLES = ("admin", "radiologist", "technologist", "clinician", "emr", "research", "auditor")
# Bounded by count, not by wall time, so a slow machine fuzzes exactly what a fast one
# does: admin (the most routes) gets three examples per operation, other roles one each.
EXAMPLES_PER_OPERATION = 3
CHECKS = [status_code_conformance, content_type_conformance, ignored_auth]


def _secured(document: dict[str, Any]) -> dict[str, Any]:
    """The document with a bearer scheme required by every non-public operation."""
    secured = copy.deepcopy(document)
    secured.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"}}
    for path, method, op in _operations(secured):
        if RULES.get((method.upper(), path)) != PUBLIC:
            op["security"] = [{"bearer": []}]
    return secured


def _state(server: ServerProcess) -> Any:
    health = httpx.get(f"{server.http_url}/healthz", timeout=10).json()
    verified = server.cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return health


def _fuzz_as(server: ServerProcess, schema: Any, token: str, methods: tuple[str, ...] = ("get",),
             examples: int = EXAMPLES_PER_OPERATION) -> tuple[list[str], int]:
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    sent = [0]
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.lower() not in methods:
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, database=None,
                  derandomize=True, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            response = case.call(base_url=server.http_url, headers=headers, timeout=30)
            sent[0] += 1
            assert response.status_code < 500, \
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
            case.validate_response(response, checks=CHECKS, headers=headers,
                                   transport_kwargs={"base_url": server.http_url})

        try:
            run()
        except (Exception, FailureGroup) as exc:  # collect every operation's failures
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:2000])
    return failures, sent[0]


@pytest.mark.timeout(240)
def test_fuzzing_read_routes_as_each_role_finds_no_5xx_no_ignored_auth_changes_nothing(
    server: ServerProcess,
) -> None:
    schema = schemathesis.openapi.from_dict(_secured(_openapi(server)))
    before = _state(server)
    report: dict[str, int] = {}
    failures: list[str] = []
    for role in ROLES:
        token = server.create_token(f"fuzz-{role}", role)
        role_failures, sent = _fuzz_as(server, schema, token,
                                       examples=EXAMPLES_PER_OPERATION if role == "admin" else 1)
        failures += [f"[{role}] {f}" for f in role_failures]
        report[role] = sent
    print("requests per role:", report)
    assert all(sent > 30 for sent in report.values()), report
    assert _state(server) == before
    assert failures == [], "\n\n".join(failures)


@pytest.mark.timeout(180)
def test_fuzzing_write_routes_as_non_admin_roles_on_a_throwaway_server_finds_no_5xx(
    empty_server: ServerProcess,
) -> None:
    schema = schemathesis.openapi.from_dict(_secured(_openapi(empty_server)))
    failures: list[str] = []
    report: dict[str, int] = {}
    for role in ("technologist", "clinician", "research", "auditor"):
        token = empty_server.create_token(f"fuzz-{role}", role)
        role_failures, sent = _fuzz_as(empty_server, schema, token,
                                       methods=("put", "post", "delete"), examples=3)
        failures += [f"[{role}] {f}" for f in role_failures]
        report[role] = sent
    print("write requests per role:", report)
    assert all(sent > 20 for sent in report.values()), report
    assert failures == [], "\n\n".join(failures)
    verified = empty_server.cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_every_non_public_operation_refuses_missing_and_garbage_credentials_with_401(
    server: ServerProcess,
) -> None:
    document = _openapi(server)
    before = _state(server)
    checked = 0
    with httpx.Client(base_url=server.http_url, timeout=30) as client:
        for path, method, _op in _operations(document):
            if RULES.get((method.upper(), path)) == PUBLIC:
                continue
            url = path.replace("{", "").replace("}", "")  # any value: auth comes first
            for headers in ({}, {"Authorization": "Bearer not-a-token-at-all"},
                            {"Authorization": "Basic YWRtaW46YWRtaW4="},
                            {"Authorization": "Bearer ' OR '1'='1"}):
                response = client.request(method.upper(), url, headers=headers)
                where = f"{method.upper()} {path} with {headers or 'no credentials'}"
                assert response.status_code == 401, f"{where}: {response.status_code}"
                body = response.json()
                assert body.get("error") or body.get("resourceType") == "OperationOutcome", \
                    f"{where}: {body}"
                checked += 1
    assert checked > 100
    assert _state(server) == before


def test_sql_looking_values_are_stored_and_matched_literally(server: ServerProcess) -> None:
    """Quotes, comment markers and OR-clauses in attributes are data: a query for the
    exact value finds that one study, a query for a similar one finds nothing."""
    marker = uuid.uuid4().hex[:8]
    patient_id = f"{marker}' OR '1'='1"
    name = f"O'Hara^{marker}'; DROP TABLE studies;--"
    [stored] = store(server, make_instance(patient_id=patient_id, patient_name=name))
    for params, found in (({"PatientID": patient_id}, 1), ({"PatientName": name}, 1),
                          ({"PatientID": f"x{marker}' OR '1'='1"}, 0),
                          ({"PatientID": "' OR 1=1 --"}, 0),
                          ({"PatientName": "*'; DROP TABLE studies;--"}, 1)):
        response = server.http.get("/dicom-web/studies", params=params,
                                   headers={"Accept": "application/dicom+json"})
        assert response.status_code in (200, 204), (params, response.text)
        studies = response.json() if response.status_code == 200 else []
        uids = [s["0020000D"]["Value"][0] for s in studies]
        if found:
            assert stored.study in uids, (params, uids)
        else:
            assert uids == [], (params, uids)
    health = server.http.get("/healthz").json()
    assert health["studies"] >= 1
