"""Signed reports reach the hospital's FHIR server (issue #14, emr/report_push.py) through
the FHIR push's change feed, against the real FHIR peer: signing puts a final
DiagnosticReport there with the conclusion; amending adds the amended one and keeps the
earlier one; each report sent is an audited disclosure."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
from pydicom.uid import generate_uid

from conftest import ServerProcess
from fhir_peer import FhirPeer
from minipacs.fhir.diagnostic_report import FINDINGS_URL
from test_fhir_push import _store, eventually, fhir_peer, pushing_server  # noqa: F401

PASSWORD = "Doc-ket-qua-2024"
CONCLUSION = "Nốt mờ thùy trên phổi phải, đường kính 8 mm; đề nghị chụp lại sau 3 tháng."
AMENDED_CONCLUSION = "Nốt mờ thùy trên phổi phải 8 mm, bờ đều: theo dõi sau 6 tháng."


def _report(study: str, status: str, conclusion: str) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport", "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
        "imagingStudy": [{"reference": f"ImagingStudy/{study}"}],
        "conclusion": conclusion,
        "extension": [{"url": FINDINGS_URL, "valueString": "Phổi hai bên sáng đều."}],
    }


def _reports_on(peer: FhirPeer, report_id: str) -> list[dict[str, Any]]:
    return peer.search("DiagnosticReport", identifier=f"urn:minipacs:report|{report_id}")


def test_signed_then_amended_report_reaches_the_fhir_server(
    pushing_server: ServerProcess, fhir_peer: FhirPeer, tmp_path: Path,  # noqa: F811
) -> None:
    study = generate_uid()
    patient_id = "BN" + uuid.uuid4().hex[:8]
    _store(pushing_server, tmp_path / "a", study, generate_uid(), 1, patient_id,
           PatientName="Phạm^Văn Đồng", AccessionNumber="ACCRPT1")
    eventually(lambda: fhir_peer.search(
        "ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{study}"), "study pushed")
    name = "bs" + uuid.uuid4().hex[:8]
    pushing_server.add_user(name, "radiologist", PASSWORD)
    with httpx.Client(base_url=f"{pushing_server.http_url}/fhir", timeout=120,
                      auth=(name, PASSWORD)) as doctor:
        made = doctor.post("/DiagnosticReport", json=_report(study, "final", CONCLUSION))
        assert made.status_code == 201, made.text
        first = made.json()["id"]

        found = eventually(lambda: _reports_on(fhir_peer, first), "final report pushed")
        assert len(found) == 1
        assert found[0]["status"] == "final" and found[0]["conclusion"] == CONCLUSION
        imaging = fhir_peer.search("ImagingStudy",
                                   identifier=f"urn:dicom:uid|urn:oid:{study}")[0]
        assert found[0]["imagingStudy"][0]["reference"] == f"ImagingStudy/{imaging['id']}"
        assert found[0]["subject"]["reference"] == imaging["subject"]["reference"]
        pdf_url = found[0]["presentedForm"][0]["url"]
        assert pdf_url.startswith("https://pacs.example.org/dicom-web/studies/" + study)
        assert pdf_url.endswith("/rendered")

        amended = doctor.put(f"/DiagnosticReport/{first}",
                             json=_report(study, "amended", AMENDED_CONCLUSION))
        assert amended.status_code == 201, amended.text
        second = amended.json()["id"]
    newer = eventually(lambda: _reports_on(fhir_peer, second), "amended report pushed")
    assert len(newer) == 1
    assert newer[0]["status"] == "amended"
    assert newer[0]["conclusion"] == AMENDED_CONCLUSION
    assert {"system": "urn:minipacs:report-amends", "value": first} in newer[0]["identifier"]
    earlier = _reports_on(fhir_peer, first)
    assert len(earlier) == 1 and earlier[0]["status"] == "final"
    assert earlier[0]["conclusion"] == CONCLUSION

    audit = pushing_server.http.get("/admin/audit",
                                    params={"action": "report-disclosure"}).json()
    text = " ".join(str(row) for row in audit)
    assert f"report {first} (final) sent to the FHIR server" in text
    assert f"report {second} (amended) sent to the FHIR server" in text
