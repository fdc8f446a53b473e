"""Abnormal-access alert rules, each made to fire on a real server by doing what it
watches for (thresholds set low through the settings a hospital would use)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from backends import Backends
from conftest import ServerProcess
from dicomweb_peers import store
from factories import make_instance


def _hours_excluding_now() -> str:
    now = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh"))
    start, end = now + timedelta(hours=2), now + timedelta(hours=3)
    return f"{start:%H:%M}-{end:%H:%M}"


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory, backends: Backends
            ) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("alerts"), [
        "--no-load-samples", "--alert-patients-per-hour", "2",
        "--alert-downloads-per-hour", "2", "--alert-failed-logins", "3",
        "--alert-share-addresses", "1", "--alert-working-hours", _hours_excluding_now(),
        "--alert-scan-seconds", "0.5", *backends.server_args()])
    proc.start()
    yield proc
    proc.stop()


def wait_for_alert(server: ServerProcess, rule: str, subject: str) -> dict[str, str]:
    deadline = time.monotonic() + 30
    while True:
        alerts = server.http.get("/admin/alerts").json()
        found = [a for a in alerts if a["rule"] == rule and a["subject"] == subject]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no {rule} alert for {subject}: {alerts}"
        time.sleep(0.2)  # polling the alert list, bounded by the deadline


def _client(server: ServerProcess, token: str, source: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(base_url=server.http_url, timeout=60,
                        headers={"Authorization": f"Bearer {token}"},
                        transport=httpx.HTTPTransport(local_address=source))


def test_viewing_many_patients_and_bulk_downloads_and_after_hours_raise_alerts(
    watched: ServerProcess,
) -> None:
    studies = [store(watched, make_instance(patient_id=f"BN-ALERT-{i}"))[0] for i in range(3)]
    token = watched.create_token("bs-toi-muon", "radiologist")
    with _client(watched, token) as doctor:
        for stored in studies:
            assert doctor.get(f"/dicom-web/studies/{stored.study}/metadata").status_code == 200
            assert doctor.get(f"/dicom-web/studies/{stored.study}").status_code == 200
    many = wait_for_alert(watched, "many-patients", "token:bs-toi-muon")
    assert "3 patients" in many["detail"]
    bulk = wait_for_alert(watched, "bulk-download", "token:bs-toi-muon")
    assert "3 studies" in bulk["detail"]
    # Token principals are systems; people (accounts, share links) trip after-hours.
    watched.add_user("bs.dem", "radiologist", "Truc-Dem-2024")
    with httpx.Client(base_url=watched.http_url, timeout=60) as night:
        assert night.post("/auth/login", json={"username": "bs.dem",
                                               "password": "Truc-Dem-2024"}).status_code == 200
        assert night.get(f"/dicom-web/studies/{studies[0].study}/metadata").status_code == 200
    late = wait_for_alert(watched, "after-hours", "user:bs.dem")
    assert "outside working hours" in late["detail"] and "BN-ALERT-0" in late["detail"]
    # Alerts are audit events too, and an auditor acknowledges them.
    auditor = watched.create_token("kiem-tra", "auditor")
    with _client(watched, auditor) as officer:
        done = officer.post(f"/admin/alerts/{many['id']}/acknowledge")
        assert done.json()["acknowledged_by"] == "token:kiem-tra"
        assert many["id"] not in [a["id"] for a in officer.get("/admin/alerts").json()]
        trail = officer.get("/admin/audit", params={"action": "security-alert"}).json()
        assert any("many-patients" in e["detail"] for e in trail)


def test_failed_logins_from_one_address_raise_an_alert(watched: ServerProcess) -> None:
    with httpx.Client(base_url=watched.http_url, timeout=60,
                      transport=httpx.HTTPTransport(local_address="127.0.0.3")) as guesser:
        for attempt in range(4):
            wrong = guesser.post("/auth/login", json={"username": f"admin{attempt}",
                                                      "password": "Guess-1234-x"})
            assert wrong.status_code == 401
    alert = wait_for_alert(watched, "failed-logins", "127.0.0.3")
    assert "4 failed logins" in alert["detail"]


def test_a_share_link_used_from_two_addresses_raises_an_alert(watched: ServerProcess) -> None:
    (stored,) = store(watched, make_instance(patient_id="BN-ALERT-SHARE"))
    link = watched.http.post("/share-links", json={"study_uid": stored.study}).json()
    token = link["url"].split("#share=", 1)[1]
    for source in ("127.0.0.1", "127.0.0.4"):
        with httpx.Client(base_url=watched.http_url, timeout=60,
                          transport=httpx.HTTPTransport(local_address=source)) as browser:
            assert browser.post("/auth/share", json={"token": token}).status_code == 200
    alert = wait_for_alert(watched, "share-many-addresses", f"share:link-{link['id']}")
    assert "2 addresses" in alert["detail"]

