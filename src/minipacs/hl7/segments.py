"""Plain values out of parsed HL7 v2 segments (python-hl7 `Message`), in DICOM formats.

Field numbers follow HL7 v2.5 chapter 3 (PID, MRG, PV1) and chapter 4 (ORC, OBR, TQ1,
IPC); data types chapter 2.A (CX, XPN, XCN, HD, CE/CWE, TS/DTM, EI).
"""

from __future__ import annotations

from dataclasses import dataclass

from hl7.containers import Message, Segment

from minipacs.hl7.acks import DATA_TYPE_ERROR, REQUIRED_FIELD_MISSING, application_error
from minipacs.patient_identity import IdentitySystems


def value(message: Message, segment: Segment | None, field: int, repeat: int = 1,
          component: int = 1, subcomponent: int = 1) -> str:
    """One (sub)component of `segment`, escape sequences resolved ("" when absent)."""
    if segment is None:
        return ""
    try:
        raw = segment.extract_field(repeat, field, repeat, component, subcomponent)
    except (IndexError, KeyError):
        return ""
    text = str(raw).strip()
    return str(message.unescape(text)).strip() if message.esc in text else text


def repetitions(segment: Segment | None, field: int) -> int:
    """How many repetitions `field` of `segment` has (0 when absent or empty)."""
    if segment is None or len(segment) <= field or not str(segment[field]):
        return 0
    return len(segment[field])


def first_segment(message: Message, name: str) -> Segment | None:
    try:
        segment: Segment = message.segment(name)
    except KeyError:
        return None
    return segment


def all_segments(message: Message, name: str) -> list[Segment]:
    try:
        return list(message.segments(name))
    except KeyError:
        return []


def person_name(message: Message, segment: Segment | None, field: int, *,
                first_component: int = 1) -> str:
    """An XPN (or the name part of an XCN, from `first_component`) as a DICOM PN
    (PS3.5 §6.2: family^given^middle^prefix^suffix; XPN is family^given^further
    given^suffix^prefix), trailing empty components dropped. The family name is the
    first subcomponent of XPN-1 (FN-1, surname)."""
    family, given, middle, suffix, prefix = (
        value(message, segment, field, 1, first_component + i) for i in range(5))
    parts = [family, given, middle, prefix, suffix]
    while parts and not parts[-1]:
        parts.pop()
    return "^".join(parts)


def dicom_date(text: str, where: str) -> str:
    """YYYYMMDD out of an HL7 DT/DTM/TS (YYYY[MM[DD[HH...]]]); "" for ""."""
    if not text:
        return ""
    digits = text[:8]
    if len(digits) != 8 or not digits.isdigit():
        raise application_error(DATA_TYPE_ERROR, f"{where} {text!r} is not a date "
                                "YYYYMMDD[HHMM[SS]]", where.replace("-", "^1^"))
    return digits


def dicom_time(text: str) -> str:
    """HHMM[SS] out of an HL7 DTM (YYYYMMDDHHMM[SS][.S][+ZZZZ]); "" without a time."""
    time = text[8:14]
    return time if len(time) >= 4 and time.isdigit() else ""


def dicom_sex(text: str) -> str:
    """HL7 table 0001 (F, M, O, U, A, N) as DICOM PatientSex (F, M, O or empty)."""
    return {"F": "F", "M": "M", "O": "O", "A": "O"}.get(text.upper(), "")


@dataclass(frozen=True)
class OtherIdentifier:
    """A PID-3 repetition that is not the hospital ID: `issuer` is the DICOM issuer of
    its system (CCCD, BHYT) or, for a type no system has, the assigning authority.
    `problem`: why its value breaks its system's format (kept as received, flagged)."""

    value: str
    issuer: str
    type_code: str
    problem: str | None = None


@dataclass(frozen=True)
class PatientFields:
    """The patient of a PID segment (or a MRG's prior identifiers), DICOM formats."""

    patient_id: str
    issuer_of_patient_id: str
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    other_ids: tuple[OtherIdentifier, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.patient_id, self.issuer_of_patient_id)


def identifiers(message: Message, segment: Segment, field: int, systems: IdentitySystems,
                where: str, birth_date: str = "", sex: str = ""
                ) -> tuple[tuple[str, str], tuple[OtherIdentifier, ...]]:
    """The hospital ID (value, issuer) and the other identifiers of a CX list (PID-3,
    MRG-1). The hospital ID is the repetition whose CX-5 identifier type is the hospital
    system's (`identity_hospital_type`, MR), else the first one of no other known type;
    its issuer is CX-4's namespace ID. CX-5 NI/HC (settings) are the CCCD and BHYT."""
    hospital: tuple[str, str] | None = None
    untyped: tuple[str, str] | None = None
    others: list[OtherIdentifier] = []
    for rep in range(1, repetitions(segment, field) + 1):
        ident = value(message, segment, field, rep, 1)
        if not ident:
            continue
        authority = value(message, segment, field, rep, 4)
        type_code = value(message, segment, field, rep, 5).upper()
        system = next((s for s in systems.others if s.type_code.upper() == type_code), None)
        if type_code == systems.hospital.type_code.upper() and hospital is None:
            hospital = (ident, authority)
        elif system is not None:
            others.append(OtherIdentifier(ident, system.dicom_issuer, type_code,
                                          system.check(ident, birth_date, sex)))
        elif untyped is None and hospital is None:
            untyped = (ident, authority)
        else:
            others.append(OtherIdentifier(ident, authority, type_code))
    chosen = hospital or untyped
    if chosen is None:
        raise application_error(
            REQUIRED_FIELD_MISSING,
            f"{where} has no hospital patient ID (a repetition with identifier type "
            f"{systems.hospital.type_code} in component 5)", where.replace("-", "^1^"))
    if hospital is not None and untyped is not None:
        others.append(OtherIdentifier(untyped[0], untyped[1], ""))
    if len(chosen[0]) > 64:
        raise application_error(DATA_TYPE_ERROR, f"{where} patient ID {chosen[0][:20]!r}... "
                                "is longer than 64 characters (DICOM LO)",
                                where.replace("-", "^1^"))
    return chosen, tuple(others)


def patient_fields(message: Message, systems: IdentitySystems) -> PatientFields:
    """The patient of the message's PID segment; `Hl7Problem` (AE) when it has none."""
    pid = first_segment(message, "PID")
    if pid is None:
        raise application_error(REQUIRED_FIELD_MISSING, "the message has no PID segment",
                                "PID")
    birth_date = dicom_date(value(message, pid, 7), "PID-7")
    sex = dicom_sex(value(message, pid, 8))
    (patient_id, issuer), others = identifiers(message, pid, 3, systems, "PID-3",
                                               birth_date, sex)
    return PatientFields(patient_id, issuer, person_name(message, pid, 5), birth_date, sex,
                         others)
