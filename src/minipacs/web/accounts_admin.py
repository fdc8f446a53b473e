"""Admin HTTP API for accounts and tokens (`/admin/users`, `/admin/tokens`) and the audit
trail (`/admin/audit`). Each route is one `Accounts` or audit call; the same operations
are `minipacs user|token|audit ...` on the command line."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from minipacs.access.accounts import TokenInfo, UserInfo
from minipacs.access.principal import Principal
from minipacs.access.roles import Role
from minipacs.audit.alerts import AlertMonitor
from minipacs.audit.formats import (
    audit_source_id,
    dicom_audit_message,
    fhir_audit_event,
    to_csv,
)
from minipacs.errors import NotFound
from minipacs.web.auth import acting_archive, authenticate, client_address, get_accounts

router = APIRouter(prefix="/admin", tags=["admin: accounts and audit"])

# Who may call these is web/route_rules.py's (manage-users, read-audit); the routes take
# the principal to name it as the actor of what they change.
ManageUsers = Annotated[Principal, Depends(authenticate)]
ReadAudit = Annotated[Principal, Depends(authenticate)]


def _user_json(u: UserInfo) -> dict[str, Any]:
    return {"username": u.username, "role": u.role.value, "full_name": u.full_name,
            "disabled": u.disabled, "disabled_reason": u.disabled_reason,
            "must_change_password": u.must_change_password,
            "locked_until": u.locked_until.isoformat() if u.locked_until else None,
            "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None,
            "access_tags": list(u.access_tags),
            "practising_certificate": u.practising_certificate}


def _token_json(t: TokenInfo) -> dict[str, Any]:
    return {"id": t.id, "kind": t.kind, "name": t.name, "role": t.role.value,
            "created_at": t.created_at.isoformat() if t.created_at else None,
            "expires_at": t.expires_at.isoformat() if t.expires_at else None,
            "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
            "revoked": t.revoked, "access_tags": list(t.access_tags)}


class UserBody(BaseModel):
    username: str = Field(max_length=64)
    role: Role
    full_name: str = Field("", max_length=128)
    password: str | None = Field(
        None, max_length=256,
        description="Omit to have a one-time password generated (returned once).")
    access_tags: list[str] = Field(
        default_factory=list, max_length=100,
        description="Limit the account to studies carrying one of these access tags "
        "(empty: every study; docs/security.md).")
    practising_certificate: str = Field(
        "", max_length=64, description="Practising-certificate code (mã chứng chỉ hành "
        "nghề): the reading doctor of insurance claims (docs/emr-integration.md).")


class CertificateBody(BaseModel):
    practising_certificate: str = Field(
        max_length=64, description="The code, e.g. 003539/HCM-CCHN; \"\" clears it.")


class TokenBody(BaseModel):
    name: str = Field(max_length=64)
    role: Role
    expires_days: int | None = Field(None, ge=1, le=3650)
    access_tags: list[str] = Field(
        default_factory=list, max_length=100,
        description="Limit the token to studies carrying one of these access tags "
        "(empty: every study).")


@router.get("/users", summary="List accounts")
def list_users(request: Request, principal: ManageUsers) -> list[dict[str, Any]]:
    return [_user_json(u) for u in get_accounts(request).users()]


@router.post("/users", status_code=201, summary="Create an account",
             responses={409: {"description": "the user exists"}})
def add_user(request: Request, principal: ManageUsers, body: Annotated[UserBody, Body()]
             ) -> dict[str, Any]:
    user, one_time = get_accounts(request).add_user(
        body.username, body.role, password=body.password, full_name=body.full_name,
        actor=principal.actor, access_tags=body.access_tags,
        practising_certificate=body.practising_certificate)
    return {**_user_json(user), "one_time_password": one_time}


@router.put("/users/{username}/practising-certificate",
            summary="Set or clear an account's practising-certificate code",
            responses={404: {"description": "no such user"}})
def set_practising_certificate(request: Request, principal: ManageUsers, username: str,
                               body: Annotated[CertificateBody, Body()]) -> dict[str, Any]:
    return _user_json(get_accounts(request).set_practising_certificate(
        username, body.practising_certificate, actor=principal.actor))


@router.post("/users/{username}/disable", summary="Disable an account (ends its sessions)")
def disable_user(request: Request, principal: ManageUsers, username: str) -> dict[str, Any]:
    return _user_json(get_accounts(request).set_disabled(username, True, reason="by admin",
                                                         actor=principal.actor))


@router.post("/users/{username}/enable", summary="Enable an account (and unlock it)")
def enable_user(request: Request, principal: ManageUsers, username: str) -> dict[str, Any]:
    return _user_json(get_accounts(request).set_disabled(username, False,
                                                         actor=principal.actor))


@router.post("/users/{username}/reset-password",
             summary="A new one-time password, to be changed at next login")
def reset_password(request: Request, principal: ManageUsers, username: str) -> dict[str, Any]:
    password = get_accounts(request).reset_password(username, actor=principal.actor)
    return {"username": username, "one_time_password": password}


@router.get("/tokens", summary="List API tokens (never the tokens themselves)")
def list_tokens(request: Request, principal: ManageUsers) -> list[dict[str, Any]]:
    return [_token_json(t) for t in get_accounts(request).tokens()]


@router.post("/tokens", status_code=201, summary="Create an API token (shown once)")
def create_token(request: Request, principal: ManageUsers, body: Annotated[TokenBody, Body()]
                 ) -> dict[str, Any]:
    token, info = get_accounts(request).create_token(
        body.name, body.role, expires_days=body.expires_days, actor=principal.actor,
        access_tags=body.access_tags)
    return {**_token_json(info), "token": token}


@router.delete("/tokens/{token_id}", summary="Revoke an API token")
def revoke_token(request: Request, principal: ManageUsers, token_id: int) -> dict[str, Any]:
    return _token_json(get_accounts(request).revoke_token(token_id, actor=principal.actor))


@router.get("/audit", summary="Search the audit trail (newest first)")
def search_audit(
    request: Request, principal: ReadAudit,
    patient_id: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    events = acting_archive(request).audit_events(patient_id=patient_id, actor=actor,
                                  action=action, since=since, until=until, limit=limit,
                                  offset=offset, source=client_address(request))
    return [e.as_json() for e in events]


@router.get(
    "/audit/export", summary="The audit trail as CSV, DICOM audit messages or FHIR AuditEvents",
    responses={200: {"content": {"text/csv": {}, "application/xml": {},
                                 "application/fhir+json": {}}}})
def export_audit(
    request: Request, principal: ReadAudit,
    format: Annotated[Literal["csv", "dicom", "fhir"], Query(
        description="csv; dicom: PS3.15 A.5 audit messages; fhir: a Bundle of R4 "
        "AuditEvents (IHE BALP)")] = "csv",
    patient_id: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> Response:
    entries = acting_archive(request).audit_events(
        patient_id=patient_id, actor=actor, action=action, since=since, until=until,
        limit=limit, offset=0, source=client_address(request))
    source_id = audit_source_id(request.app.state.settings)
    if format == "csv":
        return Response(to_csv(entries), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": 'attachment; filename="audit.csv"'})
    if format == "dicom":
        body = "".join(dicom_audit_message(e, source_id) for e in entries)
        return Response(f"<AuditMessages>{body}</AuditMessages>",
                        media_type="application/xml")
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": fhir_audit_event(e, source_id)} for e in entries]}
    return Response(json.dumps(bundle, ensure_ascii=False),
                    media_type="application/fhir+json")


@router.get("/alerts", summary="Security alerts raised from the audit trail (newest first)")
def list_alerts(request: Request, principal: ReadAudit,
                include_acknowledged: bool = False) -> list[dict[str, Any]]:
    monitor: AlertMonitor = request.app.state.alerts
    return [a.as_json() for a in monitor.alerts(include_acknowledged=include_acknowledged)]


@router.post("/alerts/{alert_id}/acknowledge", summary="Mark an alert as looked at",
             responses={404: {"description": "no such alert"}})
def acknowledge_alert(request: Request, principal: ReadAudit, alert_id: int
                      ) -> dict[str, Any]:
    monitor: AlertMonitor = request.app.state.alerts
    alert = monitor.acknowledge(alert_id, principal.actor)
    if alert is None:
        raise NotFound(f"no alert {alert_id}")
    return alert.as_json()
