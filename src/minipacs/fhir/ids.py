"""Logical ids of the resources minipacs serves (FHIR ids: ``[A-Za-z0-9\\-\\.]{1,64}``).

ImagingStudy: the Study Instance UID. Patient: derived from the patient's key in the
index, (PatientID, IssuerOfPatientID), so it survives an index rebuild and decodes back
to that key without a lookup: letters and digits are kept, any other UTF-8 byte becomes
``-XX`` (its hex), and a ``.`` separates the PatientID from a non-empty issuer.
``BN2024000123`` issued by ``BV-DEMO`` is ``BN2024000123.BV-2DDEMO``. A key whose id would
exceed 64 characters has none (such a patient is still found by search, by identifier).
"""

from __future__ import annotations

import re

from minipacs.dicom.uids import is_safe_uid

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_KEPT = re.compile(r"[A-Za-z0-9]")
_ESCAPE = re.compile(r"-([0-9A-F]{2})")


def _encode(text: str) -> str:
    return "".join(c if _KEPT.fullmatch(c) else "".join(f"-{b:02X}" for b in c.encode())
                   for c in text)


def _decode(text: str) -> str | None:
    if re.search(r"-(?![0-9A-F]{2})", text):
        return None
    raw = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(text):
        raw += text[pos:match.start()].encode()
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += text[pos:].encode()
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


def patient_id_of(patient_id: str, issuer: str) -> str | None:
    """The Patient's logical id, or None when it would not fit 64 characters."""
    logical = _encode(patient_id) + (f".{_encode(issuer)}" if issuer else "")
    return logical if logical and FHIR_ID.fullmatch(logical) else None


def patient_key_of(logical_id: str) -> tuple[str, str] | None:
    """(PatientID, IssuerOfPatientID) of a Patient id, or None when it is not one of ours."""
    if not FHIR_ID.fullmatch(logical_id) or logical_id.count(".") > 1:
        return None
    encoded_id, _, encoded_issuer = logical_id.partition(".")
    patient_id, issuer = _decode(encoded_id), _decode(encoded_issuer)
    if not patient_id or issuer is None or (logical_id.endswith(".") and not issuer):
        return None
    if patient_id_of(patient_id, issuer) != logical_id:
        return None  # not the canonical spelling: not an id we gave out
    return patient_id, issuer


def study_uid_of(logical_id: str) -> str | None:
    """The Study Instance UID an ImagingStudy id names, or None."""
    return logical_id if is_safe_uid(logical_id) else None


def order_id_of(step_id: str) -> str | None:
    """A ServiceRequest's logical id: its order's step ID, spelt as a Patient id is."""
    return patient_id_of(step_id, "")


def step_id_of(logical_id: str) -> str | None:
    """The step ID a ServiceRequest id names, or None."""
    key = patient_key_of(logical_id)
    return key[0] if key is not None and not key[1] else None
