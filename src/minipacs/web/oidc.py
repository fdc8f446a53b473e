"""The viewer's "Sign in with <provider>": the OpenID Connect authorization code flow.

GET /auth/oidc says whether single sign-on is on (the viewer shows the button then);
GET /auth/oidc/login sends the browser to the provider; the provider sends it back to
GET /auth/oidc/callback, which trades the code for tokens, validates the ID token
(access/oidc.py), opens the usual minipacs session (the `minipacs_session` cookie, as
POST /auth/login does) and returns to the viewer page the sign-in started from.

State, nonce and the PKCE verifier stay in the browser that started, in a short-lived
HttpOnly cookie scoped to /auth/oidc (SameSite=Lax: it must come back on the provider's
top-level redirect), not on the server: any node of several may receive the callback.
A callback whose `state` differs from the cookie's is refused (login CSRF, RFC 6749
§10.12), and the cookie is used once.
"""

from __future__ import annotations

import base64
import hmac
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse

from minipacs.access.single_sign_on import SingleSignOn
from minipacs.errors import IdentityProviderError, NotFound, Unauthenticated
from minipacs.web.auth import client_address, set_session_cookie

FLOW_COOKIE = "minipacs_oidc"
FLOW_PATH = "/auth/oidc"
FLOW_SECONDS = 600
router = APIRouter(prefix="/auth/oidc", tags=["auth"])


def _sso(request: Request) -> SingleSignOn:
    sso: SingleSignOn | None = getattr(request.app.state, "sso", None)
    if sso is None:
        raise NotFound("single sign-on is off on this server (MINIPACS_OIDC_ISSUER unset)")
    return sso


def _redirect_uri(request: Request) -> str:
    # The provider must list it among the client's redirect URIs, so a forged Host header
    # only makes the provider refuse.
    base = request.app.state.settings.public_url or str(request.base_url)
    return base.rstrip("/") + "/auth/oidc/callback"


def _return_path(target: str) -> str:
    """Only a page of the viewer on this server (no open redirect)."""
    if target.startswith("/viewer/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/viewer/"


@router.get("", summary="Whether single sign-on (OpenID Connect) is on, and its name")
def oidc_status(request: Request) -> dict[str, Any]:
    sso: SingleSignOn | None = getattr(request.app.state, "sso", None)
    if sso is None:
        return {"enabled": False}
    return {"enabled": True, "name": sso.provider.name, "login_url": "/auth/oidc/login"}


@router.get("/login", status_code=303, response_class=RedirectResponse,
            summary="Start signing in with the OpenID Provider (a redirect to it)",
            responses={404: {"description": "single sign-on is off"},
                       502: {"description": "the provider's discovery document could not "
                                            "be read"}})
def oidc_login(request: Request,
               next: Annotated[str, Query(max_length=2000)] = "/viewer/"
               ) -> RedirectResponse:
    start = _sso(request).provider.start_sign_in(_redirect_uri(request))
    flow = json.dumps({"state": start.state, "nonce": start.nonce,
                       "verifier": start.code_verifier, "next": _return_path(next)})
    response = RedirectResponse(start.url, status_code=303)
    response.set_cookie(FLOW_COOKIE, base64.urlsafe_b64encode(flow.encode()).decode(),
                        max_age=FLOW_SECONDS, path=FLOW_PATH, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")
    return response


def _flow(request: Request) -> dict[str, str]:
    raw = request.cookies.get(FLOW_COOKIE, "")
    try:
        flow = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (ValueError, TypeError):
        flow = None
    if not isinstance(flow, dict) or not all(isinstance(flow.get(k), str) for k in
                                             ("state", "nonce", "verifier", "next")):
        raise Unauthenticated("this browser started no sign-in here in the last "
                              f"{FLOW_SECONDS // 60} minutes (no {FLOW_COOKIE} cookie); "
                              "start again from the viewer")
    return flow


@router.get("/callback", status_code=303, response_class=RedirectResponse,
            summary="Where the OpenID Provider returns the browser: opens a session",
            responses={401: {"description": "the provider refused, the state does not "
                                            "match, the ID token is invalid, or no role "
                                            "maps"},
                       404: {"description": "single sign-on is off"},
                       502: {"description": "the provider did not answer"}})
def oidc_callback(request: Request,
                  code: Annotated[str, Query(max_length=4096)] = "",
                  state: Annotated[str, Query(max_length=512)] = "",
                  error: Annotated[str, Query(max_length=256)] = "",
                  error_description: Annotated[str, Query(max_length=1024)] = "",
                  ) -> RedirectResponse:
    sso = _sso(request)
    source = client_address(request)
    try:
        flow = _flow(request)
        if not hmac.compare_digest(state.encode(), flow["state"].encode()):
            raise Unauthenticated("the sign-in's state does not match the one this browser "
                                  "started with (a forged or stale callback)")
        if error:
            # RFC 6749 §4.1.2.1: the provider says why (the user cancelled, ...).
            raise Unauthenticated(f"the OpenID Provider answered {error}"
                                  + (f": {error_description}" if error_description else ""))
        if not code:
            raise Unauthenticated("the OpenID Provider's answer has no authorization code")
        identity = sso.provider.finish_sign_in(code, flow["verifier"], flow["nonce"],
                                               _redirect_uri(request))
    except (Unauthenticated, IdentityProviderError) as exc:
        sso.refuse(str(exc), source=source)
        raise
    result = sso.open_session(identity, source=source)
    response = RedirectResponse(flow["next"], status_code=303)
    set_session_cookie(request, response, result.token)
    response.delete_cookie(FLOW_COOKIE, path=FLOW_PATH)
    return response
