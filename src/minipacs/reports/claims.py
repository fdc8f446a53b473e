"""Insurance claims without film: the imaging rows of a health-insurance claim, per study.

A Vietnamese hospital information system (HIS) sends its claims to the social-security
portal as the XML tables of QĐ 130/QĐ-BYT (2023, replacing QĐ 4210/QĐ-BYT), amended by
QĐ 4750/QĐ-BYT (2023). For an imaging service two tables need what only the PACS knows:

- XML3 (Bảng 3, chi tiết dịch vụ kỹ thuật, element CHI_TIET_DVKT): the order time
  NGAY_YL, the perform time NGAY_TH_YL, the result time NGAY_KQ (each yyyyMMddHHmm,
  12 characters), the machine MA_MAY (≤ 1024), who performed NGUOI_THUC_HIEN (≤ 255);
- XML4 (Bảng 4, chi tiết cận lâm sàng, element CHI_TIET_CLS): the findings MO_TA and the
  conclusion KET_LUAN (free text, no limit), NGAY_KQ and the reading doctor's
  practising-certificate code MA_BS_DOC_KQ (≤ 255, several separated by ';').

They come from the newest signed (final or amended) report of the study, its images and
its order. What only the HIS knows is left empty for it to fill and said so in `notes`:
MA_LK (its own claim key, ≤ 100; a caller may pass it in), MA_BAC_SI (the ordering
doctor's code: we know only the referring physician's name) and, for XML4, the lab-style
indicator fields (MA_CHI_SO, TEN_CHI_SO, GIA_TRI, DON_VI_DO) an imaging result does not
have. MA_DICH_VU is the order's requested procedure code (the HIS places orders with its
service codes), else the images' own, else empty with a note.

Reading claims is reading the report: action `view` on the study, checked by the one
permission check; every read is an audit event ("claim-read") before the answer leaves.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import or_, select

from minipacs.access.principal import Principal
from minipacs.access.roles import Action
from minipacs.dicom.matching import Filter, Match
from minipacs.errors import Conflict, InvalidRequest, NotFound
from minipacs.index.models import ScheduledProcedureStep as Step
from minipacs.index.models import UserAccount
from minipacs.reports.service import AMENDED, FINAL, Report, Reports

DECISION = "QĐ 130/QĐ-BYT (amended by QĐ 4750/QĐ-BYT)"
# Element names, in the decision's order, of the part of each row we speak for.
XML3_ELEMENTS = ("MA_LK", "STT", "MA_DICH_VU", "TEN_DICH_VU", "MA_BAC_SI",
                 "NGUOI_THUC_HIEN", "NGAY_YL", "NGAY_TH_YL", "NGAY_KQ", "MA_MAY", "DU_PHONG")
XML4_ELEMENTS = ("MA_LK", "STT", "MA_DICH_VU", "MA_CHI_SO", "TEN_CHI_SO", "GIA_TRI",
                 "DON_VI_DO", "MO_TA", "KET_LUAN", "NGAY_KQ", "MA_BS_DOC_KQ", "DU_PHONG")
# The tables' wrappers: root / list / row (as the HIS's claim files nest them).
XML3_WRAPPERS = ("CHITIEU_CHITIET_DVKT_VTYT", "DSACH_CHI_TIET_DVKT", "CHI_TIET_DVKT")
XML4_WRAPPERS = ("CHITIEU_CHITIET_DICHVUCANLAMSANG", "DSACH_CHI_TIET_CLS", "CHI_TIET_CLS")
# Lengths the decision sets (characters); the ones not named have none.
LIMITS = {("xml3", "MA_LK"): 100, ("xml3", "MA_DICH_VU"): 50, ("xml3", "TEN_DICH_VU"): 1024,
          ("xml3", "NGUOI_THUC_HIEN"): 255, ("xml3", "MA_MAY"): 1024,
          ("xml4", "MA_LK"): 100, ("xml4", "MA_DICH_VU"): 15,
          ("xml4", "MA_BS_DOC_KQ"): 255}
_IMAGE_LESS = ("1.2.840.10008.5.1.4.1.1.104.",  # Encapsulated documents (the report PDF)
               "1.2.840.10008.5.1.4.1.1.88.")  # SR and Key Object Selection
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class StudyClaim:
    """One study's imaging rows: `xml3`/`xml4` map element names to values (in the
    decision's order); `notes` say what is left for the HIS and why."""

    study_instance_uid: str
    accession_number: str
    patient_id: str
    report: Report
    xml3: dict[str, str]
    xml4: dict[str, str]
    notes: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        r = self.report
        return {"StudyInstanceUID": self.study_instance_uid,
                "AccessionNumber": self.accession_number, "PatientID": self.patient_id,
                "decision": DECISION,
                "report": {"id": r.id, "status": r.status, "signer": r.signer,
                           "signed_at": r.signed_at.replace(tzinfo=UTC).isoformat()
                           if r.signed_at else None},
                "xml3": self.xml3, "xml4": self.xml4, "notes": list(self.notes)}


def machine_codes(text: str) -> dict[str, str]:
    """MINIPACS_CLAIM_MACHINE_CODES parsed: a JSON object, or 'KEY=CODE' pairs separated
    by commas; keys compared case-insensitively. `InvalidRequest` naming the bad part."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise InvalidRequest(f"MINIPACS_CLAIM_MACHINE_CODES is not a JSON object: "
                                 f"{exc}") from None
        if not isinstance(parsed, dict) or not all(
                isinstance(v, str) for v in parsed.values()):
            raise InvalidRequest("MINIPACS_CLAIM_MACHINE_CODES must map names to code "
                                 "strings, e.g. {\"CT01\": \"KSK.1.79071.123456\"}")
        return {str(k).strip().upper(): v.strip() for k, v in parsed.items()}
    codes = {}
    for pair in text.split(","):
        key, sep, code = pair.partition("=")
        if not sep or not key.strip() or not code.strip():
            raise InvalidRequest(f"MINIPACS_CLAIM_MACHINE_CODES part {pair.strip()[:80]!r} "
                                 "is not KEY=CODE (e.g. CT01=KSK.1.79071.123456)")
        codes[key.strip().upper()] = code.strip()
    return codes


def claim_time(value: datetime | None, zone: ZoneInfo) -> str:
    """A UTC time (naive, as the index keeps it) as the decision writes times:
    yyyyMMddHHmm in the hospital's local time; "" for none."""
    if value is None:
        return ""
    return value.replace(tzinfo=UTC).astimezone(zone).strftime("%Y%m%d%H%M")


def _dicom_time(date: str, time: str) -> str:
    """StudyDate (DA) + StudyTime (TM), local time as the modality wrote it, as
    yyyyMMddHHmm (PS3.5 6.2: TM is HHMMSS.FFFFFF, components may be left off)."""
    if not re.fullmatch(r"\d{8}", date):
        return ""
    digits = re.match(r"\d*", time.strip()).group(0)  # type: ignore[union-attr]
    return date + (digits[:4] + "0000")[:4]


def _text(model: dict[str, Any], tag: str) -> str:
    values = (model.get(tag) or {}).get("Value") or [""]
    value = values[0]
    if isinstance(value, dict):  # PN
        value = value.get("Alphabetic", "")
    return str(value).strip()


def _first_code(model: dict[str, Any], tag: str) -> tuple[str, str]:
    """(CodeValue, CodeMeaning) of a code sequence's first item, or ("", "")."""
    items = (model.get(tag) or {}).get("Value") or []
    if not items or not isinstance(items[0], dict):
        return "", ""
    return _text(items[0], "00080100"), _text(items[0], "00080104")


class Claims:
    """Claims rows for a principal, from the report service, the archive and orders."""

    def __init__(self, reports: Reports, machine_codes_setting: str = "",
                 time_zone: str = "Asia/Ho_Chi_Minh") -> None:
        self.reports = reports
        self.archive = reports.archive
        self.machine_codes_setting = machine_codes_setting
        try:
            self.zone = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidRequest(f"MINIPACS_CLAIM_TIMEZONE {time_zone!r} is not a time zone "
                                 "name (e.g. Asia/Ho_Chi_Minh)") from None

    def for_study(self, study_instance_uid: str, *, ma_lk: str = "", stt: int = 1,
                  principal: Principal | None = None) -> StudyClaim:
        """The study's rows. Raises `NotFound` when the study is not stored (or not
        visible), `Conflict` when it has no signed report yet."""
        principal = self.archive.permit(principal, Action.VIEW, study_instance_uid)
        signed = self.reports.search(study_uids=(study_instance_uid,),
                                     statuses=(FINAL, AMENDED), limit=1, principal=principal)
        records = self.archive.instances(study_instance_uid, principal=principal)
        if not signed:
            raise Conflict(f"study {study_instance_uid} has no signed report yet: claims "
                           "rows (XML3/XML4) come from the final report; sign it first")
        images = [r for r in records if not r.sop_class_uid.startswith(_IMAGE_LESS)]
        first = (images or records)[0]
        texts = self.archive.metadata(study_instance_uid, first.series_instance_uid,
                                      first.sop_instance_uid, principal=principal)
        claim = self._claim(signed[0], json.loads(texts[0]), ma_lk, stt)
        self.archive.audit("claim-read", principal.actor, claim.patient_id,
                           study_instance_uid,
                           detail=f"insurance claim rows XML3/XML4 from report "
                           f"{claim.report.id}", role=principal.role.value,
                           source=principal.source)
        return claim

    def for_accession(self, accession_number: str, *, ma_lk: str = "",
                      principal: Principal | None = None) -> list[StudyClaim]:
        """The rows of every study with this accession number that has a signed report
        (STT numbered 1..n). Raises `NotFound` when no study has it, `Conflict` when
        none of them has a signed report yet."""
        value = accession_number.strip()
        if not value or len(value) > 16 or set(value) & set("*?\\"):
            raise InvalidRequest(f"AccessionNumber {accession_number[:80]!r} must be 1 to 16 "
                                 "characters without wildcards (PS3.5 SH)")
        found = self.archive.find("STUDY", Filter((Match("00080050", "single", (value,),
                                                         "SH"),)), principal=principal)
        uids = [_text(m, "0020000D") for m in found.matches]
        if not uids:
            raise NotFound(f"no study has AccessionNumber {value!r}")
        claims: list[StudyClaim] = []
        for uid in uids:
            try:
                claims.append(self.for_study(uid, ma_lk=ma_lk, stt=len(claims) + 1,
                                             principal=principal))
            except Conflict:
                continue
        if not claims:
            raise Conflict(f"no study with AccessionNumber {value!r} has a signed report "
                           "yet: claims rows come from the final report; sign it first")
        return claims

    # ------------------------------------------------------------------ internals
    def _claim(self, report: Report, image: dict[str, Any], ma_lk: str,
               stt: int) -> StudyClaim:
        notes: list[str] = []
        accession = _text(image, "00080050")
        order = self._order(report, accession)
        service_code, service_name = self._service(order, image, notes)
        ordered = claim_time(order.created_at, self.zone) if order is not None else ""
        if not ordered:
            notes.append("NGAY_YL empty: no order (worklist item) is linked to this study")
        performed = _dicom_time(_text(image, "00080020"), _text(image, "00080030"))
        if not performed:
            notes.append("NGAY_TH_YL empty: the images carry no StudyDate (0008,0020)")
        result = claim_time(report.signed_at, self.zone)
        certificate = report.signer_certificate or self._current_certificate(report, notes)
        if not certificate:
            notes.append(f"MA_BS_DOC_KQ empty: the signer {report.signer!r} has no "
                         "practising-certificate code (minipacs user set-certificate)")
        machine = self._machine(image, order, notes)
        if not ma_lk:
            notes.append("MA_LK empty: the HIS's own claim key (pass ?ma_lk= to have it "
                         "filled in)")
        notes.append("MA_BAC_SI empty: the ordering doctor's code is the HIS's "
                     "(minipacs knows the referring physician's name only)")
        findings, conclusion = _xml_safe(report.findings, notes), \
            _xml_safe(report.conclusion, notes)
        xml3 = {"MA_LK": ma_lk, "STT": str(stt), "MA_DICH_VU": service_code,
                "TEN_DICH_VU": service_name, "MA_BAC_SI": "",
                "NGUOI_THUC_HIEN": certificate, "NGAY_YL": ordered,
                "NGAY_TH_YL": performed, "NGAY_KQ": result, "MA_MAY": machine,
                "DU_PHONG": ""}
        xml4 = {"MA_LK": ma_lk, "STT": str(stt), "MA_DICH_VU": service_code,
                "MA_CHI_SO": "", "TEN_CHI_SO": "", "GIA_TRI": "", "DON_VI_DO": "",
                "MO_TA": findings, "KET_LUAN": conclusion, "NGAY_KQ": result,
                "MA_BS_DOC_KQ": certificate, "DU_PHONG": ""}
        for table, row in (("xml3", xml3), ("xml4", xml4)):
            for name, value in row.items():
                limit = LIMITS.get((table, name))
                if limit is not None and len(value) > limit:
                    notes.append(f"{table.upper()} {name} {value[:40]!r} is {len(value)} "
                                 f"characters; the decision allows {limit}")
        return StudyClaim(report.study_instance_uid, accession or (
            order.accession_number if order is not None else ""),
            report.patient_id, report, xml3, xml4, tuple(notes))

    def _order(self, report: Report, accession: str) -> Step | None:
        """The order the study was performed for: the report's basedOn, else the order
        the images arrived as, else the one scheduled with this study UID or accession."""
        conditions = [Step.performed_study_uid == report.study_instance_uid,
                      Step.study_instance_uid == report.study_instance_uid]
        if accession:
            conditions.append(Step.accession_number == accession)
        with self.reports.reading() as session:
            if report.based_on:
                row = session.scalars(select(Step).where(
                    Step.scheduled_procedure_step_id == report.based_on)).first()
                if row is not None:
                    session.expunge(row)
                    return row
            row = session.scalars(select(Step).where(or_(*conditions))
                                  .order_by(Step.id).limit(1)).first()
            if row is not None:
                session.expunge(row)
            return row

    def _service(self, order: Step | None, image: dict[str, Any],
                 notes: list[str]) -> tuple[str, str]:
        """(MA_DICH_VU, TEN_DICH_VU): the order's requested procedure code, else the
        images' RequestedProcedureCodeSequence / ProcedureCodeSequence."""
        if order is not None and order.sequences_json:
            model = json.loads(order.sequences_json)
            code, meaning = _first_code(model, "00321064")
            if code:
                return code, meaning or order.requested_procedure_description
        for tag in ("00321064", "00081032"):
            code, meaning = _first_code(image, tag)
            if code:
                return code, meaning or _text(image, "00321060") or _text(image, "00081030")
        notes.append("MA_DICH_VU empty: neither the order nor the images carry a requested "
                     "procedure code (the HIS's service code)")
        name = (order.requested_procedure_description if order is not None else "") \
            or _text(image, "00321060") or _text(image, "00081030")
        return "", name

    def _machine(self, image: dict[str, Any], order: Step | None,
                 notes: list[str]) -> str:
        codes = machine_codes(self.machine_codes_setting)
        keys = [_text(image, "00081010"), _text(image, "00181000"),
                order.scheduled_station_ae_title if order is not None else ""]
        for key in keys:
            if key and key.upper() in codes:
                return codes[key.upper()]
        named = ", ".join(k for k in keys if k) or "none"
        notes.append(f"MA_MAY empty: no entry of MINIPACS_CLAIM_MACHINE_CODES for this "
                     f"device (station name / serial / AE: {named})")
        return ""

    def _current_certificate(self, report: Report, notes: list[str]) -> str:
        """A report signed before its signer had a code: the account's code now."""
        with self.reports.reading() as session:
            code = session.scalar(select(UserAccount.practising_certificate).where(
                UserAccount.username == report.signer)) or ""
        if code:
            notes.append("MA_BS_DOC_KQ is the signer's current code: the report was signed "
                         "before one was recorded")
        return code


def _xml_safe(text: str, notes: list[str]) -> str:
    """`text` without characters XML 1.0 cannot carry (C0 controls other than tab and
    line breaks); said in `notes` when any were left out."""
    cleaned = _NOT_XML.sub("", text)
    if cleaned != text:
        notes.append("control characters XML cannot carry were left out of the text")
    return cleaned


def claims_xml(claims: list[StudyClaim], table: str) -> bytes:
    """The XML3 or XML4 fragment (UTF-8, with declaration) holding the claims' rows:
    ROOT / LIST / ROW per QĐ 130/QĐ-BYT; text XML-escaped, Vietnamese kept as is."""
    root_name, list_name, row_name = XML3_WRAPPERS if table == "xml3" else XML4_WRAPPERS
    root = ET.Element(root_name)
    rows = ET.SubElement(root, list_name)
    for claim in claims:
        row = ET.SubElement(rows, row_name)
        for name, value in (claim.xml3 if table == "xml3" else claim.xml4).items():
            ET.SubElement(row, name).text = value
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data
