"""The FHIR push against a real FHIR R4 server (SEKMET, `tests/fhir_peer.py`): a stored
study, once stable, is on the server as Patient + ImagingStudy; more images update it
rather than duplicate it; a server that is down is a failure admins see, retried (after
a restart too) until it is back."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.patient import Patient
from pydicom.uid import generate_uid

from backends import Backends
from conftest import ServerProcess
from dimse_peers import storescu
from factories import make_instance
from fhir_peer import FhirPeer

STABLE_SECONDS = 3
T = TypeVar("T")


def eventually(check: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    """`check()` once it is truthy; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)  # polling a condition with a deadline


@pytest.fixture
def fhir_peer(tmp_path: Path) -> Iterator[FhirPeer]:
    peer = FhirPeer(tmp_path / "fhir-server").start()
    yield peer
    peer.stop()


@pytest.fixture
def pushing_server(tmp_path: Path, backends: Backends, fhir_peer: FhirPeer
                   ) -> Iterator[ServerProcess]:
    (tmp_path / "pacs").mkdir()
    server = ServerProcess(tmp_path / "pacs", [
        "--no-load-samples", *backends.server_args(),
        "--fhir-push-url", fhir_peer.base_url, "--fhir-push-token", fhir_peer.token,
        "--fhir-push-stable-seconds", str(STABLE_SECONDS),
        "--fhir-push-interval-seconds", "0.2", "--fhir-push-retry-seconds", "0.5",
        "--fhir-push-retry-max-seconds", "1", "--fhir-push-timeout-seconds", "5",
        "--public-url", "https://pacs.example.org",
    ]).start()
    yield server
    server.stop()


def _store(server: ServerProcess, folder: Path, study: str, series: str, count: int,
           patient_id: str, **extra: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{generate_uid()}.dcm"
        path.write_bytes(make_instance(study_uid=study, series_uid=series,
                                       patient_id=patient_id, InstanceNumber=i + 1,
                                       **extra))
        paths.append(path)
    assert storescu(server, *paths).returncode == 0


def _study_on(peer: FhirPeer, study: str) -> list[dict[str, Any]]:
    return peer.search("ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{study}")


def _push_states(server: ServerProcess, state: str = "all") -> dict[str, dict[str, Any]]:
    answer = server.http.get("/admin/fhir-push", params={"state": state})
    assert answer.status_code == 200, answer.text
    return {s["study_instance_uid"]: s for s in answer.json()["studies"]}


def _pushed_state(server: ServerProcess, study: str) -> dict[str, Any] | None:
    state = _push_states(server).get(study)
    return state if state and state["state"] == "pushed" else None


def test_stable_study_is_created_on_the_fhir_server_then_updated_not_duplicated(
    pushing_server: ServerProcess, fhir_peer: FhirPeer, tmp_path: Path
) -> None:
    study, series = generate_uid(), generate_uid()
    _store(pushing_server, tmp_path / "a", study, series, 2, "PUSH001",
           PatientName="Trần^Thị Bích", AccessionNumber="ACCPUSH1")
    stored_at = time.monotonic()
    # Not stable yet: waiting, and nothing on the server. (Only provable while the
    # stable delay has not run out since the last instance: a loaded machine may take
    # longer than that to ask, and then the push may rightly have happened.)
    state = eventually(lambda: _push_states(pushing_server, "all").get(study),
                       "the push noticed the study")
    on_server = _study_on(fhir_peer, study)
    if time.monotonic() - stored_at < STABLE_SECONDS:
        assert state["state"] == "waiting", state
        assert on_server == []

    found = eventually(lambda: _study_on(fhir_peer, study), "ImagingStudy pushed")
    assert len(found) == 1
    imaging = ImagingStudy.model_validate(found[0])
    assert imaging.numberOfSeries == 1 and imaging.numberOfInstances == 2
    assert imaging.series and imaging.series[0].uid == series
    assert {i.value for i in imaging.identifier or []} >= {f"urn:oid:{study}", "ACCPUSH1"}
    contained = {c["address"] for c in found[0]["contained"]}
    assert "https://pacs.example.org/dicom-web" in contained  # where the images are
    patients = fhir_peer.search("Patient", identifier="PUSH001")
    assert len(patients) == 1
    patient = Patient.model_validate(patients[0])
    assert imaging.subject.reference == f"Patient/{patient.id}"
    assert patient.name and patient.name[0].family == "Trần"
    # The ImagingStudy is on the server a moment before the push records its outcome.
    state = eventually(lambda: _pushed_state(pushing_server, study), "the push recorded")
    assert state["attempts"] == 0
    assert state["remote_imaging_study"] == f"ImagingStudy/{imaging.id}"
    assert state["remote_patient"] == f"Patient/{patient.id}"

    # More images of the same study: the same ImagingStudy is updated (If-Match).
    _store(pushing_server, tmp_path / "b", study, generate_uid(), 1, "PUSH001",
           PatientName="Trần^Thị Bích", AccessionNumber="ACCPUSH1")

    def updated() -> list[dict[str, Any]] | None:
        now = _study_on(fhir_peer, study)
        return now if now and now[0].get("numberOfInstances") == 3 else None

    again = eventually(updated, "ImagingStudy updated to 3 instances")
    assert len(again) == 1 and again[0]["id"] == imaging.id
    assert again[0]["meta"]["versionId"] == "2"
    assert ImagingStudy.model_validate(again[0]).numberOfSeries == 2
    assert len(fhir_peer.search("Patient", identifier="PUSH001")) == 1
    assert _push_states(pushing_server, "open") == {}


def test_server_down_is_a_visible_failure_retried_after_a_restart_until_it_is_back(
    pushing_server: ServerProcess, fhir_peer: FhirPeer, tmp_path: Path
) -> None:
    fhir_peer.stop()
    study = generate_uid()
    _store(pushing_server, tmp_path / "a", study, generate_uid(), 1, "PUSHDOWN")

    def failed() -> dict[str, Any] | None:
        state = _push_states(pushing_server, "failed").get(study)
        return state if state and state["attempts"] >= 2 else None

    state = eventually(failed, "push failure with retries visible")
    assert f"cannot reach {fhir_peer.base_url}" in state["last_error"]
    status = pushing_server.cli("fhir-push", "status")
    assert status.returncode == 1 and "failed" in status.stdout and study in status.stdout

    # Still failing after a restart: the state is in the index, not in the process.
    pushing_server.stop()
    pushing_server.start()
    attempts = state["attempts"]
    eventually(lambda: (_push_states(pushing_server, "failed").get(study) or {}).get(
        "attempts", 0) > attempts, "retried after the restart")

    fhir_peer.start()  # the same port: the configured URL reaches it again
    found = eventually(lambda: _study_on(fhir_peer, study), "pushed once the server is back")
    assert len(found) == 1
    ImagingStudy.model_validate(found[0])
    eventually(lambda: _push_states(pushing_server)[study]["state"] == "pushed",
               "state pushed")
    assert pushing_server.cli("fhir-push", "status").returncode == 0


def test_admin_retry_queues_a_study_again_and_only_admins_see_the_push(
    pushing_server: ServerProcess, fhir_peer: FhirPeer, tmp_path: Path
) -> None:
    study = generate_uid()
    _store(pushing_server, tmp_path / "a", study, generate_uid(), 1, "PUSHRETRY")
    eventually(lambda: _study_on(fhir_peer, study), "first push")
    first = _study_on(fhir_peer, study)[0]
    queued = pushing_server.http.post("/admin/fhir-push/retry", params={"study": study})
    assert queued.status_code == 200 and queued.json() == {"queued": 1}
    eventually(lambda: _study_on(fhir_peer, study)[0]["meta"]["versionId"] == "2",
               "pushed again")
    assert [s["id"] for s in _study_on(fhir_peer, study)] == [first["id"]]

    url = f"{pushing_server.http_url}/admin/fhir-push"
    assert httpx.get(url, timeout=30).status_code == 401
    token = pushing_server.create_token("push-clinician", "clinician")
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"},
                     timeout=30).status_code == 403
    bad = pushing_server.http.post("/admin/fhir-push/retry", params={"study": "1.2.x"})
    assert bad.status_code == 400 and "1.2.x" in bad.text


@pytest.fixture
def two_pushing_nodes(backends: Backends, tmp_path: Path, fhir_peer: FhirPeer
                      ) -> Iterator[tuple[ServerProcess, ...]]:
    """Two nodes on one PostgreSQL database and one S3 bucket, both running the push."""
    shared = {"database_url": backends.postgres.create_database(), **backends.s3_settings()}
    nodes = []
    try:
        for name in ("node-a", "node-b"):
            (tmp_path / name).mkdir()
            nodes.append(ServerProcess(tmp_path / name, [
                "--no-load-samples", *backends.server_args(shared),
                "--fhir-push-url", fhir_peer.base_url, "--fhir-push-token", fhir_peer.token,
                "--fhir-push-stable-seconds", "1", "--fhir-push-interval-seconds", "0.1",
            ]).start())
        yield tuple(nodes)
    finally:
        for node in nodes:
            node.stop()


def test_two_nodes_push_each_study_change_once(
    two_pushing_nodes: tuple[ServerProcess, ServerProcess], fhir_peer: FhirPeer,
    tmp_path: Path
) -> None:
    node_a, node_b = two_pushing_nodes
    study, series = generate_uid(), generate_uid()
    _store(node_a, tmp_path / "a", study, series, 2, "PUSHNODES")
    _store(node_b, tmp_path / "b", study, series, 2, "PUSHNODES")
    found = eventually(lambda: [s for s in _study_on(fhir_peer, study)
                                if s.get("numberOfInstances") == 4], "4 instances pushed")
    # A later study pushed too means both nodes went over the first one many times.
    later = generate_uid()
    _store(node_b, tmp_path / "c", later, generate_uid(), 1, "PUSHNODES")
    eventually(lambda: _study_on(fhir_peer, later), "later study pushed")
    eventually(lambda: _push_states(node_a, "open") == {}, "nothing left to push")
    now = _study_on(fhir_peer, study)
    assert len(now) == 1 and now[0]["id"] == found[0]["id"]
    # Pushed once per stable state: the version is how often it was written (at most
    # twice: once if all four instances were in before it became stable).
    assert now[0]["meta"]["versionId"] == found[0]["meta"]["versionId"]
    assert found[0]["meta"]["versionId"] in ("1", "2")
    assert _study_on(fhir_peer, later)[0]["meta"]["versionId"] == "1"
    assert len(fhir_peer.search("Patient", identifier="PUSHNODES")) == 1
