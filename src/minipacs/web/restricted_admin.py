"""`/admin/restricted-patients`: restricted (VIP, staff, sensitive) patients whose studies
need a break-the-glass reason to open (docs/security.md). The same as `minipacs patient
restrict|unrestrict|restricted`; each change is audited by the core."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import BaseModel, Field

from minipacs.errors import NotFound
from minipacs.web.auth import acting_archive

router = APIRouter(prefix="/admin/restricted-patients", tags=["admin: accounts and audit"])


class RestrictBody(BaseModel):
    patient_id: str = Field(min_length=1, max_length=64)
    issuer_of_patient_id: str = Field("", max_length=64)
    reason: str = Field(min_length=1, max_length=256,
                        description="why: VIP, staff member, sensitive case, ...")


@router.get("", summary="List restricted patients")
def list_restricted(request: Request) -> list[dict[str, Any]]:
    return [{"patient_id": r.patient_id, "issuer_of_patient_id": r.issuer,
             "reason": r.reason, "restricted_by": r.restricted_by, "at": str(r.at)}
            for r in acting_archive(request).restricted_patients()]


@router.post("", status_code=201, summary="Restrict a patient (reading needs a reason)")
def restrict_patient(request: Request, body: Annotated[RestrictBody, Body()]
                     ) -> dict[str, Any]:
    created = acting_archive(request).restrict_patient(
        body.patient_id, body.issuer_of_patient_id, body.reason)
    return {"patient_id": body.patient_id, "issuer_of_patient_id": body.issuer_of_patient_id,
            "created": created}


@router.delete("/{patient_id}", status_code=204, summary="Lift a patient's restriction",
               responses={404: {"description": "the patient is not restricted"}})
def unrestrict_patient(request: Request, patient_id: str,
                       issuer: Annotated[str, Query(max_length=64)] = "") -> Response:
    if not acting_archive(request).unrestrict_patient(patient_id, issuer):
        raise NotFound(f"patient {patient_id!r} (issuer {issuer or 'none'}) is not restricted")
    return Response(status_code=204)
