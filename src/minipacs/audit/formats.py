"""The audit trail in the formats other systems read: CSV for people and spreadsheets,
DICOM audit messages (PS3.15 A.5, the XML an IHE ATNA repository takes over syslog) and
FHIR R4 AuditEvent resources (IHE Basic Audit Log Patterns), built with `fhir.resources`.

Event codes come from pydicom's DCM code dictionary (PS3.16 CID 400-series), never
typed here.
"""

from __future__ import annotations

import csv
import functools
import io
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fhir.resources.R4B.auditevent import AuditEvent

from minipacs.audit.chain import AuditEntry
from minipacs.config import Settings

if TYPE_CHECKING:
    from pydicom.sr.coding import Code

CSV_COLUMNS = ("seq", "at", "action", "actor", "role", "source", "patient_id",
               "study_instance_uid", "outcome", "detail", "hash")

# What each of our actions is, as a DICOM audit event: (EventID, EventTypeCode or None,
# EventActionCode C/R/U/D/E per PS3.15 A.5.1). Built on first use: pydicom's code
# dictionary costs ~0.3 s of CPU to import, at every start of every node and CLI command.
@functools.cache
def _events() -> tuple[dict[str, tuple[Code, Code | None, str]], tuple[Code, Code | None, str],
                       tuple[Code, Code | None, str]]:
    from pydicom.sr.codedict import codes

    dcm = codes.DCM
    events: dict[str, tuple[Code, Code | None, str]] = {
        "query": (dcm.Query, None, "E"),
        "view": (dcm.DICOMInstancesAccessed, None, "R"),
        "download": (dcm.Export, None, "R"),
        "export": (dcm.Export, None, "R"),
        "export-deidentified": (dcm.Export, None, "R"),
        "store": (dcm.DICOMInstancesTransferred, None, "C"),
        "replace": (dcm.DICOMInstancesTransferred, None, "U"),
        "reindex": (dcm.Import, None, "C"),
        "restore": (dcm.Import, None, "C"),
        "delete": (dcm.DICOMStudyDeleted, None, "D"),
        "forget": (dcm.DICOMStudyDeleted, None, "D"),
        "login": (dcm.UserAuthentication, dcm.Login, "E"),
        "logout": (dcm.UserAuthentication, dcm.Logout, "E"),
        "read-audit": (dcm.AuditLogUsed, None, "R"),
        "security-alert": (dcm.SecurityAlert, None, "E"),
        "alert-acknowledge": (dcm.SecurityAlert, None, "U"),
        "share-create": (dcm.SecurityAlert, dcm.UserSecurityAttributesChanged, "C"),
        "share-use": (dcm.UserAuthentication, dcm.Login, "E"),
        "share-revoke": (dcm.SecurityAlert, dcm.UserSecurityAttributesChanged, "D"),
        # Orders (emr/orders.py): DCM 110109 Order Record (PS3.15 A.5.3.10).
        "order-create": (dcm.OrderRecord, None, "C"),
        "order-update": (dcm.OrderRecord, None, "U"),
        "order-cancel": (dcm.OrderRecord, None, "D"),
        "order-status": (dcm.OrderRecord, None, "U"),
        "order-mismatch": (dcm.OrderRecord, None, "E"),
        "order-read": (dcm.OrderRecord, None, "R"),
    }
    account_change = (dcm.SecurityAlert, dcm.UserSecurityAttributesChanged, "U")
    return events, account_change, (dcm.ApplicationActivity, None, "E")


def _study_uid_code() -> Code:
    from pydicom.sr.codedict import codes

    return codes.DCM.StudyInstanceUID  # type: ignore[no-any-return]


# EventOutcomeIndicator (PS3.15 A.5.1): 0 success, 4 minor failure, 8 serious failure.
_OUTCOME = {"success": "0", "failure": "4", "refused": "4", "alert": "8"}


def audit_source_id(settings: Settings) -> str:
    """AuditSourceID: which minipacs node wrote the event (AE title and host)."""
    return f"minipacs:{settings.ae_title}@{socket.gethostname()}"


def event_codes(action: str) -> tuple[Code, Code | None, str]:
    events, account_change, other = _events()
    return events.get(action, account_change if action.startswith(("user-", "token-",
                                                                     "password-"))
                      else other)


def to_csv(entries: Iterable[AuditEntry]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for e in entries:
        row = e.as_json()
        writer.writerow([row[c] for c in CSV_COLUMNS])
    return out.getvalue()


def _code(parent: ET.Element, tag: str, code: Code, **attrs: str) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code.value,
                                       "codeSystemName": code.scheme_designator,
                                       "originalText": code.meaning, **attrs})


def dicom_audit_message(e: AuditEntry, audit_source_id: str) -> str:
    """One event as a DICOM audit message (PS3.15 A.5, schema in A.5.1)."""
    event_id, event_type, action = event_codes(e.action)
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": action, "EventDateTime": e.at.isoformat() + "Z",
        "EventOutcomeIndicator": _OUTCOME.get(e.outcome, "4")})
    _code(ident, "EventID", event_id)
    if event_type is not None:
        _code(ident, "EventTypeCode", event_type)
    if e.detail:
        ET.SubElement(ident, "EventOutcomeDescription").text = e.detail
    participant = {"UserID": e.actor or "unknown", "UserIsRequestor": "true"}
    if e.source:
        participant |= {"NetworkAccessPointID": e.source,
                        "NetworkAccessPointTypeCode": "2"}  # 2: IP address
    active = ET.SubElement(root, "ActiveParticipant", participant)
    if e.role:
        ET.SubElement(active, "RoleIDCode", {"csd-code": e.role, "codeSystemName":
                                             "minipacs-roles", "originalText": e.role})
    ET.SubElement(root, "AuditSourceIdentification", {"AuditSourceID": audit_source_id})
    if e.patient_id:
        patient = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": e.patient_id, "ParticipantObjectTypeCode": "1",
            "ParticipantObjectTypeCodeRole": "1"})
        ET.SubElement(patient, "ParticipantObjectIDTypeCode", {
            "csd-code": "2", "codeSystemName": "RFC-3881", "originalText": "Patient Number"})
    if e.study_instance_uid:
        study = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": e.study_instance_uid, "ParticipantObjectTypeCode": "2",
            "ParticipantObjectTypeCodeRole": "3"})
        _code(study, "ParticipantObjectIDTypeCode", _study_uid_code())
    return ET.tostring(root, encoding="unicode")


def fhir_audit_event(e: AuditEntry, audit_source_id: str) -> dict[str, Any]:
    """One event as a FHIR R4 AuditEvent (IHE BALP), validated by its model."""
    event_id, event_type, action = event_codes(e.action)

    def coding(code: Code) -> dict[str, str]:
        return {"system": "http://dicom.nema.org/resources/ontology/DCM",
                "code": code.value, "display": code.meaning}

    agent: dict[str, Any] = {"who": {"display": e.actor or "unknown"}, "requestor": True,
                             "altId": e.actor or "unknown"}
    if e.source:
        agent["network"] = {"address": e.source, "type": "2"}
    if e.role:
        agent["role"] = [{"text": e.role}]
    entities: list[dict[str, Any]] = []
    if e.patient_id:
        entities.append({"what": {"identifier": {"value": e.patient_id}},
                         "type": {"system": "http://terminology.hl7.org/CodeSystem/"
                                  "audit-entity-type", "code": "1", "display": "Person"},
                         "role": {"system": "http://terminology.hl7.org/CodeSystem/"
                                  "object-role", "code": "1", "display": "Patient"}})
    if e.study_instance_uid:
        entities.append({"what": {"identifier": {"system": "urn:dicom:uid",
                                                 "value": f"urn:oid:{e.study_instance_uid}"}},
                         "type": {"system": "http://terminology.hl7.org/CodeSystem/"
                                  "audit-entity-type", "code": "2",
                                  "display": "System Object"}})
    resource = {
        "resourceType": "AuditEvent", "id": f"minipacs-{e.seq}",
        "type": coding(event_id), "action": action,
        "recorded": e.at.isoformat() + "Z", "outcome": _OUTCOME.get(e.outcome, "4"),
        "agent": [agent], "source": {"observer": {"display": audit_source_id}},
    }
    if event_type is not None:
        resource["subtype"] = [coding(event_type)]
    if e.detail:
        resource["outcomeDesc"] = e.detail
    if entities:
        resource["entity"] = entities
    return AuditEvent.model_validate(resource).model_dump(mode="json", exclude_none=True)
