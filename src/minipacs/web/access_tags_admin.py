"""Access tags over HTTP (docs/security.md, "Access tags"): which studies users and API
tokens limited to tags may see, and the tags a study carries. The same as `minipacs
user|token set-tags` and `minipacs study tags`; each change is audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, Field

from minipacs.web.accounts_admin import ManageUsers, _token_json, _user_json
from minipacs.web.auth import acting_archive, get_accounts
from minipacs.web.dicomweb import check_uid

router = APIRouter(prefix="/admin", tags=["admin: accounts and audit"])


class AccessTagsBody(BaseModel):
    access_tags: list[str] = Field(
        max_length=100, description="Studies carrying one of these tags are all it sees; "
        "an empty list lifts the limit (every study).")


class StudyTagsBody(BaseModel):
    add: list[str] = Field(default_factory=list, max_length=100)
    remove: list[str] = Field(default_factory=list, max_length=100)


@router.put("/users/{username}/access-tags",
            summary="Limit an account to studies carrying one of these access tags")
def set_user_tags(request: Request, principal: ManageUsers, username: str,
                  body: Annotated[AccessTagsBody, Body()]) -> dict[str, Any]:
    return _user_json(get_accounts(request).set_user_access_tags(
        username, body.access_tags, actor=principal.actor))


@router.put("/tokens/{token_id}/access-tags",
            summary="Limit an API token to studies carrying one of these access tags")
def set_token_tags(request: Request, principal: ManageUsers, token_id: int,
                   body: Annotated[AccessTagsBody, Body()]) -> dict[str, Any]:
    return _token_json(get_accounts(request).set_token_access_tags(
        token_id, body.access_tags, actor=principal.actor))


@router.get("/studies/{study}/access-tags", summary="The access tags a study carries",
            responses={404: {"description": "no such study"}})
def study_tags(request: Request, study: str) -> dict[str, Any]:
    uid = check_uid(study, "study")
    return {"study_uid": uid, "access_tags": acting_archive(request).study_access_tags(uid)}


@router.post("/studies/{study}/access-tags", summary="Add and remove a study's access tags",
             responses={404: {"description": "no such study"}})
def change_study_tags(request: Request, study: str,
                      body: Annotated[StudyTagsBody, Body()]) -> dict[str, Any]:
    uid = check_uid(study, "study")
    tags = acting_archive(request).change_study_access_tags(uid, add=body.add,
                                                            remove=body.remove)
    return {"study_uid": uid, "access_tags": tags}
