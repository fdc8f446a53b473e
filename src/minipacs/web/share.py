"""Share links over HTTP: create (`POST /share-links`), list and revoke
(`/admin/share-links`), and exchange a link for a limited session (`POST /auth/share`).
The rules are `access/share.py`'s; who may call what is `route_rules.py`'s."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response
from pydantic import BaseModel, Field

from minipacs.access.share import MAX_HOURS, ShareLinks
from minipacs.dicom.matching import Filter, Match
from minipacs.errors import NotFound
from minipacs.web.auth import (
    SESSION_COOKIE,
    acting_archive,
    authenticate,
    client_address,
    set_session_cookie,
)
from minipacs.web.dicomweb import check_uid

router = APIRouter(tags=["share links"])


def get_share_links(request: Request) -> ShareLinks:
    links: ShareLinks = request.app.state.share_links
    return links


class ShareBody(BaseModel):
    study_uid: str = Field("", max_length=64, description="The study to open, or:")
    patient_id: str = Field("", max_length=64, description="...the patient whose studies "
                            "to open (as they are when the link is used)")
    issuer_of_patient_id: str = Field("", max_length=64)
    expires_hours: int = Field(72, ge=1, le=MAX_HOURS)
    pin: str = Field("", max_length=12, description="4 to 12 digits the recipient must "
                     "also type (sent separately, e.g. by phone)")
    note: str = Field("", max_length=256, description="e.g. 'referral to Chợ Rẫy hospital'")


class ExchangeBody(BaseModel):
    token: str = Field(max_length=128)
    pin: str = Field("", max_length=12)


@router.post("/share-links", status_code=201,
             summary="Create an expiring, read-only link that opens one study or patient",
             responses={404: {"description": "no such study or patient"}})
def create_share_link(request: Request, body: Annotated[ShareBody, Body()]) -> dict[str, Any]:
    archive = acting_archive(request)
    if body.study_uid:
        uid = check_uid(body.study_uid, "study_uid")
        found = archive.find("STUDY", Filter((Match("0020000D", "single", (uid,), "UI"),)))
        if not found.matches:
            raise NotFound(f"study {uid} is not in the archive")
    elif body.patient_id and not archive.study_uids_of_patient(body.patient_id,
                                                               body.issuer_of_patient_id):
        raise NotFound(f"patient {body.patient_id!r} has no studies in the archive")
    token, info = get_share_links(request).create(
        authenticate(request), study_uid=body.study_uid, patient_id=body.patient_id,
        issuer_of_patient_id=body.issuer_of_patient_id, expires_hours=body.expires_hours,
        pin=body.pin, note=body.note)
    base = request.app.state.settings.base_url(request.url.port)
    return {**info.as_json(), "url": f"{base}/viewer/#share={token}"}


@router.get("/admin/share-links", summary="List share links (never the links themselves)")
def list_share_links(request: Request) -> list[dict[str, Any]]:
    return [link.as_json() for link in get_share_links(request).links()]


@router.delete("/admin/share-links/{link_id}", summary="Revoke a share link and its sessions",
               responses={404: {"description": "no such link"}})
def revoke_share_link(request: Request, link_id: int) -> dict[str, Any]:
    return get_share_links(request).revoke(link_id, authenticate(request)).as_json()


@router.post("/auth/share", summary="Exchange a share link (and PIN) for a limited session",
             responses={401: {"description": "unknown, expired or revoked link, wrong PIN"}})
def exchange_share_link(request: Request, response: Response,
                        body: Annotated[ExchangeBody, Body()]) -> dict[str, Any]:
    archive = request.app.state.archive
    result = get_share_links(request).exchange(
        body.token, body.pin, source=client_address(request),
        studies_of_patient=archive.study_uids_of_patient)
    set_session_cookie(request, response, result.token)
    response.headers["Cache-Control"] = "no-store"
    return {"access_token": result.token, "token_type": "bearer",
            "expires_at": result.expires_at.isoformat() + "Z",
            "study_uids": sorted(result.principal.study_uids or ()),
            "cookie": SESSION_COOKIE}
