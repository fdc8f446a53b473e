"""`/admin/patients`: reconciliation of patient records (docs/emr-integration.md
"Reconciliation"): correct demographics, merge two patients, read a patient's history.
The same as `minipacs patient update | merge | history` and HL7 ADT A08/A31/A40; the
core checks the `reconcile` permission and audits each change in its transaction.

The patient is named by PatientID in the path and IssuerOfPatientID in `?issuer=`
(empty: none), as `/admin/restricted-patients` does; a merge names both in its body."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, Field

from minipacs.emr.reconciliation import CORRECTABLE, Reconciliation
from minipacs.web.auth import acting_archive

router = APIRouter(prefix="/admin/patients", tags=["admin: patient reconciliation"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "a bad keyword or value, a merge into itself, no reason"},
    404: {"description": "the patient (or one of the two) is not in the archive"},
}


class UpdateBody(BaseModel):
    changes: dict[str, str] = Field(
        description=f"new values by DICOM keyword: {', '.join(CORRECTABLE)}",
        examples=[{"PatientName": "Nguyễn^Văn An", "PatientBirthDate": "19800101"}])
    reason: str = Field(min_length=1, max_length=512, description="why (kept in history)")


class PatientRef(BaseModel):
    patient_id: str = Field(min_length=1, max_length=64)
    issuer_of_patient_id: str = Field("", max_length=64)


class MergeBody(BaseModel):
    source: PatientRef = Field(description="the wrong record: its studies move, its key "
                               "becomes an alias of the target")
    target: PatientRef = Field(description="the right record, which keeps its values")
    reason: str = Field(min_length=1, max_length=512)


def _answer(done: Reconciliation) -> dict[str, Any]:
    return dataclasses.asdict(done)


@router.patch("/{patient_id}", summary="Correct a patient's demographics",
              responses=_ERRORS)
def update_patient(request: Request, patient_id: str, body: Annotated[UpdateBody, Body()],
                   issuer: Annotated[str, Query(max_length=64)] = "") -> dict[str, Any]:
    return _answer(acting_archive(request).update_patient(
        (patient_id, issuer), body.changes, reason=body.reason))


@router.post("/merge", summary="Merge one patient's studies into another patient",
             responses=_ERRORS)
def merge_patients(request: Request, body: Annotated[MergeBody, Body()]) -> dict[str, Any]:
    return _answer(acting_archive(request).merge_patients(
        (body.source.patient_id, body.source.issuer_of_patient_id),
        (body.target.patient_id, body.target.issuer_of_patient_id), reason=body.reason))


@router.get("/{patient_id}/history", summary="A patient's corrections and merges",
            responses={404: _ERRORS[404]})
def patient_history(request: Request, patient_id: str,
                    issuer: Annotated[str, Query(max_length=64)] = "") -> list[dict[str, Any]]:
    return [{**dataclasses.asdict(c), "at": c.at.isoformat()}
            for c in acting_archive(request).patient_history((patient_id, issuer))]
