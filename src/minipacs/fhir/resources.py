"""Index records and stored DICOM JSON → FHIR R4 resources, built with `fhir.resources`
(its R4B models: Patient, ImagingStudy, Endpoint, Bundle and OperationOutcome are the
same in R4 4.0.1 and R4B), so every resource is validated as it is made.

ImagingStudy follows the DICOM → FHIR mapping of FHIR R4 ImagingStudy (§"Mappings",
DICOM tag column) and PS3.17 Annex "DICOM and FHIR": Study Instance UID as an
``urn:oid:`` identifier with system ``urn:dicom:uid``, accession number with type ACSN.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.humanname import HumanName
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.imagingstudy import (
    ImagingStudy,
    ImagingStudySeries,
    ImagingStudySeriesInstance,
)
from fhir.resources.R4B.meta import Meta
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.reference import Reference

from minipacs.fhir.ids import patient_id_of
from minipacs.patient_identity import IdentitySystems, PatientIdentifier

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID_SYSTEM = "urn:dicom:uid"
CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
# Our extension on an identifier whose value breaks its system's format (kept as sent).
FORMAT_PROBLEM_URL = "urn:minipacs:fhir:identifier-format-problem"
WADO_RS_ENDPOINT, IID_ENDPOINT = "dicom-wado-rs", "ihe-iid"
# Coding Scheme Designator (0008,0102) → FHIR code system (PS3.16 Table 8-1).
CODING_SCHEMES = {
    "DCM": DCM, "SCT": "http://snomed.info/sct", "LN": "http://loinc.org",
    "UCUM": "http://unitsofmeasure.org", "RADLEX": "http://radlex.org",
    "I10": "http://hl7.org/fhir/sid/icd-10", "ICD10": "http://hl7.org/fhir/sid/icd-10",
}
_GENDER = {"M": "male", "F": "female", "O": "other"}


def text(model: dict[str, Any], tag: str) -> str:
    """The first value of a DICOM JSON attribute as text ("" when absent or empty)."""
    values = model.get(tag, {}).get("Value") or [""]
    value = values[0]
    if isinstance(value, dict):  # PN
        return str(value.get("Alphabetic", ""))
    return str(value).strip()


def _items(model: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return list(model.get(tag, {}).get("Value") or [])


def fhir_date(dicom_date: str) -> date | None:
    """DA (YYYYMMDD) → FHIR date, None when it is not a whole, valid date."""
    if len(dicom_date) != 8 or not dicom_date.isdigit():
        return None
    try:
        return datetime.strptime(dicom_date, "%Y%m%d").date()
    except ValueError:
        return None


def fhir_datetime(dicom_date: str, dicom_time: str, timezone: str) -> Any:
    """DA + TM → FHIR dateTime text (the models parse it: a date alone keeps day
    precision); a time needs a UTC offset in FHIR: `timezone` (±HH:MM)."""
    parsed = fhir_date(dicom_date)
    day = parsed.isoformat() if parsed else None
    digits = dicom_time.replace(":", "").split(".")[0]
    if day is None:
        return None
    if len(digits) < 4 or not digits.isdigit():
        return day
    hh, mm, ss = digits[:2], digits[2:4], (digits[4:6] or "00")
    if int(hh) > 23 or int(mm) > 59 or int(ss) > 59:
        return day
    return f"{day}T{hh}:{mm}:{ss}{timezone}"


def _utc_offset(model: dict[str, Any], default: str) -> str:
    """Timezone Offset From UTC (0008,0201), ``+HHMM`` → ``+HH:MM``; else `default`."""
    value = text(model, "00080201")
    if len(value) == 5 and value[0] in "+-" and value[1:].isdigit():
        return f"{value[:3]}:{value[3:]}"
    return default


def _code(item: dict[str, Any]) -> Coding:
    """A DICOM code sequence item (Code Value, Coding Scheme Designator, Code Meaning)."""
    value = text(item, "00080100") or text(item, "00080119") or text(item, "00080120")
    scheme = text(item, "00080102")
    return Coding(system=CODING_SCHEMES.get(scheme.upper()), code=value or None,
                  display=text(item, "00080104") or None)


def person_name(dicom_name: str) -> HumanName | None:
    """PN ``Family^Given Middle`` (alphabetic group) → HumanName; Vietnamese text order
    (family first) in `text`."""
    alphabetic = dicom_name.split("=")[0]
    parts = alphabetic.split("^")
    family = parts[0].strip()
    given: list[str | None] = [
        *" ".join(p.strip() for p in parts[1:3] if p.strip()).split()]
    if not family and not given:
        return None
    return HumanName(use="official", family=family or None, given=given or None,
                     text=" ".join([family, *(g for g in given if g)]).strip())


def _identifier(found: PatientIdentifier, systems: IdentitySystems) -> Identifier:
    system = found.system
    identifier: dict[str, Any] = {"value": found.value}
    if system is not None:
        identifier["system"] = system.fhir_system
        identifier["type"] = CodeableConcept(coding=[Coding(system=V2_0203,
                                                            code=system.type_code)])
        if system is systems.hospital:
            identifier["use"] = "usual"
            identifier["assigner"] = Reference(
                display=systems.facility_name,
                identifier=Identifier(value=found.issuer) if found.issuer else None)
        else:
            identifier["use"] = "official"
    elif found.issuer:
        identifier["type"] = CodeableConcept(text=found.issuer)
    if found.problem:
        identifier["extension"] = [Extension(url=FORMAT_PROBLEM_URL,
                                             valueString=found.problem)]
    return Identifier(**identifier)


def patient_resource(model: dict[str, Any], systems: IdentitySystems) -> Patient | None:
    """A patient (PATIENT or STUDY level DICOM JSON) as a FHIR Patient; None when its
    key gives no logical id (`ids.patient_id_of`)."""
    logical = patient_id_of(text(model, "00100020"), text(model, "00100021"))
    if logical is None:
        return None
    name = person_name(text(model, "00100010"))
    return Patient(
        id=logical,
        identifier=[_identifier(f, systems) for f in systems.identifiers_of(model)
                    if f.value],
        name=[name] if name else None,
        gender=_GENDER.get(text(model, "00100040"), "unknown"),
        birthDate=fhir_date(text(model, "00100030")),
    )


def patient_reference(model: dict[str, Any]) -> Reference:
    logical = patient_id_of(text(model, "00100020"), text(model, "00100021"))
    name = person_name(text(model, "00100010"))
    display = name.text if name else None
    if logical is None:
        return Reference(display=display, identifier=Identifier(value=text(model, "00100020")))
    return Reference(reference=f"Patient/{logical}", display=display)


def imaging_study_resource(study: dict[str, Any], series: list[dict[str, Any]],
                           instances: dict[str, list[dict[str, Any]]], *,
                           timezone: str, last_updated: datetime | None,
                           based_on: list[str] | None = None) -> ImagingStudy:
    """One study (STUDY level DICOM JSON with ProcedureCodeSequence), its series
    (SERIES level, with RequestAttributesSequence) and their instances (IMAGE level);
    `based_on`: ServiceRequest ids of the orders it was performed for."""
    uid = text(study, "0020000D")
    offset = _utc_offset(study, timezone)
    identifiers = [Identifier(system=DICOM_UID_SYSTEM, value=f"urn:oid:{uid}")]
    accession = text(study, "00080050")
    if accession:
        identifiers.append(Identifier(
            type=CodeableConcept(coding=[Coding(system=V2_0203, code="ACSN")]),
            value=accession))
    modalities = sorted({text(s, "00080060") for s in series} - {""})
    reasons: list[CodeableConcept] = []
    for one in series:
        for request in _items(one, "00400275"):
            codes = [_code(c) for c in _items(request, "0040100A")]
            reason = text(request, "00401002")
            concept = CodeableConcept(coding=codes or None, text=reason or None)
            if (codes or reason) and concept not in reasons:
                reasons.append(concept)
    referrer = person_name(text(study, "00080090"))
    meta = None
    if last_updated is not None:
        meta = Meta(lastUpdated=last_updated.replace(tzinfo=UTC))
    return ImagingStudy(
        id=uid,
        meta=meta,
        identifier=identifiers,
        basedOn=[Reference(reference=f"ServiceRequest/{order}") for order in based_on]
        if based_on else None,
        status="available",
        modality=[Coding(system=DCM, code=m) for m in modalities] or None,
        subject=patient_reference(study),
        started=fhir_datetime(text(study, "00080020"), text(study, "00080030"), offset),
        referrer=Reference(display=referrer.text) if referrer else None,
        endpoint=[Reference(reference=f"Endpoint/{WADO_RS_ENDPOINT}"),
                  Reference(reference=f"Endpoint/{IID_ENDPOINT}")],
        numberOfSeries=len(series),
        numberOfInstances=sum(len(instances.get(text(s, "0020000E"), [])) for s in series),
        procedureCode=[CodeableConcept(coding=[_code(item)])
                       for item in _items(study, "00081032")] or None,
        reasonCode=reasons or None,
        description=text(study, "00081030") or None,
        series=[_series(s, instances.get(text(s, "0020000E"), []), offset)
                for s in series] or None,
    )


def _series(model: dict[str, Any], instances: list[dict[str, Any]], offset: str
            ) -> ImagingStudySeries:
    number = text(model, "00200011")
    body_part = text(model, "00180015")
    return ImagingStudySeries(
        uid=text(model, "0020000E"),
        number=int(number) if number.isdigit() else None,
        modality=Coding(system=DCM, code=text(model, "00080060") or "OT"),
        description=text(model, "0008103E") or None,
        numberOfInstances=len(instances),
        # Body Part Examined (0018,0015) is a DICOM defined term, not a SNOMED code.
        bodySite=Coding(code=body_part, display=body_part) if body_part else None,
        started=fhir_datetime(text(model, "00080021"), text(model, "00080031"), offset),
        instance=[ImagingStudySeriesInstance(
            uid=text(i, "00080018"),
            sopClass=Coding(system="urn:ietf:rfc:3986", code=f"urn:oid:{text(i, '00080016')}"),
            number=int(text(i, "00200013")) if text(i, "00200013").isdigit() else None,
        ) for i in instances] or None,
    )


def endpoints(base_url: str) -> dict[str, Endpoint]:
    """The two Endpoints every ImagingStudy references: the DICOMweb WADO-RS base, and
    the viewer's IHE Invoke Image Display address (append `?requestType=STUDY&studyUID=`)."""
    return {
        WADO_RS_ENDPOINT: Endpoint(
            id=WADO_RS_ENDPOINT, status="active", name="minipacs DICOMweb (WADO-RS)",
            connectionType=Coding(system=CONNECTION_TYPE, code="dicom-wado-rs"),
            payloadType=[CodeableConcept(text="DICOM WADO-RS")],
            payloadMimeType=["application/dicom", "application/dicom+json"],
            address=f"{base_url}/dicom-web"),
        IID_ENDPOINT: Endpoint(
            id=IID_ENDPOINT, status="active", name="minipacs viewer (IHE IID)",
            connectionType=Coding(system=CONNECTION_TYPE, code="ihe-iid"),
            payloadType=[CodeableConcept(text="IHE Invoke Image Display")],
            payloadMimeType=["text/html"],
            address=f"{base_url}/IHEInvokeImageDisplay"),
    }
