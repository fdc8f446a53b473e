"""FHIR R4 ServiceRequest ⇄ order (a Modality Worklist item), pure code.

Accepted (docs/emr-integration.md, "Orders", has the table):

- ``subject``: ``Patient/<id>`` (our Patient ids, `ids.py`), a ``urn:uuid:`` of a Patient
  in the same transaction Bundle, or a logical reference by ``identifier`` of any
  configured system (hospital ID, CCCD, BHYT: `patient_identity.py`). Required.
- ``identifier`` with type ACSN (HL7 v2-0203): the accession number. Required. Type PLAC:
  the placer's order number. System ``urn:dicom:uid`` (``urn:oid:``): the Study Instance
  UID the modality is to use (generated when absent).
- ``code``: the requested procedure (RequestedProcedureCodeSequence, its text or first
  display the description); a DICOM ``DCM`` coding in ``orderDetail`` or ``code``: the
  modality (default: any).
- ``performer``: a logical reference with identifier system ``urn:dicom:ae``: the
  scheduled station AE title (default: any station).
- ``occurrenceDateTime`` or ``occurrencePeriod.start``: the scheduled date and time, as
  written (wall clock); default: the day the order is placed, no time.
- ``requester.display``: the referring physician.
- ``status``: draft/active → SCHEDULED; revoked, entered-in-error → CANCELLED;
  completed → COMPLETED. ``on-hold`` is how a DISCONTINUED step is shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

from fhir.resources.R4B.annotation import Annotation
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.meta import Meta
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.servicerequest import ServiceRequest

from minipacs.emr.orders import Order
from minipacs.errors import InvalidRequest
from minipacs.fhir.ids import order_id_of, patient_id_of, patient_key_of
from minipacs.fhir.resources import (
    CODING_SCHEMES,
    DCM,
    DICOM_UID_SYSTEM,
    V2_0203,
    fhir_datetime,
    person_name,
)
from minipacs.patient_identity import IdentitySystems
from minipacs.worklist import (
    CANCELLED,
    COMPLETED,
    DISCONTINUED,
    IN_PROGRESS,
    SCHEDULED,
    Code,
    OtherPatientID,
    WorklistItem,
)

AE_SYSTEM = "urn:dicom:ae"
# Order state → ServiceRequest.status (FHIR R4 request-status) and back.
FHIR_STATUS = {SCHEDULED: "active", IN_PROGRESS: "active", COMPLETED: "completed",
               DISCONTINUED: "on-hold", CANCELLED: "revoked"}
ORDER_STATUS = {"draft": SCHEDULED, "active": SCHEDULED, "completed": COMPLETED,
                "revoked": CANCELLED, "entered-in-error": CANCELLED,
                "on-hold": DISCONTINUED}
# name → (type, documentation): what the CapabilityStatement lists for ServiceRequest.
SERVICE_REQUEST_PARAMS: dict[str, tuple[str, str]] = {
    "_id": ("token", "the ServiceRequest id"),
    "identifier": ("token", "the accession number (ACSN), or urn:dicom:uid|urn:oid:<UID>"),
    "patient": ("reference", "Patient/<id>"),
    "subject": ("reference", "Patient/<id>"),
    "patient.identifier": ("token", "system|value of the hospital ID, CCCD or BHYT; a "
                                    "value alone is the hospital ID"),
    "subject:Patient.identifier": ("token", "the same as patient.identifier"),
    "status": ("token", "active, completed, revoked or on-hold; comma-separated for any"),
}
_SCHEMES = {uri: designator for designator, uri in CODING_SCHEMES.items()}
_DATETIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2}))?)?")
_GENDER = {"male": "M", "female": "F", "other": "O"}


@dataclass(frozen=True)
class PatientFacts:
    """Who an order is for, as the DICOM worklist item names them."""

    patient_id: str
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    other_patient_ids: tuple[OtherPatientID, ...] = ()


class PatientDirectory(Protocol):
    """Finds who an order's subject is (the door asks the order service)."""

    def by_identifier(self, system: str, value: str) -> PatientFacts:
        """A logical reference (identifier system URI, value); raises `InvalidRequest`
        for a system that is not configured."""

    def by_key(self, patient_id: str, issuer: str) -> PatientFacts:
        """A Patient/<id> reference's key, with what the index knows of the patient."""


@dataclass(frozen=True)
class OrderDraft:
    item: WorklistItem
    placer_order_number: str


def _codings(concept: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list((concept or {}).get("coding") or [])


def _type_code(identifier: dict[str, Any]) -> str:
    codings = _codings(identifier.get("type"))
    return next((str(c.get("code", "")) for c in codings
                 if c.get("system") in (V2_0203, None)), "")


def dicom_name(name: dict[str, Any]) -> str:
    """A FHIR HumanName → DICOM PN ``Family^Given Middle``."""
    family = str(name.get("family") or "")
    given = " ".join(str(g) for g in name.get("given") or [])
    if not family and not given:
        return str(name.get("text") or "")
    return f"{family}^{given}" if given else family


def patient_facts(resource: dict[str, Any], systems: IdentitySystems) -> PatientFacts:
    """A Patient resource (in a transaction Bundle) → who the order is for: the hospital
    identifier as PatientID (its assigner's identifier as issuer), national identifiers
    as other patient IDs; without a hospital identifier, the first national one is the
    PatientID (issuer: its DICOM issuer, e.g. CCCD)."""
    hospital: tuple[str, str] | None = None
    others: list[OtherPatientID] = []
    for ident in resource.get("identifier") or []:
        value = str(ident.get("value") or "")
        system = systems.named_by(str(ident.get("system") or ""))
        if not value or system is None:
            continue
        if system is systems.hospital:
            assigner = ((ident.get("assigner") or {}).get("identifier") or {})
            hospital = hospital or (value, str(assigner.get("value") or ""))
        else:
            others.append(OtherPatientID(value, system.dicom_issuer))
    if hospital is None and not others:
        raise InvalidRequest("Patient has no identifier of a known system (hospital ID, "
                             "CCCD or BHYT; see /fhir/metadata and docs/emr-integration.md)")
    patient_id, issuer = hospital or (others[0].patient_id,
                                      others[0].issuer_of_patient_id)
    names = resource.get("name") or []
    birth = str(resource.get("birthDate") or "").replace("-", "")
    return PatientFacts(patient_id, issuer, dicom_name(names[0]) if names else "",
                        birth if len(birth) == 8 else "",
                        _GENDER.get(str(resource.get("gender") or ""), ""), tuple(others))


def _subject(resource: dict[str, Any], in_bundle: dict[str, PatientFacts],
             directory: PatientDirectory) -> PatientFacts:
    subject = resource.get("subject") or {}
    reference = str(subject.get("reference") or "")
    if reference.startswith("urn:uuid:"):
        if reference not in in_bundle:
            raise InvalidRequest(f"subject {reference!r} names no Patient entry of this "
                                 "transaction Bundle")
        return in_bundle[reference]
    if reference:
        key = patient_key_of(reference.rsplit("Patient/", 1)[-1]) \
            if "Patient/" in reference else None
        if key is None:
            raise InvalidRequest(f"subject {reference[:80]!r} is not a Patient of this "
                                 "server (Patient/<id>); or reference the patient by "
                                 "identifier")
        return directory.by_key(*key)
    ident = subject.get("identifier") or {}
    if ident.get("value"):
        return directory.by_identifier(str(ident.get("system") or ""), str(ident["value"]))
    raise InvalidRequest("ServiceRequest has no patient: subject needs a reference "
                         "(Patient/<id>, urn:uuid: in a transaction) or an identifier")


def _when(resource: dict[str, Any], today: date) -> tuple[str, str]:
    raw = str(resource.get("occurrenceDateTime")
              or (resource.get("occurrencePeriod") or {}).get("start") or "")
    if not raw:
        return today.strftime("%Y%m%d"), ""
    found = _DATETIME.match(raw)
    if found is None:
        raise InvalidRequest(f"occurrence {raw[:40]!r}: expected a dateTime with a day "
                             "(YYYY-MM-DD[Thh:mm[:ss]])")
    year, month, day, hh, mm, ss = found.groups()
    return f"{year}{month}{day}", f"{hh}{mm}{ss or '00'}" if hh else ""


def _modality(resource: dict[str, Any]) -> str:
    concepts = [*(resource.get("orderDetail") or []), resource.get("code")]
    return next((str(c.get("code")) for concept in concepts for c in _codings(concept)
                 if c.get("system") == DCM and c.get("code")), "")


def _procedure(code: dict[str, Any] | None) -> tuple[tuple[Code, ...], str]:
    codes = tuple(
        Code(str(c.get("code")), _SCHEMES.get(str(c.get("system") or ""), "99LOCAL"),
             str(c.get("display") or "")[:64])
        for c in _codings(code) if c.get("code") and c.get("system") != DCM)
    text = str((code or {}).get("text") or next((c.code_meaning for c in codes
                                                 if c.code_meaning), ""))
    return codes, text[:64]


def _station(resource: dict[str, Any]) -> str:
    for performer in resource.get("performer") or []:
        ident = performer.get("identifier") or {}
        if ident.get("system") == AE_SYSTEM and ident.get("value"):
            return str(ident["value"])
    return ""


def order_draft(resource: dict[str, Any], *, step_id: str = "", today: date,
                in_bundle: dict[str, PatientFacts] | None = None,
                directory: PatientDirectory) -> OrderDraft:
    """A ServiceRequest (JSON, already validated by the R4B model) → the order's
    worklist item. Raises `InvalidRequest` naming the missing patient or accession."""
    if resource.get("resourceType") != "ServiceRequest":
        raise InvalidRequest(f"expected a ServiceRequest, got "
                             f"{str(resource.get('resourceType'))[:40]!r}")
    accession = placer = study_uid = ""
    for ident in resource.get("identifier") or []:
        kind, value = _type_code(ident), str(ident.get("value") or "")
        if kind == "ACSN":
            accession = accession or value
        elif kind == "PLAC":
            placer = placer or value
        elif ident.get("system") == DICOM_UID_SYSTEM:
            study_uid = value.removeprefix("urn:oid:")
    if not accession:
        raise InvalidRequest("ServiceRequest has no accession number: add an identifier "
                             f"with type {{system {V2_0203}, code ACSN}}")
    patient = _subject(resource, in_bundle or {}, directory)
    status = ORDER_STATUS.get(str(resource.get("status") or "active"))
    if status is None:
        raise InvalidRequest(f"ServiceRequest.status {resource.get('status')!r}: expected "
                             f"one of {', '.join(ORDER_STATUS)}")
    codes, description = _procedure(resource.get("code"))
    start_date, start_time = _when(resource, today)
    requester = str((resource.get("requester") or {}).get("display") or "")
    return OrderDraft(WorklistItem(
        patient_id=patient.patient_id, issuer_of_patient_id=patient.issuer_of_patient_id,
        patient_name=patient.patient_name, patient_birth_date=patient.patient_birth_date,
        patient_sex=patient.patient_sex, other_patient_ids=patient.other_patient_ids,
        scheduled_procedure_step_id=step_id, status=status, accession_number=accession,
        study_instance_uid=study_uid, referring_physician_name=requester[:64],
        requested_procedure_description=description, requested_procedure_codes=codes,
        modality=_modality(resource), scheduled_station_ae_title=_station(resource),
        scheduled_start_date=start_date, scheduled_start_time=start_time,
        scheduled_procedure_step_description=description,
    ), placer)


def service_request_resource(order: Order, *, timezone: str) -> ServiceRequest:
    """An order as a ServiceRequest (id: `ids.order_id_of` its step ID)."""
    item = order.item
    identifiers = [Identifier(type=CodeableConcept(coding=[Coding(system=V2_0203,
                                                                  code="ACSN")]),
                              value=item.accession_number)] if item.accession_number else []
    if order.placer_order_number:
        identifiers.append(Identifier(
            type=CodeableConcept(coding=[Coding(system=V2_0203, code="PLAC")]),
            value=order.placer_order_number))
    identifiers.append(Identifier(system=DICOM_UID_SYSTEM,
                                  value=f"urn:oid:{item.study_instance_uid}"))
    codes = [Coding(system=CODING_SCHEMES.get(c.coding_scheme_designator.upper()),
                    code=c.code_value, display=c.code_meaning or None)
             for c in item.requested_procedure_codes]
    logical = patient_id_of(item.patient_id, item.issuer_of_patient_id)
    name = person_name(item.patient_name)
    subject = Reference(reference=f"Patient/{logical}" if logical else None,
                        identifier=None if logical else Identifier(value=item.patient_id),
                        display=name.text if name else None)
    notes = [Annotation(text=f"performed as ImagingStudy/{order.performed_study_uid}")
             ] if order.performed_study_uid else []
    if order.reconciliation:
        notes.append(Annotation(text=f"needs reconciliation: {order.reconciliation}"))
    updated = order.updated_at
    return ServiceRequest(
        id=order_id_of(order.step_id),
        meta=Meta(versionId=str(order.version),
                  lastUpdated=updated.replace(tzinfo=UTC) if updated else None),
        identifier=identifiers,
        status=FHIR_STATUS.get(item.status, "unknown"),
        intent="order",
        code=CodeableConcept(coding=codes or None,
                             text=item.requested_procedure_description or None)
        if codes or item.requested_procedure_description else None,
        orderDetail=[CodeableConcept(coding=[Coding(system=DCM, code=item.modality)])]
        if item.modality else None,
        subject=subject,
        occurrenceDateTime=fhir_datetime(item.scheduled_start_date,
                                         item.scheduled_start_time, timezone),
        requester=Reference(display=item.referring_physician_name)
        if item.referring_physician_name else None,
        performer=[Reference(identifier=Identifier(system=AE_SYSTEM,
                                                   value=item.scheduled_station_ae_title),
                             display=item.scheduled_station_ae_title)]
        if item.scheduled_station_ae_title else None,
        note=notes or None,
    )


def today_in(timezone: str) -> date:
    """Today's date at the configured UTC offset (±HH:MM)."""
    try:
        zone = datetime.fromisoformat(f"2000-01-01T00:00:00{timezone}").tzinfo
    except ValueError:
        zone = None
    return datetime.now(zone).date() if zone else date.today()
