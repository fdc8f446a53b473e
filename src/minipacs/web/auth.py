"""The HTTP door's authentication: who is calling, as a `Principal`; login and sessions.

Credentials, in the order tried: `Authorization: Bearer <token>` (API tokens, login
sessions), `Authorization: Basic` (DICOMweb tools and viewers such as Weasis), and the
viewer's session cookie (HttpOnly, SameSite=Strict: images in <img> tags carry it too).
With `MINIPACS_AUTH=off` every caller is an anonymous principal: still audited.

Which action each route performs is one table, `route_rules.py`, applied before every
route; routes reach the archive through `acting_archive`, so every core call carries
the principal and the core checks it again with the same function.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Body, Depends, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from minipacs.access import control, totp
from minipacs.access.accounts import TOKEN_PREFIX, Accounts
from minipacs.access.principal import Principal, anonymous_principal
from minipacs.access.roles import Action
from minipacs.archive import Archive
from minipacs.errors import InvalidRequest, Unauthenticated

SESSION_COOKIE = "minipacs_session"
router = APIRouter(prefix="/auth", tags=["auth"])


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def get_accounts(request: Request) -> Accounts:
    accounts: Accounts = request.app.state.accounts
    return accounts


def authenticate(request: Request) -> Principal:
    """The caller as a principal; raises `Unauthenticated` (401) without valid credentials."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    source = client_address(request)
    if request.app.state.settings.auth == "off":
        principal = anonymous_principal(source)
    else:
        principal = _from_credentials(request, get_accounts(request), source)
    return _settle(request, principal)


def authenticate_cached(request: Request) -> Principal | None:
    """The caller's principal when finding it needs no I/O: already found for this
    request, auth off, or a bearer token (or session cookie) the accounts verified within
    the last few seconds (`Accounts`' cache, which a revocation on this node clears and
    which expires after `_CACHE_SECONDS` for changes made elsewhere). None otherwise: the
    caller then runs `authenticate` on a worker thread (a database look-up, Argon2 for
    Basic, the OpenID Provider's keys). Lets async dependencies skip the thread-pool hop
    on the common case, a viewer's hundreds of requests with one token; the rules applied
    are the same, and an unknown or revoked credential always goes the long way."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    if request.app.state.settings.auth == "off":
        return _settle(request, anonymous_principal(client_address(request)))
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if header:
        token = value.strip()
        if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX):
            return None  # Basic, a provider's JWT, a malformed header: the long way
    else:
        token = request.cookies.get(SESSION_COOKIE, "")
        if not token:
            return None
    principal = get_accounts(request).cached_bearer(token)
    return None if principal is None else _settle(request, principal)


def _settle(request: Request, principal: Principal) -> Principal:
    # Header values are ASCII: a reason in Vietnamese comes percent-encoded UTF-8
    # (RFC 3986 2.1), which is decoded here; plain ASCII passes unchanged.
    reason = unquote(request.headers.get("x-break-glass-reason", "")).strip()
    if reason:
        principal = dataclasses.replace(principal, break_glass_reason=reason[:512])
    request.state.principal = principal
    return principal


def _from_credentials(request: Request, accounts: Accounts, source: str) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        token = value.strip()
        sso = getattr(request.app.state, "sso", None)
        if sso is not None and not token.startswith(TOKEN_PREFIX) and token.count(".") == 2:
            # A JWT from the OpenID Provider (access/single_sign_on.py); ours start mp_.
            principal: Principal = sso.bearer_principal(token, source=source)
            return principal
        return accounts.authenticate_bearer(token, source=source)
    if scheme.lower() == "basic" and value.strip():
        try:
            username, sep, password = base64.b64decode(value.strip(), validate=True
                                                        ).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated("the Basic credentials are not base64 of "
                                  "'user:password' in UTF-8") from None
        if not sep:
            raise Unauthenticated("the Basic credentials have no ':' between user and "
                                  "password")
        return accounts.authenticate_basic(username, password, source=source)
    if header:
        raise Unauthenticated(f"unsupported Authorization scheme {scheme[:20]!r}; use "
                              "Bearer (a token) or Basic")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return accounts.authenticate_bearer(cookie, source=source)
    raise Unauthenticated("this needs an account: log in (POST /auth/login), or send "
                          "'Authorization: Bearer <token>' (minipacs token create) or Basic")


PrincipalDep = Annotated[Principal, Depends(authenticate)]


def acting_archive(request: Request) -> Archive:
    """The node's archive acting for this request's principal (`Archive.acting_as`)."""
    archive: Archive = request.app.state.archive
    return archive.acting_as(authenticate(request))


async def acting_archive_dependency(request: Request) -> Archive:
    """`acting_archive` as a route dependency: on the event loop when the principal is
    already known (the usual case: the app-wide route rule found it), else on a worker
    thread, so a request does not pay a thread-pool hop for a dictionary look-up."""
    principal = authenticate_cached(request)
    if principal is None:
        principal = await run_in_threadpool(authenticate, request)
    archive: Archive = request.app.state.archive
    return archive.acting_as(principal)


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    """The viewer's session: HttpOnly (no script reads it), SameSite=Strict (no other
    site's page sends it), Secure over HTTPS."""
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")


# ---------------------------------------------------------------------- /auth routes
class LoginBody(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)
    totp: str = Field("", max_length=16, description="the 6-digit one-time code, for "
                      "accounts with a second factor")


class CodeBody(BaseModel):
    code: str = Field(max_length=16, description="6 digits from the authenticator app")


class PasswordBody(BaseModel):
    old_password: str = Field(max_length=256)
    new_password: str = Field(max_length=256)


def _me(principal: Principal) -> dict[str, Any]:
    return {"name": principal.name, "kind": principal.kind, "role": principal.role.value,
            "must_change_password": principal.must_change_password,
            "must_enroll_totp": principal.must_enroll_totp,
            "actions": sorted(a.value for a in Action if control.permits(principal, a))}


@router.post("/login", summary="Log in: a session token (also set as an HttpOnly cookie)",
             responses={401: {"description": "wrong user name or password, locked or "
                                             "disabled account, one-time code missing, "
                                             "wrong or used already"}})
def login(request: Request, response: Response, body: Annotated[LoginBody, Body()]
          ) -> dict[str, Any]:
    accounts = get_accounts(request)
    result = accounts.login(body.username, body.password, code=body.totp,
                            source=client_address(request))
    set_session_cookie(request, response, result.token)
    return {"access_token": result.token, "token_type": "bearer",
            "expires_at": result.expires_at.isoformat() + "Z", **_me(result.principal)}


@router.post("/logout", status_code=204, summary="End this session")
def logout(request: Request, response: Response) -> Response:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else \
        request.cookies.get(SESSION_COOKIE, "")
    if token:
        get_accounts(request).logout(token, source=client_address(request))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/me", summary="Who the caller is, and what they may do",
            responses={401: {"description": "not logged in"}})
def me(principal: PrincipalDep) -> dict[str, Any]:
    return _me(principal)


@router.post("/password", status_code=204, summary="Change one's own password",
             responses={400: {"description": "the new password breaks the policy"},
                        401: {"description": "not logged in, or wrong current password"}})
def change_password(request: Request, principal: PrincipalDep,
                    body: Annotated[PasswordBody, Body()]) -> Response:
    if principal.kind != "user":
        raise Unauthenticated("only a logged-in user has a password to change")
    get_accounts(request).change_password(principal.name, body.old_password,
                                          body.new_password,
                                          source=client_address(request))
    return Response(status_code=204)


def _own_user(principal: Principal) -> str:
    if principal.kind != "user":
        raise InvalidRequest(f"{principal.actor} is no logged-in user: only users enrol a "
                             "second factor (an operator: `minipacs user totp NAME`)")
    return principal.name


@router.post("/totp/enroll", summary="Start enrolling a TOTP second factor (RFC 6238)",
             responses={400: {"description": "the caller is no logged-in user"},
                        401: {"description": "not logged in"},
                        409: {"description": "a second factor is active already"}})
def totp_enroll(request: Request, principal: PrincipalDep) -> dict[str, Any]:
    """A new secret for the caller, pending until `POST /auth/totp/confirm`: shown once,
    as an otpauth:// URI, as its QR code (an SVG data URI) and in base32 (to type in)."""
    secret, uri = get_accounts(request).start_totp(_own_user(principal),
                                                   source=client_address(request))
    return {"otpauth_uri": uri, "secret": secret, "qr_code": totp.qr_code_data_uri(uri)}


@router.post("/totp/confirm", status_code=204,
             summary="Activate the pending second factor with a code from the app",
             responses={400: {"description": "the code does not match, nothing is "
                                             "pending, or the caller is no logged-in user"},
                        401: {"description": "not logged in"}})
def totp_confirm(request: Request, principal: PrincipalDep,
                 body: Annotated[CodeBody, Body()]) -> Response:
    get_accounts(request).confirm_totp(_own_user(principal), body.code,
                                       source=client_address(request))
    return Response(status_code=204)


@router.get("/totp", summary="Whether the caller has a second factor (TOTP)",
            responses={400: {"description": "the caller is no logged-in user"},
                       401: {"description": "not logged in"}})
def totp_status(request: Request, principal: PrincipalDep) -> dict[str, Any]:
    user = get_accounts(request).user(_own_user(principal))
    return {"enabled": user.totp_enabled, "must_enroll": principal.must_enroll_totp}


@router.post("/totp/disable", status_code=204,
             summary="Remove one's own second factor, with a current code from the app",
             responses={400: {"description": "the code is wrong, expired or used already, "
                                             "or the caller is no logged-in user"},
                        401: {"description": "not logged in"},
                        409: {"description": "no second factor is active, or the policy "
                                             "requires administrators to keep one"}})
def totp_disable(request: Request, principal: PrincipalDep,
                 body: Annotated[CodeBody, Body()]) -> Response:
    get_accounts(request).disable_own_totp(_own_user(principal), body.code,
                                           source=client_address(request))
    return Response(status_code=204)
