"""Reports (issue #14) end to end on a real server: a radiologist made with the CLI
writes a draft, makes it preliminary and signs it over FHIR DiagnosticReport; the signed
report's Encapsulated PDF and Basic Text SR are then in the study over QIDO-RS/WADO-RS
(dicomweb-client), the PDF's text carries the Vietnamese conclusion, an amendment points
to the version it corrects, a clinician cannot sign, and every change is audited."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_auth
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.operationoutcome import OperationOutcome
from pypdf import PdfReader
from requests.auth import HTTPBasicAuth

from conftest import ServerProcess
from dicomweb_peers import store
from factories import make_instance
from minipacs.fhir.diagnostic_report import FINDINGS_URL

VN_CCCD = "http://fhir.ehealth.gov.vn/core/sid/national_id"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
FINDINGS = "Nhu mô phổi hai bên sáng đều. Không thấy tổn thương khu trú."
CONCLUSION = "Không thấy bất thường trên phim CT ngực — chẩn đoán: bình thường."
AMENDED = "Đính chính: nốt mờ 4 mm thùy trên phổi phải, theo dõi sau 12 tháng."


def _unique(prefix: str) -> str:
    return (prefix + uuid.uuid4().hex.upper())[:16]


@pytest.fixture(scope="module")
def radiologist(server: ServerProcess) -> Iterator[httpx.Client]:
    name = _unique("bs").lower()
    server.add_user(name, "radiologist", "Doc-ket-qua-2024")
    with httpx.Client(base_url=f"{server.http_url}/fhir", timeout=60,
                      auth=(name, "Doc-ket-qua-2024"),
                      headers={"Accept": "application/fhir+json"}) as client:
        client.name = name  # type: ignore[attr-defined]
        yield client


@pytest.fixture(scope="module")
def clinician(server: ServerProcess) -> Iterator[httpx.Client]:
    token = server.create_token(_unique("clin"), "clinician")
    with httpx.Client(base_url=f"{server.http_url}/fhir", timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


@pytest.fixture(scope="module")
def study(server: ServerProcess) -> dict[str, str]:
    cccd = "079068" + str(uuid.uuid4().int)[:6]
    patient_id = _unique("BN")
    data = make_instance(patient_id=patient_id, patient_name="Trần^Thị Bích",
                         accession_number=_unique("ACC"),
                         OtherPatientIDsSequence=[{"PatientID": cccd,
                                                   "IssuerOfPatientID": "CCCD"}])
    stored = store(server, data)[0]
    return {"study": stored.study, "sop": stored.sop, "cccd": cccd,
            "patient_id": patient_id}


def _report(study: dict[str, str], status: str, conclusion: str = CONCLUSION,
            findings: str = FINDINGS) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
        "imagingStudy": [{"reference": f"ImagingStudy/{study['study']}"}],
        "conclusion": conclusion,
        "extension": [{"url": FINDINGS_URL, "valueString": findings}],
        "media": [{"link": {"identifier": {"system": "urn:dicom:uid",
                                           "value": f"urn:oid:{study['sop']}"}}}],
    }
    return body


def _valid(response: httpx.Response, status: int) -> DiagnosticReport:
    assert response.status_code == status, response.text
    return DiagnosticReport.model_validate_json(response.text)


def _dicomweb(server: ServerProcess, client: httpx.Client) -> DICOMwebClient:
    session = create_session_from_auth(HTTPBasicAuth(*_basic(client)))
    return DICOMwebClient(url=server.dicomweb_url, session=session)


def _basic(client: httpx.Client) -> tuple[str, str]:
    return client.name, "Doc-ket-qua-2024"  # type: ignore[attr-defined]


def test_radiologist_drafts_signs_and_amends_a_report_stored_with_the_study(
    server: ServerProcess, radiologist: httpx.Client, clinician: httpx.Client,
    study: dict[str, str],
) -> None:
    draft = _valid(radiologist.post("/DiagnosticReport", json=_report(study, "registered")),
                   201)
    assert draft.status == "registered" and draft.conclusion == CONCLUSION
    assert draft.presentedForm is None
    report_id = draft.id
    prelim = _valid(radiologist.put(f"/DiagnosticReport/{report_id}",
                                    json=_report(study, "preliminary"),
                                    headers={"If-Match": f'W/"{draft.meta.versionId}"'}), 200)
    assert prelim.status == "preliminary"
    # A stale version is refused (412), nothing changes.
    stale = radiologist.put(f"/DiagnosticReport/{report_id}", json=_report(study, "final"),
                            headers={"If-Match": f'W/"{draft.meta.versionId}"'})
    assert stale.status_code == 412, stale.text
    OperationOutcome.model_validate_json(stale.text)
    # A clinician may read but not sign.
    refused = clinician.put(f"/DiagnosticReport/{report_id}", json=_report(study, "final"))
    assert refused.status_code == 403, refused.text
    assert OperationOutcome.model_validate_json(refused.text).issue[0].code == "forbidden"
    assert _valid(clinician.get(f"/DiagnosticReport/{report_id}"), 200).status == \
        "preliminary"

    final = _valid(radiologist.put(f"/DiagnosticReport/{report_id}",
                                   json=_report(study, "final")), 200)
    assert final.status == "final" and final.issued is not None
    assert final.resultsInterpreter[0].display == radiologist.name  # type: ignore[attr-defined]
    assert final.subject.reference.startswith("Patient/")
    assert final.imagingStudy[0].reference == f"ImagingStudy/{study['study']}"
    pdf_url = final.presentedForm[0].url
    assert final.presentedForm[0].contentType == "application/pdf"

    # The PDF and the SR are in the study, found by QIDO-RS, read by WADO-RS.
    web = _dicomweb(server, radiologist)
    found = web.search_for_instances(study_instance_uid=study["study"])
    classes = {i["00080016"]["Value"][0]: i["00080018"]["Value"][0] for i in found}
    assert ENCAPSULATED_PDF in classes and BASIC_TEXT_SR in classes
    pdf_ds = [d for d in (web.retrieve_instance(study["study"], i["0020000E"]["Value"][0],
                                                i["00080018"]["Value"][0]) for i in found)
              if d.SOPClassUID == ENCAPSULATED_PDF][0]
    pdf = bytes(pdf_ds.EncapsulatedDocument)[:int(pdf_ds.EncapsulatedDocumentLength)]
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    squeeze = "".join(text.split())
    assert "".join(CONCLUSION.split()) in squeeze, text
    assert "".join(FINDINGS.split()) in squeeze, text
    assert str(pdf_ds.PatientID) == study["patient_id"]
    # presentedForm's URL is the PDF's rendered resource: an EMR fetches the document.
    assert pdf_url.endswith(f"/series/{pdf_ds.SeriesInstanceUID}/instances/"
                            f"{pdf_ds.SOPInstanceUID}/rendered")
    fetched = radiologist.get(pdf_url, headers={"Accept": "application/pdf"})
    assert fetched.status_code == 200, fetched.text
    assert fetched.headers["content-type"] == "application/pdf" and fetched.content == pdf
    refused = radiologist.get(pdf_url, headers={"Accept": "image/jpeg"})
    assert refused.status_code == 406, refused.text
    sr = [d for d in (web.retrieve_instance(study["study"], i["0020000E"]["Value"][0],
                                            i["00080018"]["Value"][0]) for i in found)
          if d.SOPClassUID == BASIC_TEXT_SR][0]
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "VERIFIED"
    assert sr.VerifyingObserverSequence[0].VerifyingObserverName == radiologist.name  # type: ignore[attr-defined]
    texts = {item.ConceptNameCodeSequence[0].CodeMeaning: item.get("TextValue")
             for item in sr.ContentSequence}
    assert texts["Impression"] == CONCLUSION and texts["Finding"] == FINDINGS
    refs = [item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            for item in sr.ContentSequence if item.ValueType == "IMAGE"]
    assert refs == [study["sop"]]

    # A signed report is not edited: it is amended (a new version pointing to it).
    edit = radiologist.put(f"/DiagnosticReport/{report_id}", json=_report(study, "final"))
    assert edit.status_code == 409, edit.text
    amended = _valid(radiologist.put(f"/DiagnosticReport/{report_id}",
                                     json=_report(study, "amended", AMENDED)), 201)
    assert amended.status == "amended" and amended.id != report_id
    assert {(i.system, i.value) for i in amended.identifier} >= {
        ("urn:minipacs:report-amends", report_id)}
    earlier = _valid(clinician.get(f"/DiagnosticReport/{report_id}"), 200)
    assert earlier.status == "final" and earlier.conclusion == CONCLUSION
    after = web.search_for_instances(study_instance_uid=study["study"],
                                     search_filters={"SOPClassUID": ENCAPSULATED_PDF})
    assert len(after) == 2

    # Search: by CCCD (the patient's national ID), by study, by status.
    by_cccd = Bundle.model_validate_json(clinician.get("/DiagnosticReport", params={
        "patient.identifier": f"{VN_CCCD}|{study['cccd']}"}).text)
    assert {e.resource.id for e in by_cccd.entry or []} == {report_id, amended.id}
    for entry in by_cccd.entry or []:
        DiagnosticReport.model_validate(entry.resource.model_dump())
    by_status = Bundle.model_validate_json(clinician.get("/DiagnosticReport", params={
        "study": f"ImagingStudy/{study['study']}", "status": "amended"}).text)
    assert [e.resource.id for e in by_status.entry or []] == [amended.id]
    bad = clinician.get("/DiagnosticReport", params={"status": "signed"})
    assert bad.status_code == 400 and "signed" in bad.text

    # Every state change is audited, the signature with the PDF's SHA-256.
    rows = [e for e in server.http.get("/admin/audit", params={
        "patient_id": study["patient_id"], "limit": 1000}).json()
        if e["study_instance_uid"] == study["study"]]
    actions = [e["action"] for e in rows]
    assert actions.count("report-create") == 2 and actions.count("report-sign") == 2
    assert "report-update" in actions
    assert any(e["action"] == "report-sign" and "sha256" in e["detail"] for e in rows)
    refusals = server.http.get("/admin/audit", params={"action": "report"}).json()
    assert any(e["outcome"] == "refused"
               and e["detail"] == f"PUT /fhir/DiagnosticReport/{report_id}"
               for e in refusals)


def test_report_errors_are_operation_outcomes_and_change_nothing(
    radiologist: httpx.Client, study: dict[str, str],
) -> None:
    no_study = _report({"study": "1.2.3.999999", "sop": study["sop"]}, "registered")
    missing = radiologist.post("/DiagnosticReport", json=no_study)
    assert missing.status_code == 404, missing.text
    OperationOutcome.model_validate_json(missing.text)
    bad_key = _report({"study": study["study"], "sop": "1.2.3.4"}, "registered")
    response = radiologist.post("/DiagnosticReport", json=bad_key)
    assert response.status_code == 400 and "1.2.3.4" in response.text
    invalid = radiologist.post("/DiagnosticReport", json={"resourceType": "DiagnosticReport",
                                                         "status": "nope"})
    assert invalid.status_code == 400, invalid.text
    unsigned = radiologist.post("/DiagnosticReport", json=_report(study, "final", ""))
    assert unsigned.status_code == 400 and "conclusion" in unsigned.text
    assert radiologist.get("/DiagnosticReport/999999999").status_code == 404
    meta = CapabilityStatement.model_validate_json(radiologist.get("/metadata").text)
    types = {r.type for r in meta.rest[0].resource}
    assert "DiagnosticReport" in types
