"""What a signed report becomes in the study: a printable PDF (reportlab, DejaVuSans so
Vietnamese renders), wrapped as an Encapsulated PDF instance (PS3.3 A.45.1), and a Basic
Text SR (PS3.3 A.35.1) carrying the text, the completion/verification flags, the
verifying observer and references to the key images."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
_FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
_PATIENT_STUDY = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                  "PatientSex", "OtherPatientIDsSequence", "StudyInstanceUID", "StudyDate",
                  "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                  "StudyDescription")


@dataclass(frozen=True)
class SignedReport:
    report_id: int
    status: str  # final | amended
    findings: str
    conclusion: str
    signer: str
    signed_at: datetime
    key_images: tuple[tuple[str, str], ...]  # (SOP Class UID, SOP Instance UID)
    key_image_series: dict[str, str]  # SOP Instance UID -> Series Instance UID


def _font() -> str:
    """DejaVuSans registered with reportlab (it has Vietnamese glyphs); Helvetica else."""
    if "DejaVuSans" in pdfmetrics.getRegisteredFontNames():
        return "DejaVuSans"
    for folder in _FONT_DIRS:
        path = folder / "DejaVuSans.ttf"
        if path.is_file():
            pdfmetrics.registerFont(TTFont("DejaVuSans", str(path)))
            return "DejaVuSans"
    return "Helvetica"


def render_pdf(report: SignedReport, header: Dataset, hospital: str) -> bytes:
    font = _font()
    body = ParagraphStyle("body", fontName=font, fontSize=10.5, leading=14)
    title = ParagraphStyle("title", fontName=font, fontSize=15, leading=20)

    def para(text: str, style: ParagraphStyle = body) -> Paragraph:
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return Paragraph(escaped.replace("\n", "<br/>"), style)

    patient = f"{header.get('PatientName', '')}".replace("^", " ").strip()
    story = [para(hospital, title), para("KẾT QUẢ CHẨN ĐOÁN HÌNH ẢNH / IMAGING REPORT"),
             Spacer(1, 8),
             para(f"Bệnh nhân / Patient: {patient}   Mã / ID: {header.get('PatientID', '')}"
                  f"   Ngày sinh / Born: {header.get('PatientBirthDate', '')}"
                  f"   Giới / Sex: {header.get('PatientSex', '')}"),
             para(f"Chỉ định / Study: {header.get('StudyDescription', '')}   Ngày / Date: "
                  f"{header.get('StudyDate', '')}   Accession: "
                  f"{header.get('AccessionNumber', '')}"),
             para(f"Study Instance UID: {header.get('StudyInstanceUID', '')}"),
             Spacer(1, 10), para("Mô tả / Findings:", title), para(report.findings),
             Spacer(1, 10), para("Kết luận / Conclusion:", title), para(report.conclusion),
             Spacer(1, 10)]
    if report.key_images:
        story.append(para("Ảnh chính / Key images: " +
                          ", ".join(uid for _, uid in report.key_images)))
    story.append(para(f"Người ký / Signed by: {report.signer}   Lúc / At: "
                      f"{report.signed_at:%Y-%m-%d %H:%M} UTC   Trạng thái / Status: "
                      f"{report.status}   Báo cáo / Report: {report.report_id}"))
    out = io.BytesIO()
    SimpleDocTemplate(out, pagesize=A4, title=f"Report {report.report_id}",
                      author=report.signer).build(story)
    return out.getvalue()


def _base(header: Dataset, sop_class: str, modality: str, when: datetime,
          series_number: int) -> Dataset:
    ds = Dataset()
    for keyword in _PATIENT_STUDY:
        if keyword in header:
            ds[keyword] = header[keyword]
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: Vietnamese text
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = document_series_uid(ds.SOPInstanceUID)
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.ContentDate = when.strftime("%Y%m%d")
    ds.ContentTime = when.strftime("%H%M%S")
    ds.InstanceCreationDate = ds.ContentDate
    ds.InstanceCreationTime = ds.ContentTime
    ds.Manufacturer = "minipacs"
    return ds


def document_series_uid(sop_instance_uid: str) -> str:
    """The series of a report object, derived from its SOP Instance UID (one object per
    series): a report row keeps the PDF's SOP Instance UID only, and the WADO-RS URL of
    the PDF (FHIR presentedForm) needs the series too."""
    return str(generate_uid(entropy_srcs=["minipacs report document series", sop_instance_uid]))


def _part10(ds: Dataset) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def encapsulated_pdf(report: SignedReport, header: Dataset, pdf: bytes) -> tuple[str, bytes]:
    """(SOP Instance UID, Part-10 bytes) of the Encapsulated PDF (PS3.3 A.45.1)."""
    ds = _base(header, ENCAPSULATED_PDF, "DOC", report.signed_at, 9901)
    ds.ConversionType = "WSD"  # workstation
    ds.BurnedInAnnotation = "YES"  # the PDF names the patient
    ds.DocumentTitle = f"Imaging report {report.report_id} ({report.status})"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic imaging study")])
    ds.AcquisitionDateTime = report.signed_at.strftime("%Y%m%d%H%M%S")
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    return ds.SOPInstanceUID, _part10(ds)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue = value
    code.CodingSchemeDesignator = scheme
    code.CodeMeaning = meaning
    return code


def _text_item(concept: Dataset, text: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([concept])
    item.TextValue = text
    return item


def text_sr(report: SignedReport, header: Dataset) -> tuple[str, bytes]:
    """(SOP Instance UID, Part-10 bytes) of a Basic Text SR (PS3.3 A.35.1): the root
    CONTAINER 'Imaging report' with Findings and Impression TEXT items and IMAGE items
    for the key images; COMPLETE and VERIFIED with the signer as verifying observer."""
    ds = _base(header, BASIC_TEXT_SR, "SR", report.signed_at, 9902)
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic imaging report")])
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    stamp = report.signed_at.strftime("%Y%m%d%H%M%S")
    observer = Dataset()
    observer.VerifyingObserverName = report.signer
    observer.VerificationDateTime = stamp
    observer.VerifyingOrganization = "minipacs"
    observer.VerifyingObserverIdentificationCodeSequence = Sequence()
    ds.VerifyingObserverSequence = Sequence([observer])
    ds.PreliminaryFlag = "FINAL"
    items = [_text_item(_code("121071", "DCM", "Finding"), report.findings or "-"),
             _text_item(_code("121073", "DCM", "Impression"), report.conclusion or "-")]
    evidence: dict[str, list[Dataset]] = {}
    for sop_class, sop_uid in report.key_images:
        ref = Dataset()
        ref.ReferencedSOPClassUID = sop_class
        ref.ReferencedSOPInstanceUID = sop_uid
        image = Dataset()
        image.RelationshipType = "CONTAINS"
        image.ValueType = "IMAGE"
        image.ConceptNameCodeSequence = Sequence([_code("121200", "DCM", "Illustration of ROI")])
        image.ReferencedSOPSequence = Sequence([ref])
        items.append(image)
        evidence.setdefault(report.key_image_series.get(sop_uid, ""), []).append(ref)
    ds.ContentSequence = Sequence(items)
    if evidence:  # PS3.3 C.17.2.3: every referenced instance listed
        series_items = []
        for series_uid, refs in evidence.items():
            series = Dataset()
            series.SeriesInstanceUID = series_uid
            series.ReferencedSOPSequence = Sequence(refs)
            series_items.append(series)
        study = Dataset()
        study.StudyInstanceUID = header.StudyInstanceUID
        study.ReferencedSeriesSequence = Sequence(series_items)
        ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    return ds.SOPInstanceUID, _part10(ds)
