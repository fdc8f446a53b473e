"""Access tags: studies get tags when stored (by the calling AE, by rules on their
attributes, by an admin), and users, tokens and AEs limited to tags see only the studies
carrying one of theirs, through every door. A study outside the tags is "not found"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydantic import ValidationError
from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from requests.auth import HTTPBasicAuth

from conftest import Backends, ServerProcess
from dicomweb_peers import store
from dimse_peers import c_find, run_dcmtk, storescu
from factories import make_instance
from minipacs.config import Settings
from retrieve_peers import register_ae, start_store_scp

PASSWORD = "Tim-mach-2026-an-toan!"
RULES = [{"attribute": "InstitutionalDepartmentName", "pattern": "*chan doan hinh anh*",
          "tag": "cdha"}]


@dataclass(frozen=True)
class Stored:
    cardio: str  # stored by the AE TIM_MACH (tag cardio)
    neuro: str  # stored by the AE THAN_KINH (tag neuro)
    ruled: str  # stored over STOW with a department the rule tags cdha
    plain: str  # no tag at all
    cardio_patient: str
    neuro_patient: str


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory, backends: Backends
           ) -> Iterator[tuple[ServerProcess, Stored]]:
    server = ServerProcess(tmp_path_factory.mktemp("tags"),
                           ["--no-load-samples", *backends.server_args()],
                           env={"MINIPACS_ACCESS_TAG_RULES": json.dumps(RULES)})
    server.start()
    folder = tmp_path_factory.mktemp("tag-files")
    register_ae(server, "TIM_MACH", 104, store_tags=["cardio"])
    register_ae(server, "THAN_KINH", 104, store_tags=["neuro"])
    studies = {}
    for name, title, patient in (("cardio", "TIM_MACH", "BN-TM-1"),
                                 ("neuro", "THAN_KINH", "BN-TK-1")):
        studies[name] = generate_uid()
        files = []
        for n in range(2):  # two instances: the second finds its tags already there
            path = folder / f"{name}{n}.dcm"
            path.write_bytes(make_instance(study_uid=studies[name], patient_id=patient,
                                           InstitutionalDepartmentName="Khoa Tim mạch"))
            files.append(path)
        sent = storescu(server, *files, extra=("-aet", title))
        assert sent.returncode == 0, sent.stderr
    (ruled,) = store(server, make_instance(  # the rule ignores case and accents
        patient_id="BN-CDHA-1", InstitutionalDepartmentName="Khoa CHẨN ĐOÁN HÌNH ẢNH 2"))
    (plain,) = store(server, make_instance(patient_id="BN-PLAIN-1"))
    stored = Stored(studies["cardio"], studies["neuro"], ruled.study, plain.study,
                    "BN-TM-1", "BN-TK-1")
    done = server.cli("user", "add", "bs.tim", "--role", "radiologist", "--tags", "cardio",
                      "--password-stdin", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "access tags cardio" in done.stdout
    server.add_user("bs.tongquat", "radiologist", PASSWORD)
    yield server, stored
    server.stop()


def _basic(user: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode())
            .decode()}


def _qido(server: ServerProcess, headers: dict[str, str], **params: str) -> set[str]:
    found = httpx.get(f"{server.dicomweb_url}/studies", headers=headers, params=params,
                      timeout=60)
    assert found.status_code == 200, found.text
    return {m["0020000D"]["Value"][0] for m in found.json()}


def test_studies_carry_the_tags_of_their_calling_ae_and_of_the_rules(
    tagged: tuple[ServerProcess, Stored],
) -> None:
    server, s = tagged
    for study, tags in ((s.cardio, ["cardio"]), (s.neuro, ["neuro"]), (s.ruled, ["cdha"]),
                        (s.plain, [])):
        got = server.http.get(f"/admin/studies/{study}/access-tags")
        assert got.status_code == 200, got.text
        assert got.json()["access_tags"] == tags, study
    missing = server.http.get(f"/admin/studies/{generate_uid()}/access-tags")
    assert missing.status_code == 404


def test_a_user_limited_to_a_tag_finds_only_those_studies_over_qido_and_fhir(
    tagged: tuple[ServerProcess, Stored],
) -> None:
    server, s = tagged
    session = requests.Session()
    session.auth = HTTPBasicAuth("bs.tim", PASSWORD)  # as Weasis and OHIF send it
    client = DICOMwebClient(url=server.dicomweb_url, session=session)
    found = {m["0020000D"]["Value"][0] for m in client.search_for_studies()}
    assert found == {s.cardio}
    assert client.search_for_studies(search_filters={"StudyInstanceUID": s.neuro}) == []
    assert client.search_for_series(search_filters={"StudyInstanceUID": s.neuro}) == []
    assert client.search_for_instances(search_filters={"PatientID": s.neuro_patient}) == []
    series = client.search_for_series(search_filters={"StudyInstanceUID": s.cardio})
    assert len(series) == 2  # each instance its own series (the factory)
    # Everyone else: the unlimited user sees every study.
    assert _qido(server, _basic("bs.tongquat")) >= {s.cardio, s.neuro, s.ruled, s.plain}

    bundle = httpx.get(f"{server.http_url}/fhir/ImagingStudy", headers=_basic("bs.tim"),
                       timeout=60).json()
    uids = {e["resource"]["identifier"][0]["value"].removeprefix("urn:oid:")
            for e in bundle.get("entry", [])}
    assert uids == {s.cardio}
    assert bundle["total"] == 1
    patients = httpx.get(f"{server.http_url}/fhir/Patient", headers=_basic("bs.tim"),
                         params={"identifier": s.neuro_patient}, timeout=60).json()
    assert patients["total"] == 0
    patients = httpx.get(f"{server.http_url}/fhir/Patient", headers=_basic("bs.tim"),
                         params={"identifier": s.cardio_patient}, timeout=60).json()
    assert patients["total"] == 1
    # The change feed too: the limited user hears of its department's study only.
    feed = httpx.get(f"{server.http_url}/changes", headers=_basic("bs.tim"),
                     params={"since": 0, "limit": 1000}, timeout=60).json()
    assert {c["study_instance_uid"] for c in feed["changes"]} == {s.cardio}
    everyone = server.http.get("/changes", params={"since": 0, "limit": 1000}).json()
    assert {s.cardio, s.neuro, s.ruled, s.plain} <= {
        c["study_instance_uid"] for c in everyone["changes"]}


def test_a_retrieve_outside_the_tags_is_not_found_not_forbidden(
    tagged: tuple[ServerProcess, Stored],
) -> None:
    server, s = tagged
    with httpx.Client(base_url=server.dicomweb_url, headers=_basic("bs.tim"),
                      timeout=60) as tim:
        assert tim.get(f"/studies/{s.cardio}/metadata").status_code == 200
        assert tim.get(f"/studies/{s.cardio}").status_code == 200
        for path in ("", "/metadata", "/rendered", "/thumbnail"):
            answer = tim.get(f"/studies/{s.neuro}{path}")
            assert answer.status_code == 404, (path, answer.text)
        instance = httpx.get(f"{server.dicomweb_url}/studies/{s.neuro}/instances",
                             headers=server.auth, timeout=60).json()[0]
        series, sop = instance["0020000E"]["Value"][0], instance["00080018"]["Value"][0]
        path = f"/studies/{s.neuro}/series/{series}/instances/{sop}"
        assert tim.get(path).status_code == 404
        assert tim.get(path + "/frames/1").status_code == 404
        uri = httpx.get(f"{server.http_url}/wado", headers=_basic("bs.tim"), timeout=60,
                        params={"requestType": "WADO", "studyUID": s.neuro,
                                "seriesUID": series, "objectUID": sop})
        assert uri.status_code == 404
        fhir = httpx.get(f"{server.http_url}/fhir/ImagingStudy/{s.neuro}",
                         headers=_basic("bs.tim"), timeout=60)
        assert fhir.status_code == 404
        share = httpx.post(f"{server.http_url}/share-links", headers=_basic("bs.tim"),
                           json={"study_uid": s.neuro}, timeout=60)
        assert share.status_code == 404
        share = httpx.post(f"{server.http_url}/share-links", headers=_basic("bs.tim"),
                           json={"patient_id": s.neuro_patient}, timeout=60)
        assert share.status_code == 404
    # Not found for bs.tim only: an unlimited user opens it.
    assert httpx.get(f"{server.dicomweb_url}/studies/{s.neuro}/metadata",
                     headers=_basic("bs.tongquat"), timeout=60).status_code == 200


def test_a_limited_admin_cannot_delete_a_study_it_cannot_see(
    tagged: tuple[ServerProcess, Stored],
) -> None:
    server, _s = tagged
    victim = generate_uid()
    store(server, make_instance(study_uid=victim, patient_id="BN-DEL-1"))
    token = server.cli("token", "create", "admin-tim", "--role", "admin", "--tags", "cardio")
    assert token.returncode == 0, token.stderr
    headers = {"Authorization": f"Bearer {token.stdout.strip().splitlines()[-1]}"}
    assert httpx.delete(f"{server.http_url}/admin/studies/{victim}", headers=headers,
                        timeout=60).status_code == 404
    assert server.http.get(f"/dicom-web/studies/{victim}/metadata").status_code == 200


def test_admin_tagging_a_study_makes_it_visible_and_untagging_hides_it(
    tagged: tuple[ServerProcess, Stored],
) -> None:
    server, s = tagged
    tim = _basic("bs.tim")
    assert s.ruled not in _qido(server, tim)
    added = server.http.post(f"/admin/studies/{s.ruled}/access-tags",
                             json={"add": ["cardio"]})
    assert added.status_code == 200, added.text
    assert added.json()["access_tags"] == ["cardio", "cdha"]
    assert _qido(server, tim) == {s.cardio, s.ruled}
    assert httpx.get(f"{server.dicomweb_url}/studies/{s.ruled}/metadata", headers=tim,
                     timeout=60).status_code == 200
    removed = server.cli("study", "tags", s.ruled, "--remove", "cardio")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert f"study {s.ruled}: access tags cdha" in removed.stdout
    assert _qido(server, tim) == {s.cardio}
    trail = server.http.get("/admin/audit", params={"action": "study-tags"}).json()
    assert {e["study_instance_uid"] for e in trail} == {s.ruled}
    bad = server.http.post(f"/admin/studies/{s.ruled}/access-tags",
                           json={"add": ["khoa tim"]})
    assert bad.status_code == 400 and "khoa tim" in bad.json()["error"]


def test_user_and_token_tags_are_set_over_http_and_apply_at_once(
    tagged: tuple[ServerProcess, Stored],
) -> None:
    server, s = tagged
    created = server.http.post("/admin/tokens", json={"name": "emr-than-kinh", "role": "emr",
                                                       "access_tags": ["neuro"]})
    assert created.status_code == 201, created.text
    assert created.json()["access_tags"] == ["neuro"]
    bearer = {"Authorization": f"Bearer {created.json()['token']}"}
    assert _qido(server, bearer) == {s.neuro}
    changed = server.http.put(f"/admin/tokens/{created.json()['id']}/access-tags",
                              json={"access_tags": ["neuro", "cdha"]})
    assert changed.status_code == 200, changed.text
    assert _qido(server, bearer) == {s.neuro, s.ruled}
    lifted = server.http.put(f"/admin/tokens/{created.json()['id']}/access-tags",
                             json={"access_tags": []})
    assert lifted.json()["access_tags"] == []
    assert _qido(server, bearer) >= {s.cardio, s.neuro, s.ruled, s.plain}

    user = server.http.post("/admin/users", json={"username": "ky.thuat", "role":
                                                  "technologist", "password": PASSWORD,
                                                  "access_tags": ["cdha"]})
    assert user.status_code == 201, user.text
    assert _qido(server, _basic("ky.thuat")) == {s.ruled}
    moved = server.http.put("/admin/users/ky.thuat/access-tags",
                            json={"access_tags": ["neuro"]})
    assert moved.json()["access_tags"] == ["neuro"]
    assert _qido(server, _basic("ky.thuat")) == {s.neuro}
    listed = server.cli("user", "list")
    assert "ky.thuat" in listed.stdout and "tags neuro" in listed.stdout


def test_an_ae_limited_to_a_tag_finds_and_retrieves_only_those_studies(
    tagged: tuple[ServerProcess, Stored],
) -> None:
    server, s = tagged
    scp = start_store_scp()
    try:
        register_ae(server, scp.ae_title, scp.port, access_tags=["cardio"])
        found = run_dcmtk("findscu", "-S", "-aet", scp.ae_title, "-aec", server.ae_title,
                          "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
                          "-k", "PatientID", "127.0.0.1", str(server.dicom_port))
        assert found.returncode == 0, found.stderr
        output = found.stdout + found.stderr
        assert s.cardio in output
        assert s.neuro not in output and s.plain not in output and s.ruled not in output
        patients = Dataset()
        patients.QueryRetrieveLevel = "PATIENT"
        patients.PatientID = ""
        patients.NumberOfPatientRelatedStudies = ""
        seen = {str(d.PatientID): int(d.NumberOfPatientRelatedStudies)
                for d in c_find(server, patients, model="P", calling=scp.ae_title)}
        assert seen == {s.cardio_patient: 1}

        for study, expected in ((s.neuro, 0), (s.cardio, 2)):
            statuses = _move(server, scp.ae_title, study)
            assert statuses[-1] == 0x0000
            got = _get(server, scp.ae_title, study)
            assert len(got) == expected, study
        assert len(scp.received) == 2  # only the cardio study's instances were sent
        # The same AE, unlimited: it sees everything.
        register_ae(server, scp.ae_title, scp.port)
        assert len(_get(server, scp.ae_title, s.neuro)) == 2
    finally:
        scp.stop()


def _move(server: ServerProcess, calling: str, study: str) -> list[int]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        return [int(status.Status) for status, _ in assoc.send_c_move(
            identifier, calling, StudyRootQueryRetrieveInformationModelMove) if status]
    finally:
        assoc.release()


def _get(server: ServerProcess, calling: str, study: str) -> list[str]:
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title=calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        statuses = [int(status.Status) for status, _ in assoc.send_c_get(
            identifier, StudyRootQueryRetrieveInformationModelGet) if status]
    finally:
        assoc.release()
    assert statuses[-1] == 0x0000, statuses
    return received


def test_put_ae_sets_and_keeps_tls_and_tags(tagged: tuple[ServerProcess, Stored]) -> None:
    server, _s = tagged
    put = server.http.put("/admin/ae/PACS_BV", json={
        "host": "127.0.0.1", "port": 11113, "tls": True, "store_tags": ["cardio"],
        "access_tags": ["cardio", "neuro"]})
    assert put.status_code == 200, put.text
    got = server.http.get("/admin/ae/PACS_BV").json()
    assert got["tls"] is True
    assert got["store_tags"] == ["cardio"] and got["access_tags"] == ["cardio", "neuro"]
    # PUT replaces the entry: what the body leaves out takes its default.
    server.http.put("/admin/ae/PACS_BV", json={"host": "127.0.0.1", "port": 11113})
    got = server.http.get("/admin/ae/PACS_BV").json()
    assert got["tls"] is False and got["store_tags"] == [] and got["access_tags"] == []
    listed = server.cli("ae", "add", "PACS_BV2", "127.0.0.1", "11114", "--tls",
                        "--store-tags", "neuro")
    assert listed.returncode == 0, listed.stdout
    assert "tls store-tags=neuro" in server.cli("ae", "list").stdout


def test_rules_that_cannot_work_are_refused_at_start_with_what_to_change() -> None:
    with pytest.raises(ValidationError, match="'InstitutionDepartment' is not a DICOM "
                       "keyword"):
        Settings(access_tag_rules=json.dumps([{"attribute": "InstitutionDepartment",
                                               "pattern": "X", "tag": "x"}]))
    with pytest.raises(ValidationError, match="not JSON"):
        Settings(access_tag_rules="[{attribute: x}]")
    with pytest.raises(ValidationError, match="exactly the keys"):
        Settings(access_tag_rules=json.dumps([{"attribute": "Modality", "tag": "ct"}]))


def test_a_share_link_never_opens_more_than_its_creator_could_see(
    tagged: tuple[ServerProcess, Stored],
) -> None:
    server, _s = tagged
    seen, hidden = (store(server, make_instance(patient_id="BN-MIX-1"))[0].study
                    for _ in range(2))
    assert server.http.post(f"/admin/studies/{seen}/access-tags",
                            json={"add": ["cardio"]}).status_code == 200
    created = httpx.post(f"{server.http_url}/share-links", headers=_basic("bs.tim"),
                         json={"patient_id": "BN-MIX-1"}, timeout=60)
    assert created.status_code == 201, created.text
    token = created.json()["url"].split("#share=", 1)[1]
    with httpx.Client(base_url=server.http_url, timeout=60) as browser:
        opened = browser.post("/auth/share", json={"token": token})
        assert opened.status_code == 200, opened.text
        assert opened.json()["study_uids"] == [seen]
        assert _qido(server, {"Authorization": f"Bearer {opened.json()['access_token']}"}
                     ) == {seen}
        # Tagged later, the other study stays out of the link: its creator's tags hold.
        server.http.post(f"/admin/studies/{hidden}/access-tags", json={"add": ["neuro"]})
        assert browser.get(f"/dicom-web/studies/{hidden}/metadata").status_code in (403, 404)


def test_rules_match_any_value_ignoring_case_accents_and_brackets() -> None:
    from io import BytesIO

    from pydicom import dcmread

    from minipacs.access.tags import parse_rules, tags_by_rules

    rules = parse_rules(json.dumps([
        {"attribute": "InstitutionName", "pattern": "BV Bach Mai", "tag": "bachmai"},
        {"attribute": "StationName", "pattern": "CT?[1]", "tag": "ct1"},
        {"attribute": "ImageType", "pattern": "deriv*", "tag": "derived"},
    ]))
    ds = dcmread(BytesIO(make_instance(InstitutionName="BV  Bạch  Mai",
                                       StationName="CT9[1]",
                                       ImageType=["ORIGINAL", "DERIVED"])))
    assert tags_by_rules(rules, ds) == {"bachmai", "ct1", "derived"}
    ds.StationName = "CT91"  # '[' is a character, not fnmatch's class
    ds.InstitutionName = "BV Bach Mai 2"  # no '*': the whole value must match
    assert tags_by_rules(rules, ds) == {"derived"}
