"""The transaction Bundle that creates or updates one study's Patient and ImagingStudy
on the hospital's FHIR server (pure: resources in, Bundle out; `fhir_push.py` sends it).

The resources come from `fhir/resources.py`, the mapping our own `/fhir` serves, with
what only makes sense here changed: the server chooses its own logical ids (ours are
not its), the subject points at the Patient entry of the same Bundle, and the two
Endpoints (DICOMweb, viewer) travel inside the ImagingStudy as contained resources, so
the EMR learns where the images are without our Endpoint ids having to exist there.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from fhir.resources.R4B.bundle import Bundle, BundleEntry, BundleEntryRequest
from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.reference import Reference

from minipacs.emr.fhir_client import Found
from minipacs.fhir.resources import DICOM_UID_SYSTEM


def study_identifier(study_instance_uid: str) -> str:
    """The ImagingStudy's search identifier, `system|value` (urn:dicom:uid, urn:oid:)."""
    return f"{DICOM_UID_SYSTEM}|urn:oid:{study_instance_uid}"


def patient_identifier(patient: Patient) -> str | None:
    """The Patient's first identifier with a system (the hospital ID comes first), as
    `system|value`; None when it has none (it is then not pushed, only referenced)."""
    for identifier in patient.identifier or []:
        if identifier.system and identifier.value:
            return f"{identifier.system}|{identifier.value}"
    return None


def _if_none_exist(identifier: str) -> str:
    return "identifier=" + quote(identifier, safe=":/|.")


def _version_tag(found: Found) -> str | None:
    # ETag form of the version (http.html §3.1.0.5.2): W/"<versionId>".
    return f'W/"{found.version}"' if found.version else None


def merged_patient(ours: Patient, theirs: Found | None) -> dict[str, Any]:
    """The Patient to send. New: ours without our id. Known to the server: its copy
    with our name, gender and birth date, and any of our identifiers it lacks; what the
    EMR added (addresses, contacts, other identifiers) is kept."""
    mine = ours.model_dump(mode="json", exclude_none=True)
    mine.pop("id", None)
    if theirs is None:
        return mine
    merged = dict(theirs.resource)
    merged.pop("meta", None)
    merged.pop("text", None)  # their narrative would no longer match
    for key in ("name", "gender", "birthDate"):
        if key in mine:
            merged[key] = mine[key]
    known = {(i.get("system"), i.get("value")) for i in merged.get("identifier") or []}
    merged["identifier"] = [*(merged.get("identifier") or []),
                            *(i for i in mine.get("identifier") or []
                              if (i.get("system"), i.get("value")) not in known)]
    merged["id"] = theirs.id
    return merged


def push_bundle(patient: Patient | None, study: ImagingStudy, endpoints: dict[str, Endpoint],
                found_patient: Found | None, found_study: Found | None) -> Bundle:
    """Patient (when it has a system identifier) + ImagingStudy, each a conditional
    create when the server has none, else an update of the one it has under If-Match."""
    entries: list[BundleEntry] = []
    subject: Reference | None = study.subject
    identifier = patient_identifier(patient) if patient is not None else None
    if patient is not None and identifier is not None:
        body = merged_patient(patient, found_patient)
        if found_patient is None:
            full_url = f"urn:uuid:{uuid.uuid4()}"
            request = BundleEntryRequest(method="POST", url="Patient",
                                         ifNoneExist=_if_none_exist(identifier))
        else:
            full_url = f"Patient/{found_patient.id}"
            request = BundleEntryRequest(method="PUT", url=full_url,
                                         ifMatch=_version_tag(found_patient))
        entries.append(BundleEntry(fullUrl=full_url if found_patient is None else None,
                                   resource=Patient(**body), request=request))
        subject = Reference(reference=full_url,
                            display=study.subject.display if study.subject else None)
    contained = [endpoints[key] for key in sorted(endpoints)]
    body = study.model_dump(mode="json", exclude_none=True)
    body.pop("meta", None)
    body["subject"] = subject.model_dump(mode="json", exclude_none=True) if subject else None
    body["contained"] = [e.model_dump(mode="json", exclude_none=True) for e in contained]
    body["endpoint"] = [{"reference": f"#{e.id}"} for e in contained]
    uid = str(study.id)
    if found_study is None:
        body.pop("id", None)
        request = BundleEntryRequest(method="POST", url="ImagingStudy",
                                     ifNoneExist=_if_none_exist(study_identifier(uid)))
    else:
        body["id"] = found_study.id
        request = BundleEntryRequest(method="PUT", url=f"ImagingStudy/{found_study.id}",
                                     ifMatch=_version_tag(found_study))
    entries.append(BundleEntry(resource=ImagingStudy(**body), request=request))
    return Bundle(type="transaction", entry=entries)


def locations(response: dict[str, Any]) -> list[str]:
    """`Type/id` of each entry of a transaction-response (its location without
    `_history`, else its resource's type and id)."""
    out = []
    for entry in response.get("entry") or []:
        location = str((entry.get("response") or {}).get("location") or "")
        if location:
            parts = location.split("/_history")[0].rstrip("/").split("/")
            out.append("/".join(parts[-2:]))
        elif isinstance(entry.get("resource"), dict):
            resource = entry["resource"]
            out.append(f"{resource.get('resourceType')}/{resource.get('id')}")
        else:
            out.append("")
    return out
