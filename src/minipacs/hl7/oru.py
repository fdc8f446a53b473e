"""A signed report as an HL7 v2.5 ORU^R01 message (issue #14; pure: report in, message
text out). `oru_sender.py` delivers it over MLLP (docs/emr-integration.md §8.3).

Segments (HL7 v2.5 chapter 7, "Observation Reporting"): MSH (MSH-18 `UNICODE UTF-8`, so
Vietnamese travels as is), PID (PID-3: the hospital ID typed with the hospital type,
then the other identifiers such as CCCD and BHYT with their own types, as the HL7 door
reads them), OBR (OBR-2 placer / OBR-3 filler order number, OBR-18 accession number,
OBR-22 the signing time, OBR-25 result status F final or C corrected, OBR-32 the signer),
and OBX segments: findings and conclusion as FT (one OBX each, LOINC 18782-3 findings
and 19005-8 impression), optionally the PDF as ED base64.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from minipacs.reports.service import AMENDED, FINAL, Report

# HL7 v2 escape sequences (chapter 2.7): the delimiters inside a text value.
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"),
            ("~", "\\R\\"))
RESULT_STATUS = {FINAL: "F", AMENDED: "C"}  # HL7 table 0123


@dataclass(frozen=True)
class OruParties:
    """MSH-3..6: who sends (this PACS) and who receives (the EMR/RIS)."""

    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str


@dataclass(frozen=True)
class PatientIdentifier:
    """One PID-3 repetition: the value, its assigning authority (CX-4) and type (CX-5)."""

    value: str
    authority: str
    type_code: str


def escaped(text: str) -> str:
    """`text` safe inside one HL7 field: delimiters escaped, line breaks as `\\.br\\`
    (FT formatting, chapter 2.7.6), carriage returns never raw (they end a segment)."""
    for raw, escape in _ESCAPES:
        text = text.replace(raw, escape)
    return "\\.br\\".join(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))


def _ts(moment: datetime | None) -> str:
    return moment.strftime("%Y%m%d%H%M%S") if moment else ""


def _segment(name: str, fields: dict[int, str]) -> str:
    """A segment with `fields` at their HL7 sequence numbers, the others empty."""
    return "|".join([name, *(fields.get(i, "") for i in range(1, max(fields) + 1))])


def oru_r01(report: Report, parties: OruParties, identifiers: list[PatientIdentifier],
            patient_name: str, *, accession_number: str, placer_order: str,
            filler_order: str, control_id: str, now: datetime,
            pdf: bytes | None = None) -> str:
    """The ORU^R01 of a final or amended report, segments separated by CR (MLLP framing
    is the sender's). `ValueError` for a report that is not signed."""
    if report.status not in RESULT_STATUS:
        raise ValueError(f"report {report.id} is {report.status}; only final or amended "
                         "reports are sent")
    pid3 = "~".join(f"{escaped(i.value)}^^^{escaped(i.authority)}^{escaped(i.type_code)}"
                    for i in identifiers)
    name = "^".join(escaped(part) for part in patient_name.split("^"))
    signer = escaped(report.signer)
    signed = _ts(report.signed_at)
    status = RESULT_STATUS[report.status]
    segments = [
        "MSH|^~\\&|" + "|".join(escaped(v) for v in (
            parties.sending_application, parties.sending_facility,
            parties.receiving_application, parties.receiving_facility))
        + f"|{_ts(now)}||ORU^R01^ORU_R01|{escaped(control_id)}|P|2.5|||AL|NE||UNICODE UTF-8",
        f"PID|1||{pid3}||{name}",
        _segment("OBR", {1: "1", 2: escaped(placer_order), 3: escaped(filler_order),
                         4: "18748-4^Diagnostic imaging study^LN",
                         18: escaped(accession_number), 22: signed, 25: status,
                         32: signer}),
    ]
    observations = [("18782-3", "Findings", report.findings),
                    ("19005-8", "Impression", report.conclusion)]
    set_id = 0
    for code, meaning, text in observations:
        if not text:
            continue
        set_id += 1
        segments.append(f"OBX|{set_id}|FT|{code}^{meaning}^LN||{escaped(text)}||||||{status}"
                        f"|||{signed}||{signer}")
    if pdf is not None:
        set_id += 1
        data = base64.b64encode(pdf).decode("ascii")
        segments.append(f"OBX|{set_id}|ED|18748-4^Diagnostic imaging study^LN||"
                        f"^application^pdf^Base64^{data}||||||{status}|||{signed}||{signer}")
    return "\r".join(segments) + "\r"
