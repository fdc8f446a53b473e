"""Insurance-claim rows for the HIS (`/claims`): JSON, or the XML3/XML4 fragment of
QĐ 130/QĐ-BYT. The routes translate; `reports/claims.py` decides (permission `view` on
the study, audit of each read)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from minipacs.reports.claims import Claims, StudyClaim, claims_xml
from minipacs.web.fhir_reports import reports_of

router = APIRouter(tags=["insurance claims"])
Format = Literal["json", "xml3", "xml4"]
_XML = "application/xml; charset=utf-8"
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "application/xml": {}}},
    404: {"description": "no such study (or accession number)"},
    409: {"description": "the study has no signed report yet"},
}
MaLk = Annotated[str, Query(max_length=100, description="The HIS's claim key (MA_LK), "
                            "copied into the rows; empty by default")]
FormatQuery = Annotated[Format | None, Query(
    alias="format", description="json (default), xml3 or xml4; without it, "
    "Accept: application/xml gives xml4")]


def _claims(request: Request) -> Claims:
    settings = request.app.state.settings
    return Claims(reports_of(request), settings.claim_machine_codes, settings.claim_timezone)


def _wanted(request: Request, fmt: Format | None) -> Format:
    if fmt is not None:
        return fmt
    accept = request.headers.get("accept", "")
    return "xml4" if "xml" in accept and "json" not in accept else "json"


def _answer(claims: list[StudyClaim], fmt: Format, single: bool) -> Response:
    if fmt == "json":
        body = claims[0].as_json() if single else {"studies": [c.as_json() for c in claims]}
        return JSONResponse(body)
    return Response(claims_xml(claims, fmt), media_type=_XML)


@router.get("/claims/studies/{study}", responses=_RESPONSES,
            summary="Insurance-claim rows (XML3/XML4, QĐ 130/QĐ-BYT) of a study")
def study_claims(request: Request, study: str, ma_lk: MaLk = "",
                 fmt: FormatQuery = None) -> Response:
    claim = _claims(request).for_study(study, ma_lk=ma_lk)
    return _answer([claim], _wanted(request, fmt), single=True)


@router.get("/claims", responses=_RESPONSES,
            summary="Insurance-claim rows of the studies with an accession number")
def accession_claims(
    request: Request,
    accession_number: Annotated[str, Query(alias="AccessionNumber", max_length=64)] = "",
    ma_lk: MaLk = "", fmt: FormatQuery = None,
) -> Response:
    claims = _claims(request).for_accession(accession_number, ma_lk=ma_lk)
    return _answer(claims, _wanted(request, fmt), single=False)
