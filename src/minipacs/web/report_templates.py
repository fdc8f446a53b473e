"""Report templates over HTTP (reports/templates.py): what the viewer's report panel offers.

GET /report-templates lists them (action `report`); with `modality` and `body_part` (the
study's Modality and BodyPartExamined) the answer names the one that fits as `suggested`.
POST /report-templates, PUT and DELETE /report-templates/{template_id}: administrators
only (`manage-aes`), audited by the service.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from minipacs.errors import NotFound
from minipacs.reports.templates import (
    ReportTemplate,
    ReportTemplates,
    TemplateDraft,
    best_template,
    check_code,
)
from minipacs.web.auth import acting_archive

router = APIRouter(prefix="/report-templates", tags=["Reading"])


class TemplateBody(BaseModel):
    name: str = Field(description="What the picker shows, e.g. 'CT sọ não'.")
    modalities: list[str] = Field(default_factory=list,
                                  description="Modality values it is for (empty: any).")
    body_parts: list[str] = Field(default_factory=list,
                                  description="BodyPartExamined values (empty: any).")
    findings: str = Field(default="", description="Skeleton of the findings.")
    conclusion: str = Field(default="", description="Skeleton of the conclusion.")

    def draft(self) -> TemplateDraft:
        return TemplateDraft(self.name, tuple(self.modalities), tuple(self.body_parts),
                             self.findings, self.conclusion)


def _templates(request: Request) -> ReportTemplates:
    return ReportTemplates(acting_archive(request))


def _json(template: ReportTemplate) -> dict[str, Any]:
    return {"id": template.id, "name": template.name,
            "modalities": list(template.modalities), "body_parts": list(template.body_parts),
            "findings": template.findings, "conclusion": template.conclusion,
            "updated_by": template.updated_by,
            "updated_at": template.updated_at.isoformat() + "Z"}


def _template_id(template_id: str) -> int:
    if not template_id.isdigit() or len(template_id) > 12:
        raise NotFound(f"report template {template_id[:40]!r} does not exist (ids are numbers)")
    return int(template_id)


@router.get("", summary="Report templates, the one fitting a study named as suggested")
def list_report_templates(
    request: Request,
    modality: Annotated[str, Query(max_length=16, description=(
        "The study's Modality (CS), e.g. CT: the fitting template is `suggested`"))] = "",
    body_part: Annotated[str, Query(max_length=16, description=(
        "The study's BodyPartExamined (CS), e.g. CHEST"))] = "",
) -> JSONResponse:
    for name, value in (("modality", modality), ("body_part", body_part)):
        if value:
            check_code(name, value.upper())
    templates = _templates(request).list()
    best = best_template(templates, modality, body_part) if modality else None
    return JSONResponse({"templates": [_json(t) for t in templates],
                         "suggested": best.id if best else None})


@router.post("", summary="Add a report template (administrators)")
def create_report_template(request: Request, body: TemplateBody) -> JSONResponse:
    return JSONResponse(_json(_templates(request).create(body.draft())), status_code=201)


@router.put("/{template_id}", summary="Change a report template (administrators)")
def update_report_template(request: Request, template_id: str, body: TemplateBody
                           ) -> JSONResponse:
    return JSONResponse(_json(_templates(request).update(_template_id(template_id),
                                                         body.draft())))


@router.delete("/{template_id}", summary="Remove a report template (administrators)")
def delete_report_template(request: Request, template_id: str) -> Response:
    _templates(request).delete(_template_id(template_id))
    return Response(status_code=204)
