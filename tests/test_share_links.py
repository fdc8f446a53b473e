"""Share links: a read-only, expiring, revocable view of one study or one patient, from a
real server, with links made by real accounts."""

from __future__ import annotations

import time

import httpx

from conftest import ServerProcess
from dicomweb_peers import store
from factories import make_instance


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _studies(client: httpx.Client, **params: str) -> set[str]:
    response = client.get("/dicom-web/studies", params=params)
    assert response.status_code == 200, response.text
    return {m["0020000D"]["Value"][0] for m in response.json()}


def test_a_study_link_opens_that_study_only_and_stops_when_revoked(
    empty_server: ServerProcess,
) -> None:
    server = empty_server
    (shared,) = store(server, make_instance(patient_id="BN-SHARE-1",
                                            patient_name="Phạm^Văn Đức"))
    (other,) = store(server, make_instance(patient_id="BN-SHARE-2"))
    doctor = server.create_token("bs-chuyen-vien", "radiologist")
    created = httpx.post(f"{server.http_url}/share-links", headers=_bearer(doctor),
                         json={"study_uid": shared.study, "pin": "2468", "expires_hours": 48,
                               "note": "chuyển viện Chợ Rẫy"})
    assert created.status_code == 201, created.text
    link = created.json()
    assert link["url"].startswith(f"{server.http_url}/viewer/#share=sh_")
    token = link["url"].split("#share=", 1)[1]
    assert token not in server.log()  # the fragment never reaches the server

    with httpx.Client(base_url=server.http_url, timeout=60) as browser:
        no_pin = browser.post("/auth/share", json={"token": token})
        assert no_pin.status_code == 401 and "PIN" in no_pin.json()["error"]
        opened = browser.post("/auth/share", json={"token": token, "pin": "2468"})
        assert opened.status_code == 200, opened.text
        assert opened.json()["study_uids"] == [shared.study]
        # The cookie session sees the shared study, and nothing else.
        assert _studies(browser) == {shared.study}
        assert _studies(browser, StudyInstanceUID=other.study) == set()
        assert browser.get(f"/dicom-web/studies/{shared.study}/metadata").status_code == 200
        assert browser.get(f"/dicom-web/studies/{other.study}/metadata").status_code == 403
        assert browser.get(f"/dicom-web/studies/{shared.study}").status_code == 403  # download
        assert browser.get(f"/dicom-web/studies/{shared.study}/thumbnail").status_code == 200
        assert browser.get("/admin/share-links").status_code == 403
        assert browser.post("/share-links", json={"study_uid": shared.study}
                            ).status_code == 403

        listed = server.http.get("/admin/share-links").json()
        (row,) = [r for r in listed if r["id"] == link["id"]]
        assert row["uses"] == 1 and row["last_source"] == "127.0.0.1" and row["has_pin"]
        assert "token" not in row and "url" not in row
        assert server.http.delete(f"/admin/share-links/{link['id']}").json()["revoked"]
        deadline = time.monotonic() + 20  # nodes cache a verified session up to 10 s
        while browser.get("/dicom-web/studies").status_code != 401:
            assert time.monotonic() < deadline, "a revoked link's session still works"
        again = browser.post("/auth/share", json={"token": token, "pin": "2468"})
        assert again.status_code == 401 and "revoked" in again.json()["error"]

    trail = server.http.get("/admin/audit", params={"action": "share-use"}).json()
    assert {e["outcome"] for e in trail} == {"success", "failure"}
    assert all(e["study_instance_uid"] == shared.study for e in trail)
    created_event = server.http.get("/admin/audit", params={"action": "share-create"}).json()
    assert created_event[0]["actor"] == "token:bs-chuyen-vien"


def test_a_patient_link_opens_all_that_patients_studies(empty_server: ServerProcess) -> None:
    server = empty_server
    first, second = (store(server, make_instance(patient_id="BN-SHARE-9"))[0]
                     for _ in range(2))
    (stranger,) = store(server, make_instance(patient_id="BN-OTHER"))
    clinician = server.create_token("bs-ngoai-tru", "clinician")
    link = httpx.post(f"{server.http_url}/share-links", headers=_bearer(clinician),
                      json={"patient_id": "BN-SHARE-9"}).json()
    token = link["url"].split("#share=", 1)[1]
    with httpx.Client(base_url=server.http_url, timeout=60) as browser:
        assert browser.post("/auth/share", json={"token": token}).status_code == 200
        assert _studies(browser) == {first.study, second.study}
        assert stranger.study not in _studies(browser, PatientID="BN-OTHER")


def test_who_may_share_and_what_a_link_needs(empty_server: ServerProcess) -> None:
    server = empty_server
    (stored,) = store(server, make_instance())
    technologist = server.create_token("ktv-share", "technologist")
    assert httpx.post(f"{server.http_url}/share-links", headers=_bearer(technologist),
                      json={"study_uid": stored.study}).status_code == 403
    assert server.http.post("/share-links", json={"study_uid": "1.2.3.999"}
                            ).status_code == 404
    both = server.http.post("/share-links", json={"study_uid": stored.study,
                                                  "patient_id": "BN0001"})
    assert both.status_code == 400 and "exactly one" in both.json()["error"]
    bad_pin = server.http.post("/share-links", json={"study_uid": stored.study, "pin": "12ab"})
    assert bad_pin.status_code == 400 and "PIN" in bad_pin.json()["error"]


def test_five_wrong_pins_revoke_the_link(empty_server: ServerProcess) -> None:
    server = empty_server
    (stored,) = store(server, make_instance())
    link = server.http.post("/share-links", json={"study_uid": stored.study, "pin": "9999"}
                            ).json()
    token = link["url"].split("#share=", 1)[1]
    for _ in range(5):
        assert httpx.post(f"{server.http_url}/auth/share",
                          json={"token": token, "pin": "0000"}).status_code == 401
    right = httpx.post(f"{server.http_url}/auth/share", json={"token": token, "pin": "9999"})
    assert right.status_code == 401 and "revoked" in right.json()["error"]
