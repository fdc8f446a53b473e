"""The ORU^R01 of a signed report (issue #14, hl7/oru.py), parsed back with python-hl7:
the exact Vietnamese text, the identifiers, the order numbers, the result status."""

from __future__ import annotations

import base64
from datetime import datetime

import hl7
import pytest

from minipacs.hl7.oru import OruParties, PatientIdentifier, oru_r01
from minipacs.reports.service import AMENDED, FINAL, PRELIMINARY, Report

pytestmark = pytest.mark.door_only  # the HL7 message builder, no backend

FINDINGS = "Gan kích thước bình thường.\nNhu mô đồng nhất | không có nốt ^ khu trú & ~."
CONCLUSION = "Không thấy tổn thương khu trú trong nhu mô gan."
PARTIES = OruParties("MINIPACS", "BV Chợ Rẫy", "HIS", "Khoa CĐHA")
IDS = [PatientIdentifier("BN0012345", "BVCR", "MR"),
       PatientIdentifier("079068012345", "CCCD", "NI"),
       PatientIdentifier("DN4797933102123", "BHYT", "HC")]


def _report(status: str) -> Report:
    at = datetime(2026, 12, 4, 9, 30, 5)
    return Report(7, "1.2.3", "BN0012345", "BVCR", status, FINDINGS, CONCLUSION, "12",
                  (), "bs.lan", "bs.lan", 6 if status == AMENDED else None, 3, at, at, at,
                  "ab" * 32, "1.2.3.4", "1.2.3.5")


@pytest.mark.parametrize(("status", "code"), [(FINAL, "F"), (AMENDED, "C")])
def test_oru_r01_carries_the_report_text_identifiers_and_status(status: str,
                                                                code: str) -> None:
    text = oru_r01(_report(status), PARTIES, IDS, "Trần^Thị Bích",
                   accession_number="ACC42", placer_order="ORD12", filler_order="F12",
                   control_id="RPT7-3", now=datetime(2026, 12, 4, 9, 31), pdf=b"%PDF-1.4 x")
    message = hl7.parse(text)
    assert str(message.segment("MSH")[9]) == "ORU^R01^ORU_R01"
    assert str(message.segment("MSH")[18]) == "UNICODE UTF-8"
    pid3 = message.segment("PID")[3]
    assert [(str(r[0]), str(r[3]), str(r[4])) for r in pid3] == [
        ("BN0012345", "BVCR", "MR"), ("079068012345", "CCCD", "NI"),
        ("DN4797933102123", "BHYT", "HC")]
    assert str(message.segment("PID")[5]) == "Trần^Thị Bích"
    obr = message.segment("OBR")
    assert (str(obr[2]), str(obr[3]), str(obr[18]), str(obr[25]), str(obr[32])) == \
        ("ORD12", "F12", "ACC42", code, "bs.lan")
    obx = list(message.segments("OBX"))
    assert [str(o[2]) for o in obx] == ["FT", "FT", "ED"]
    assert message.unescape(str(obx[0][5])).replace("\r", "\n") == FINDINGS
    assert message.unescape(str(obx[1][5])) == CONCLUSION
    assert all(str(o[11]) == code for o in obx)
    assert base64.b64decode(str(obx[2][5][0][4])) == b"%PDF-1.4 x"


def test_a_report_not_signed_is_not_sent() -> None:
    with pytest.raises(ValueError, match="report 7 is preliminary"):
        oru_r01(_report(PRELIMINARY), PARTIES, IDS, "A^B", accession_number="",
                placer_order="", filler_order="", control_id="1", now=datetime(2026, 1, 1))
