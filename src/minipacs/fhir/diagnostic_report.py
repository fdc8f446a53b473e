"""FHIR R4 DiagnosticReport <-> reports (reports/service.py).

A report's logical id is its row number; an amendment is another DiagnosticReport (its
own id): R4 has no 'replaces' element on DiagnosticReport, so the version it corrects
is named in `identifier` (system `urn:minipacs:report-amends`); the corrected version
keeps its status and stays readable. Findings have no R4 element: they travel in an
extension (FINDINGS_URL) and in the PDF. `presentedForm` is the signed PDF, as the URL of
the Encapsulated PDF's WADO-RS rendered resource, which answers application/pdf (the
document itself, PS3.18 §8.7.4).
"""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any

from fhir.resources.R4B.attachment import Attachment
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.diagnosticreport import DiagnosticReport, DiagnosticReportMedia
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.meta import Meta
from fhir.resources.R4B.reference import Reference

from minipacs.errors import InvalidRequest
from minipacs.fhir.ids import order_id_of, patient_id_of, step_id_of, study_uid_of
from minipacs.reports.documents import document_series_uid
from minipacs.reports.service import AMENDED, DRAFT, FINAL, PRELIMINARY, Report, ReportDraft

REPORT_SYSTEM = "urn:minipacs:report"
AMENDS_SYSTEM = "urn:minipacs:report-amends"
KEY_IMAGE_SYSTEM = "urn:dicom:uid"
# FHIR DiagnosticReport.status (required binding) <-> ours; 'registered' is our draft.
TO_FHIR = {DRAFT: "registered", PRELIMINARY: "preliminary", FINAL: "final", AMENDED: "amended"}
FROM_FHIR = {v: k for k, v in TO_FHIR.items()}
REPORT_PARAMS: dict[str, tuple[str, str]] = {
    "_id": ("token", "the report's id"),
    "patient": ("reference", "Patient/<id>"),
    "subject": ("reference", "Patient/<id>"),
    "patient.identifier": ("token", "an identifier of the patient (system|value or value:"
                                    " hospital ID, CCCD, BHYT)"),
    "study": ("reference", "ImagingStudy/<Study Instance UID>"),
    "status": ("token", "registered (draft), preliminary, final, amended; comma for any"),
}
_UID = re.compile(r"^[0-9.]{1,64}$")


def diagnostic_report_resource(report: Report, base: str) -> DiagnosticReport:
    """The report as a DiagnosticReport (validated by the R4B model on construction)."""
    identifiers = [Identifier(system=REPORT_SYSTEM, value=str(report.id))]
    if report.amends is not None:
        identifiers.append(Identifier(system=AMENDS_SYSTEM, value=str(report.amends)))
    patient = patient_id_of(report.patient_id, report.issuer_of_patient_id)
    form = None
    if report.pdf_sop_instance_uid:
        form = [Attachment(
            contentType="application/pdf", language="vi", title=f"Report {report.id}",
            url=f"{base}/dicom-web/studies/{report.study_instance_uid}/series/"
                f"{document_series_uid(report.pdf_sop_instance_uid)}/instances/"
                f"{report.pdf_sop_instance_uid}/rendered",
        )]
    order = order_id_of(report.based_on) if report.based_on else None
    interpreter = [Reference(display=report.signer)] if report.signer else None
    return _with_findings(report, identifiers, patient, order, interpreter, form)


def _with_findings(report: Report, identifiers: list[Identifier], patient: str | None,
                   order: str | None, interpreter: list[Reference] | None,
                   form: list[Attachment] | None) -> DiagnosticReport:
    return DiagnosticReport(
        id=str(report.id),
        meta=Meta(versionId=str(report.version),
                  lastUpdated=report.updated_at.replace(tzinfo=UTC)),
        extension=[Extension(url=FINDINGS_URL, valueString=report.findings)]
        if report.findings else None,
        identifier=identifiers, status=TO_FHIR[report.status],
        category=[CodeableConcept(coding=[Coding(
            system="http://terminology.hl7.org/CodeSystem/v2-0074", code="RAD",
            display="Radiology")])],
        code=CodeableConcept(coding=[Coding(system="http://loinc.org", code="18748-4",
                                            display="Diagnostic imaging study")]),
        subject=Reference(reference=f"Patient/{patient}") if patient else None,
        basedOn=[Reference(reference=f"ServiceRequest/{order}")] if order else None,
        imagingStudy=[Reference(reference=f"ImagingStudy/{report.study_instance_uid}")],
        issued=report.signed_at.replace(tzinfo=UTC) if report.signed_at else None,
        resultsInterpreter=interpreter,
        performer=[Reference(display=report.author)] if report.author else None,
        conclusion=report.conclusion or None,
        presentedForm=form,
        media=[DiagnosticReportMedia(comment="key image", link=Reference(
            identifier=Identifier(system=KEY_IMAGE_SYSTEM, value=f"urn:oid:{uid}")))
            for uid in report.key_images] or None,
    )


FINDINGS_URL = "urn:minipacs:fhir:StructureDefinition/report-findings"


def report_draft(body: dict[str, Any]) -> ReportDraft:
    """A writer's DiagnosticReport (already validated against the R4B model) as a draft.
    Refuses, naming the element, what is missing or not ours."""
    status = body.get("status", "")
    if status not in FROM_FHIR:
        raise InvalidRequest(f"DiagnosticReport.status {status!r} must be one of "
                             f"{', '.join(FROM_FHIR)} (registered = draft)")
    studies = body.get("imagingStudy") or []
    if len(studies) != 1:
        raise InvalidRequest("DiagnosticReport.imagingStudy must reference exactly one "
                             f"ImagingStudy (got {len(studies)})")
    ref = str(studies[0].get("reference", ""))
    study_uid = study_uid_of(ref.rsplit("ImagingStudy/", 1)[-1]) if "ImagingStudy/" in ref \
        else None
    if study_uid is None:
        raise InvalidRequest(f"DiagnosticReport.imagingStudy.reference {ref[:80]!r} must "
                             "be ImagingStudy/<Study Instance UID>")
    based_on = ""
    for item in body.get("basedOn") or []:
        target = str(item.get("reference", ""))
        step = step_id_of(target.rsplit("ServiceRequest/", 1)[-1]) \
            if "ServiceRequest/" in target else None
        if step is None:
            raise InvalidRequest(f"DiagnosticReport.basedOn.reference {target[:80]!r} must "
                                 "be ServiceRequest/<id>")
        based_on = step
    findings = ""
    for ext in body.get("extension") or []:
        if ext.get("url") == FINDINGS_URL:
            findings = str(ext.get("valueString", ""))
    keys: list[str] = []
    for media in body.get("media") or []:
        value = str(((media.get("link") or {}).get("identifier") or {}).get("value", ""))
        uid = value.removeprefix("urn:oid:")
        if not _UID.fullmatch(uid):
            raise InvalidRequest(f"DiagnosticReport.media.link.identifier.value {value[:80]!r}"
                                 " must be urn:oid:<SOP Instance UID> of a key image")
        keys.append(uid)
    return ReportDraft(study_uid, FROM_FHIR[status], findings,
                       str(body.get("conclusion") or ""), based_on, tuple(keys))
