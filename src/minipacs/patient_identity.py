"""A patient's identifiers from several systems, and how each arrives and is named.

Three systems, each configured in `Settings` (docs/emr-integration.md):

- the hospital patient ID: DICOM PatientID (0010,0020), with IssuerOfPatientID;
- the national citizen ID, CCCD: an OtherPatientIDsSequence (0010,1002) item whose
  IssuerOfPatientID is `identity_cccd_issuer` ("CCCD");
- the health-insurance number, BHYT: such an item with issuer "BHYT".

Each has a FHIR `identifier.system` URI (defaults: the Ministry of Health's draft
Vietnamese FHIR core guide), alternative URIs accepted on search (the HL7 Vietnam
community guide's), and an HL7 v2-0203 type code (FHIR identifier.type, HL7 v2 PID-3.5).

Values are checked against their format where they have one; a bad value is kept as it
arrived and flagged (`problem`), never rewritten, never a reason to refuse a study.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from minipacs.config import Settings

HOSPITAL, CCCD, BHYT = "hospital", "cccd", "bhyt"

# Province and centrally-run city codes, the first 3 digits of a CCCD (Circular
# 07/2016/TT-BCA, Appendix; unchanged by the 2025 merger of provinces for cards issued).
_PROVINCES = frozenset(
    "001 002 004 006 008 010 011 012 014 015 017 019 020 022 024 025 026 027 030 031 033 "
    "034 035 036 037 038 040 042 044 045 046 048 049 051 052 054 056 058 060 062 064 066 "
    "067 068 070 072 074 075 077 079 080 082 083 084 086 087 089 091 092 093 094 095 096"
    .split()
)
_CCCD = re.compile(r"\d{12}")
# BHYT card: 2-letter beneficiary group, benefit level 1-5, 2-digit province, 10-digit
# social-insurance number (Decision 1666/QĐ-BHXH); the social-insurance number alone.
_BHYT_CARD = re.compile(r"[A-Z]{2}[1-5]\d{12}")
_BHXH = re.compile(r"\d{10}")


def cccd_problem(value: str, birth_date: str = "", sex: str = "") -> str | None:
    """What is wrong with a CCCD number, or None. Digit 4 codes century and sex (0/1:
    1900s male/female, 2/3: 2000s, ... ), digits 5-6 the year of birth; when the DICOM
    gives a birth date (YYYYMMDD) or sex (M/F) they must agree."""
    if not _CCCD.fullmatch(value):
        return f"CCCD {value!r} is not 12 digits"
    if value[:3] not in _PROVINCES:
        return f"CCCD {value!r}: {value[:3]} is not a province code"
    code = int(value[3])
    century, female = 1900 + 100 * (code // 2), code % 2 == 1
    if len(birth_date) >= 4 and birth_date[:4].isdigit():
        if f"{century + int(value[4:6]):04d}" != birth_date[:4]:
            return (f"CCCD {value!r} encodes birth year {century + int(value[4:6])}, "
                    f"the patient's birth date is {birth_date}")
    if sex in ("M", "F") and (sex == "F") != female:
        return f"CCCD {value!r} encodes sex {'F' if female else 'M'}, the patient's is {sex}"
    return None


def bhyt_problem(value: str, birth_date: str = "", sex: str = "") -> str | None:
    """What is wrong with a health-insurance number, or None: the 15-character card
    number, the 10-digit social-insurance number, or (since 2025) the CCCD itself."""
    if _BHYT_CARD.fullmatch(value) or _BHXH.fullmatch(value):
        return None
    if _CCCD.fullmatch(value):
        return cccd_problem(value, birth_date, sex)
    return (f"BHYT {value!r} is neither a 15-character card number (e.g. DN4790123456789), "
            "a 10-digit social-insurance number nor a 12-digit CCCD")


Check = Callable[[str, str, str], "str | None"]


def _no_check(value: str, birth_date: str = "", sex: str = "") -> str | None:
    return None


@dataclass(frozen=True)
class IdentifierSystem:
    """One identification system. `dicom_issuer`: the IssuerOfPatientID of its
    OtherPatientIDsSequence item; "" for the hospital ID, which is PatientID itself."""

    name: str
    dicom_issuer: str
    fhir_system: str
    alternative_systems: tuple[str, ...]
    type_code: str
    check: Check = _no_check

    def named_by(self, uri: str) -> bool:
        return uri == self.fhir_system or uri in self.alternative_systems


@dataclass(frozen=True)
class PatientIdentifier:
    """One identifier of a patient as stored. `system` None: an other ID whose issuer no
    configured system has. `problem`: why the value breaks its system's format."""

    value: str
    issuer: str
    system: IdentifierSystem | None
    problem: str | None


def _uris(text: str) -> tuple[str, ...]:
    return tuple(u.strip() for u in text.split(",") if u.strip())


@dataclass(frozen=True)
class IdentitySystems:
    hospital: IdentifierSystem
    others: tuple[IdentifierSystem, ...]
    facility_name: str

    @classmethod
    def from_settings(cls, settings: Settings) -> IdentitySystems:
        s = settings
        return cls(
            IdentifierSystem(HOSPITAL, "", s.identity_hospital_system,
                             _uris(s.identity_hospital_alternative_systems),
                             s.identity_hospital_type),
            (
                IdentifierSystem(CCCD, s.identity_cccd_issuer, s.identity_cccd_system,
                                 _uris(s.identity_cccd_alternative_systems),
                                 s.identity_cccd_type, cccd_problem),
                IdentifierSystem(BHYT, s.identity_bhyt_issuer, s.identity_bhyt_system,
                                 _uris(s.identity_bhyt_alternative_systems),
                                 s.identity_bhyt_type, bhyt_problem),
            ),
            s.facility_name,
        )

    def named_by(self, uri: str) -> IdentifierSystem | None:
        """The system a FHIR identifier.system URI (its own or an alternative) names."""
        return next((s for s in (self.hospital, *self.others) if s.named_by(uri)), None)

    def by_issuer(self, issuer: str) -> IdentifierSystem | None:
        return next((s for s in self.others if s.dicom_issuer == issuer), None)

    def identifiers_of(self, model: dict[str, Any]) -> list[PatientIdentifier]:
        """The identifiers of a patient given as DICOM JSON (PatientID, Issuer, birth
        date, sex, OtherPatientIDsSequence), the hospital ID first."""
        birth_date, sex = _text(model, "00100030"), _text(model, "00100040")
        out = [PatientIdentifier(_text(model, "00100020"), _text(model, "00100021"),
                                 self.hospital, None)]
        seen = {(out[0].value, out[0].issuer)}
        for item in model.get("00101002", {}).get("Value", []):
            value, issuer = _text(item, "00100020"), _text(item, "00100021")
            if not value or (value, issuer) in seen:
                continue
            seen.add((value, issuer))
            system = self.by_issuer(issuer)
            problem = system.check(value, birth_date, sex) if system else None
            out.append(PatientIdentifier(value, issuer, system, problem))
        return out


def _text(model: dict[str, Any], tag: str) -> str:
    values = model.get(tag, {}).get("Value") or [""]
    return str(values[0]).strip()
