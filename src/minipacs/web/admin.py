"""Admin HTTP API: remote DICOM AEs (`/admin/ae`) and the Modality Worklist
(`/admin/worklist`).

Routes translate JSON to one service call and back; validation and storage live in
`ae_registry` and `worklist`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field, field_validator

from minipacs.access.tags import parse_tags
from minipacs.ae_registry import RIGHTS, AERegistry, RemoteAE, parse_rights
from minipacs.emr.orders import Orders
from minipacs.errors import NotFound
from minipacs.web.auth import acting_archive
from minipacs.worklist import (
    DETACHED_STUDY_MANAGEMENT,
    Code,
    ReferencedStudy,
    Worklist,
    WorklistItem,
)

router = APIRouter(prefix="/admin", tags=["admin"])


def get_registry(request: Request) -> AERegistry:
    """The node's AE registry (the one the DIMSE door uses too)."""
    registry: AERegistry = request.app.state.ae_registry
    return registry


RegistryDep = Annotated[AERegistry, Depends(get_registry)]


class AdminBody(BaseModel):
    """Base of the admin JSON bodies: no string may hold a NUL character (no DICOM value
    holds one, PS3.5 §6.1.2, and PostgreSQL cannot store it); the app answers 400."""

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and "\0" in text for text in texts):
            raise ValueError("contains a NUL character, which no DICOM value holds")
        return value


class AEBody(AdminBody):
    """A remote AE as the admin API takes it (the title comes from the URL)."""

    host: str = Field(description="Host name or IP address the AE listens on.")
    port: int = Field(description="Its DICOM port.")
    rights: list[str] = Field(
        default_factory=lambda: list(RIGHTS),
        description=f"What it may ask of us: any of {', '.join(RIGHTS)}.",
    )
    pin_ip: bool = Field(False, description="Accept its calling AE title only from `host`.")
    default_charset: str = Field(
        "", description="Character set assumed for its data without (0008,0005)."
    )
    charset_remap_from: str = Field("", description="Charset term it mislabels data with.")
    charset_remap_to: str = Field("", description="Charset it really means by that term.")
    ascii_responses: bool = Field(
        False, description="Transliterate C-FIND/worklist answers to ASCII for it."
    )
    description: str = ""
    tls: bool = Field(
        False, description="Reach it over TLS (C-MOVE, Storage Commitment reports)."
    )
    store_tags: list[str] = Field(
        default_factory=list,
        description="Access tags given to the studies it stores (docs/security.md).",
    )
    access_tags: list[str] = Field(
        default_factory=list,
        description="Limit its queries and retrieves to studies carrying one of these "
        "access tags (empty: every study).",
    )


@router.get("/ae", summary="List registered remote AEs")
def list_aes(registry: RegistryDep) -> list[dict[str, Any]]:
    return [ae.as_json() for ae in registry.all()]


@router.get("/ae/{ae_title}", summary="One registered remote AE")
def get_ae(ae_title: str, registry: RegistryDep) -> dict[str, Any]:
    ae = registry.get(ae_title)
    if ae is None:
        raise NotFound(f"AE {ae_title!r} is not registered")
    return ae.as_json()


@router.put("/ae/{ae_title}", summary="Register a remote AE or replace its entry")
def put_ae(ae_title: str, body: AEBody, registry: RegistryDep) -> dict[str, Any]:
    stored = registry.put(
        RemoteAE(
            ae_title=ae_title, host=body.host, port=body.port,
            rights=parse_rights(body.rights), pin_ip=body.pin_ip,
            default_charset=body.default_charset,
            charset_remap_from=body.charset_remap_from,
            charset_remap_to=body.charset_remap_to,
            ascii_responses=body.ascii_responses, description=body.description,
            tls=body.tls, store_tags=parse_tags(body.store_tags),
            access_tags=parse_tags(body.access_tags),
        )
    )
    return stored.as_json()


@router.delete("/ae/{ae_title}", status_code=204, summary="Forget a remote AE")
def delete_ae(ae_title: str, registry: RegistryDep) -> Response:
    registry.remove(ae_title)
    return Response(status_code=204)


# ---------------------------------------------------------------------- worklist
def get_worklist(request: Request) -> Worklist:
    """The node's Modality Worklist (the one the DIMSE door uses too)."""
    worklist: Worklist = request.app.state.worklist
    return worklist


WorklistDep = Annotated[Worklist, Depends(get_worklist)]


class CodeBody(AdminBody):
    """A coded entry (PS3.3 Code Sequence Macro), e.g. LOINC 24627-2 "CT Chest"."""

    code_value: str = Field(description="CodeValue (0008,0100), at most 16 characters.")
    coding_scheme_designator: str = Field(
        description="CodingSchemeDesignator (0008,0102): LN, DCM, SCT, 99LOCAL...")
    code_meaning: str = Field("", description="CodeMeaning (0008,0104), at most 64.")


class ReferencedStudyBody(AdminBody):
    """One item of ReferencedStudySequence (0008,1110)."""

    sop_instance_uid: str = Field(description="The referenced study's instance UID.")
    sop_class_uid: str = Field(DETACHED_STUDY_MANAGEMENT,
                               description="Defaults to Detached Study Management.")


class WorklistBody(AdminBody):
    """A scheduled procedure step and its order, in DICOM formats (dates YYYYMMDD,
    times HHMM[SS], names Family^Given)."""

    patient_id: str
    patient_name: str = ""
    issuer_of_patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    accession_number: str = ""
    referring_physician_name: str = ""
    study_instance_uid: str = Field("", description="Generated when empty.")
    requested_procedure_id: str = Field("", description="Defaults to the accession number.")
    requested_procedure_description: str = ""
    modality: str = ""
    scheduled_station_ae_title: str = Field("", description="The modality's AE title.")
    scheduled_start_date: str = ""
    scheduled_start_time: str = ""
    scheduled_performing_physician_name: str = ""
    scheduled_procedure_step_description: str = ""
    referenced_studies: list[ReferencedStudyBody] = Field(
        default_factory=list, description="ReferencedStudySequence items.")
    requested_procedure_codes: list[CodeBody] = Field(
        default_factory=list, description="RequestedProcedureCodeSequence items.")
    scheduled_protocol_codes: list[CodeBody] = Field(
        default_factory=list,
        description="ScheduledProtocolCodeSequence items (in the scheduled step).")


def _item(body: WorklistBody, step_id: str = "") -> WorklistItem:
    fields = body.model_dump(exclude={"referenced_studies", "requested_procedure_codes",
                                      "scheduled_protocol_codes"})
    return WorklistItem(
        scheduled_procedure_step_id=step_id, **fields,
        referenced_studies=tuple(ReferencedStudy(**r.model_dump())
                                 for r in body.referenced_studies),
        requested_procedure_codes=tuple(Code(**c.model_dump())
                                        for c in body.requested_procedure_codes),
        scheduled_protocol_codes=tuple(Code(**c.model_dump())
                                       for c in body.scheduled_protocol_codes),
    )


@router.get("/worklist", summary="List worklist items (scheduled first by date/time)")
def list_worklist(worklist: WorklistDep, include_cancelled: bool = False
                  ) -> list[dict[str, Any]]:
    return [item.as_json() for item in worklist.items(include_cancelled=include_cancelled)]


def _orders(request: Request) -> Orders:
    """Worklist changes are order changes: permitted and audited by the order service."""
    return Orders(acting_archive(request), request.app.state.worklist)


@router.post("/worklist", status_code=201, summary="Schedule a procedure step")
def create_worklist_item(body: WorklistBody, request: Request) -> dict[str, Any]:
    return _orders(request).place(_item(body)).item.as_json()


@router.get("/worklist/{step_id}", summary="One worklist item")
def get_worklist_item(step_id: str, worklist: WorklistDep) -> dict[str, Any]:
    return worklist.get(step_id).as_json()


@router.put("/worklist/{step_id}", summary="Create or update the step with this ID")
def put_worklist_item(step_id: str, body: WorklistBody, request: Request
                      ) -> dict[str, Any]:
    orders = _orders(request)
    try:
        return orders.update(step_id, _item(body, step_id)).item.as_json()
    except NotFound:
        return orders.place(_item(body, step_id)).item.as_json()


@router.delete("/worklist/{step_id}", summary="Cancel a step: modalities no longer see it")
def cancel_worklist_item(step_id: str, request: Request) -> dict[str, Any]:
    return _orders(request).cancel(step_id).item.as_json()


@router.get("/orders/reconciliation",
            summary="Orders whose accession arrived with another patient's images")
def orders_needing_reconciliation(request: Request) -> list[dict[str, Any]]:
    return [{**o.item.as_json(), "version": o.version, "reconciliation": o.reconciliation,
             "performed_study_uid": o.performed_study_uid}
            for o in _orders(request).needing_reconciliation()]
