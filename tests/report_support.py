# ruff: noqa: E501  -- JavaScript snippets for the page are kept on one line each
"""What the report-panel tests share in Chromium and Firefox (issue #14, "The report"):
a CT study with its order, the scenario's steps on a page (Playwright's names, which
firefox_bidi.FirefoxPage speaks too), and black-box checks through FHIR and DICOMweb."""

from __future__ import annotations

import io
import sys
import uuid
from typing import Any

import httpx
import pydicom
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid
from pypdf import PdfReader

from conftest import SAMPLE_DIR, ServerProcess
from dicomweb_peers import store
from factories import make_instance
from viewer_support import H, wait_for_first_image

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
FINDINGS_URL = "urn:minipacs:fhir:StructureDefinition/report-findings"
HOSPITAL = "http://fhir.ehealth.gov.vn/core/sid/patient-internal-id"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def unique(prefix: str) -> str:
    return (prefix + uuid.uuid4().hex.upper())[:16]


def phantom_ct_slice(index: int) -> bytes:
    """Stored values of the sample chest CT's axial slice `index` (sample_dicom/phantoms.py:
    lungs, heart, spine and a 10 mm nodule in the right lung), little-endian int16."""
    if str(SAMPLE_DIR) not in sys.path:
        sys.path.insert(0, str(SAMPLE_DIR))
    from phantoms import ct_slice  # noqa: PLC0415 - sample_dicom is not a package

    return bytes(ct_slice(index).astype("<i2").tobytes())


def ct_study_with_order(server: ServerProcess, *, slices: int = 5) -> dict[str, str]:
    """An order placed over FHIR (ServiceRequest naming the Study Instance UID), then a
    chest CT of `slices` phantom images (through the nodule) stored for it; the UIDs,
    accession and order id."""
    study, series = generate_uid(), generate_uid()
    patient, accession = unique("BN"), unique("AC")
    order = server.http.post("/fhir/ServiceRequest", json={
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "value": accession},
                       {"system": "urn:dicom:uid", "value": f"urn:oid:{study}"}],
        "code": {"text": "CT ngực không tiêm thuốc"},
        "orderDetail": [{"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}]}],
        "subject": {"identifier": {"system": HOSPITAL, "value": patient}},
        "requester": {"display": "BS. Lê Minh Đức"},
    })
    assert order.status_code == 201, order.text
    first = 18 - slices // 2  # the nodule's slice in the middle
    stored = store(server, *(
        make_instance(modality="CT", patient_id=patient, patient_name="Phạm^Thị Hương",
                      study_uid=study, series_uid=series, accession_number=accession,
                      rows=256, columns=256, InstanceNumber=i + 1, BodyPartExamined="CHEST",
                      PixelData=phantom_ct_slice(first + i), PixelSpacing=[0.7, 0.7],
                      SliceThickness=5.0, ImagePositionPatient=[-89.6, -89.6, -5.0 * (first + i)],
                      PixelPaddingValue=-2000, WindowCenter=-600, WindowWidth=1500,
                      StudyDescription="CT ngực", SeriesDescription="Phổi 5 mm")
        for i in range(slices)))
    return {"study": study, "series": series, "patient": patient, "accession": accession,
            "order": order.json()["id"], "sops": " ".join(s.sop for s in stored)}


def fhir_as(server: ServerProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{server.http_url}/fhir", timeout=60,
                        headers={"Authorization": f"Bearer {token}",
                                 "Accept": "application/fhir+json"})


def reports_of_study(client: httpx.Client, study: str) -> list[dict[str, Any]]:
    """The study's DiagnosticReports, newest first, as any FHIR client reads them."""
    answer = client.get("/DiagnosticReport", params={"study": f"ImagingStudy/{study}"})
    assert answer.status_code == 200, answer.text
    return sorted((e["resource"] for e in answer.json().get("entry", [])),
                  key=lambda r: -int(r["id"]))


def findings_of(report: dict[str, Any]) -> str:
    return next((e["valueString"] for e in report.get("extension", [])
                 if e["url"] == FINDINGS_URL), "")


def squeeze(text: str) -> str:
    """Text with every run of whitespace as one space: a PDF wraps lines where it must."""
    return " ".join(text.split())


def stored_report_documents(server: ServerProcess, study: str, token: str
                            ) -> tuple[str, pydicom.Dataset]:
    """The text (pypdf) of the study's one Encapsulated PDF and its one Basic Text SR,
    found by QIDO-RS and read by WADO-RS like any DICOMweb client."""
    web = DICOMwebClient(url=server.dicomweb_url, headers={"Authorization": f"Bearer {token}"})
    found = web.search_for_instances(study_instance_uid=study)

    def only(sop_class: str) -> pydicom.Dataset:
        matches = [i for i in found if i["00080016"]["Value"][0] == sop_class]
        assert len(matches) == 1, f"study {study}: {len(matches)} instances of {sop_class}"
        item = matches[0]
        return web.retrieve_instance(study, item["0020000E"]["Value"][0],
                                     item["00080018"]["Value"][0])

    pdf_ds = only(ENCAPSULATED_PDF)
    pdf = bytes(pdf_ds.EncapsulatedDocument)[:int(pdf_ds.EncapsulatedDocumentLength)]
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    return text, only(BASIC_TEXT_SR)


def pdf_section(text: str, start: str, end: str) -> str:
    """What the PDF says between two headings of the report."""
    assert start in text and end in text, text
    return text.split(start, 1)[1].split(end, 1)[0]


def sr_texts(sr: pydicom.Dataset) -> dict[str, str]:
    return {item.ConceptNameCodeSequence[0].CodeMeaning: str(item.TextValue)
            for item in sr.ContentSequence if item.ValueType == "TEXT"}


def sr_key_images(sr: pydicom.Dataset) -> list[str]:
    return [item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            for item in sr.ContentSequence if item.ValueType == "IMAGE"]


# ---- steps on a page --------------------------------------------------------------------------


def open_report_panel(server: ServerProcess, page: Any, study: str) -> None:
    page.goto(f"{server.http_url}/viewer/?StudyInstanceUID={study}")
    wait_for_first_image(page)
    page.click("[data-testid=action-report]")
    page.wait_for_function(f"(uid) => {H}.report.shown && {H}.report.loaded && {H}.report.studyUid === uid", arg=study)


def wait_until_saved(page: Any) -> dict[str, Any]:
    """The panel has nothing left to send (its autosave reached the server)."""
    page.wait_for_function(f"() => {H}.report.reportId !== null && !{H}.report.dirty")
    return dict(page.evaluate(f"{H}.report"))


def local_draft(page: Any, user: str, study: str) -> dict[str, Any] | None:
    """What the panel keeps in localStorage for this user and study."""
    found = page.evaluate("(key) => JSON.parse(localStorage.getItem(key) ?? 'null')",
                          f"minipacs.report.{user}.{study}")
    return dict(found) if found else None


def sign_on_page(page: Any) -> None:
    page.click("[data-testid=report-sign]")
    page.wait_for_function(f"() => {H}.report.status === 'final' && {H}.report.mode === 'read'")


def check_signed_documents(server: ServerProcess, token: str, study: str, findings: str,
                           conclusion: str, key_images: list[str]) -> None:
    """Through DICOMweb: the study's PDF says exactly what was typed (whitespace aside,
    which the PDF's line wrapping decides), and its SR carries exactly the typed text."""
    pdf_text, sr = stored_report_documents(server, study, token)
    assert squeeze(pdf_section(pdf_text, "Mô tả / Findings:", "Kết luận / Conclusion:")) == \
        squeeze(findings)
    assert squeeze(pdf_section(pdf_text, "Kết luận / Conclusion:", "Ảnh chính / Key images:"
                               if key_images else "Người ký / Signed by:")) == squeeze(conclusion)
    texts = sr_texts(sr)
    assert texts["Finding"] == findings
    assert texts["Impression"] == conclusion
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "VERIFIED"
    assert sr_key_images(sr) == key_images
