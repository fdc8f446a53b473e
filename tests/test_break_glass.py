"""Restricted (VIP) patients: reading their studies needs a break-the-glass reason, which
is audited and raises an alert; admins read without one; DICOM retrieves are refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

from backends import Backends
from conftest import ServerProcess
from dicomweb_peers import store
from factories import make_instance

REASON = "cấp cứu: bệnh nhân hôn mê, cần xem CT cũ"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, backends: Backends
            ) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("breakglass"), [
        "--no-load-samples", "--alert-scan-seconds", "0.5", *backends.server_args()])
    proc.start()
    yield proc
    proc.stop()


def _client(server: ServerProcess, token: str, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=server.http_url, timeout=60,
                        headers={"Authorization": f"Bearer {token}", **headers})


def _until(check: object, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)  # polling a condition, bounded by the deadline


def test_restricted_patient_needs_a_reason_audited_and_alerted(guarded: ServerProcess
                                                               ) -> None:
    vip = store(guarded, make_instance(patient_id="BN-VIP-1"))[0]
    plain = store(guarded, make_instance(patient_id="BN-THUONG-1"))[0]
    done = guarded.cli("patient", "restrict", "BN-VIP-1", "--reason", "lãnh đạo bệnh viện")
    assert done.returncode == 0, done.stdout + done.stderr
    listed = guarded.cli("patient", "restricted")
    assert "BN-VIP-1" in listed.stdout and "lãnh đạo bệnh viện" in listed.stdout

    token = guarded.create_token("bs-lam-sang", "clinician")
    base = f"/dicom-web/studies/{vip.study}"
    paths = [f"{base}/metadata", f"{base}/thumbnail",
             f"{base}/series/{vip.series}/instances/{vip.sop}/frames/1"]
    with _client(guarded, token) as clinician:
        # The restriction reaches this node within the cache's lifetime.
        _until(lambda: clinician.get(paths[0]).status_code == 403,
               "the restriction never took effect")
        for path in paths:
            refused = clinician.get(path)
            assert refused.status_code == 403, (path, refused.text)
            assert "restricted patient BN-VIP-1" in refused.text
            assert "X-Break-Glass-Reason" in refused.text
        other = clinician.get(f"/dicom-web/studies/{plain.study}/metadata")
        assert other.status_code == 200, other.text
        found = clinician.get("/dicom-web/studies", params={"PatientID": "BN-VIP-1"})
        assert found.status_code == 200 and len(found.json()) == 1
    with _client(guarded, token, **{"X-Break-Glass-Reason": quote(REASON)}) as glass:
        for path in paths:
            opened = glass.get(path)
            assert opened.status_code == 200, (path, opened.text)
    admin = guarded.http.get(f"{base}/metadata")
    assert admin.status_code == 200, admin.text

    events = guarded.http.get("/admin/audit", params={"action": "break-glass"}).json()
    mine = [e for e in events if e["study_instance_uid"] == vip.study]
    assert len(mine) == 1, events
    assert mine[0]["outcome"] == "success" and REASON in mine[0]["detail"]
    assert mine[0]["patient_id"] == "BN-VIP-1"
    assert mine[0]["actor"] == "token:bs-lam-sang"
    assert not [e for e in events if e["actor"].startswith("token:admin")], events

    def alerted() -> bool:
        alerts = guarded.http.get("/admin/alerts").json()
        return any(a["rule"] == "break-glass" and vip.study in a["subject"]
                   and REASON in a["detail"] for a in alerts)
    _until(alerted, "no break-glass alert")

    lifted = guarded.cli("patient", "unrestrict", "BN-VIP-1")
    assert lifted.returncode == 0, lifted.stdout + lifted.stderr
    with _client(guarded, token) as clinician:
        _until(lambda: clinician.get(paths[0]).status_code == 200,
               "the restriction was never lifted")


def test_dimse_c_get_of_a_restricted_study_is_refused(guarded: ServerProcess) -> None:
    vip = store(guarded, make_instance(patient_id="BN-VIP-2"))[0]
    done = guarded.cli("patient", "restrict", "BN-VIP-2", "--reason", "nhân viên")
    assert done.returncode == 0, done.stdout + done.stderr
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = vip.study
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def get_status() -> int:
        ae = AE(ae_title="VIPGET")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", guarded.dicom_port, ae_title=guarded.ae_title,
                             ext_neg=[build_role(CTImageStorage, scp_role=True)],
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
        assert assoc.is_established
        final = 0xFF00
        try:
            for status, _ds in assoc.send_c_get(identifier,
                                                StudyRootQueryRetrieveInformationModelGet):
                if status and status.Status != 0xFF00:
                    final = int(status.Status)
        finally:
            assoc.release()
        return final

    _until(lambda: get_status() == 0xC000, "the C-GET was never refused")
    assert get_status() == 0xC000
    events = guarded.http.get("/admin/audit", params={"patient_id": "BN-VIP-2"}).json()
    assert any(e["outcome"] == "refused" and "restricted patient" in e["detail"]
               for e in events), events


def test_admin_api_restricts_lists_and_lifts(guarded: ServerProcess) -> None:
    vip = store(guarded, make_instance(patient_id="BN-VIP-3"))[0]
    made = guarded.http.post("/admin/restricted-patients",
                             json={"patient_id": "BN-VIP-3", "reason": "người nổi tiếng"})
    assert made.status_code == 201 and made.json()["created"] is True
    listed = guarded.http.get("/admin/restricted-patients").json()
    assert [(r["patient_id"], r["reason"]) for r in listed
            if r["patient_id"] == "BN-VIP-3"] == [("BN-VIP-3", "người nổi tiếng")]
    clinician = guarded.create_token("bs-api-vip", "clinician")
    headers = {"Authorization": f"Bearer {clinician}"}
    # This node invalidated its cache on the change: refused at once.
    assert httpx.get(f"{guarded.dicomweb_url}/studies/{vip.study}/metadata",
                     headers=headers).status_code == 403
    assert httpx.post(f"{guarded.http_url}/admin/restricted-patients", headers=headers,
                      json={"patient_id": "BN-VIP-3", "reason": "x"}).status_code == 403
    assert guarded.http.delete("/admin/restricted-patients/BN-VIP-3").status_code == 204
    assert guarded.http.delete("/admin/restricted-patients/BN-VIP-3").status_code == 404
    assert httpx.get(f"{guarded.dicomweb_url}/studies/{vip.study}/metadata",
                     headers=headers).status_code == 200
    trail = guarded.http.get("/admin/audit", params={"patient_id": "BN-VIP-3"}).json()
    assert {"patient-restrict", "patient-unrestrict"} <= {e["action"] for e in trail}
