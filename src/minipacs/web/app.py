"""FastAPI application factory: routers, one error mapping, the viewer's static files."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from minipacs import __version__
from minipacs.access.accounts import Accounts
from minipacs.access.oidc import OpenIdProvider
from minipacs.access.share import ShareLinks
from minipacs.access.single_sign_on import SingleSignOn
from minipacs.ae_registry import AERegistry
from minipacs.archive import Archive
from minipacs.audit.alerts import AlertMonitor, AlertRules
from minipacs.config import Settings
from minipacs.errors import (
    Conflict,
    Forbidden,
    IdentityProviderError,
    InvalidInstance,
    MinipacsError,
    NotAcceptable,
    NotFound,
    PreconditionFailed,
    QueryError,
    StorageError,
    Unauthenticated,
)
from minipacs.volumes import VolumeCache
from minipacs.web import (
    access_tags_admin,
    accounts_admin,
    admin,
    auth,
    claims,
    dicomweb,
    emr_sync,
    exports,
    fhir,
    fhir_orders,
    fhir_reports,
    hanging_protocols,
    hl7_reports,
    key_images,
    mpr,
    oidc,
    patients_admin,
    report_templates,
    restricted_admin,
    retention,
    share,
    stow,
    wado_pixels,
    wado_uri,
)
from minipacs.web.openapi_doc import install_openapi
from minipacs.web.request_bounds import RequestEdge
from minipacs.web.route_rules import enforce_route_rule
from minipacs.worklist import Worklist

log = logging.getLogger(__name__)

VIEWER_DIR = Path(__file__).resolve().parents[3] / "viewer"

# The one place core errors become HTTP statuses.
_STATUS: list[tuple[type[MinipacsError], int]] = [
    (Unauthenticated, 401),
    (QueryError, 400),
    (InvalidInstance, 400),
    (Forbidden, 403),
    (NotFound, 404),
    (NotAcceptable, 406),
    (PreconditionFailed, 412),
    (Conflict, 409),
    (StorageError, 503),
    (IdentityProviderError, 502),
]


def status_for(exc: MinipacsError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def describe_validation_error(exc: RequestValidationError) -> str:
    """FastAPI's validation errors as one sentence per problem: where (query parameter,
    path segment, body field), the value received, and what is expected."""
    where_names = {"query": "query parameter", "path": "path parameter",
                   "header": "header", "cookie": "cookie", "body": "body field"}
    sentences = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        kind = where_names.get(loc[0], loc[0]) if loc else "request"
        name = ".".join(loc[1:])
        kind_of_error = str(error.get("type", ""))
        message = str(error.get("msg", "invalid"))
        if kind_of_error == "json_invalid":
            sentences.append(f"the request body is not valid JSON ({message}, at character "
                             f"{name or '?'}); send a JSON object")
        elif kind_of_error == "missing" and not name:
            sentences.append(f"the request {kind.split()[0]} is missing; send a JSON object")
        elif kind_of_error == "missing":
            sentences.append(f"{kind} {name!r} is required")
        else:
            value = repr(error.get("input"))
            if len(value) > 80:
                value = value[:77] + "..."
            sentences.append(f"{kind} {name!r} = {value}: {message}" if name
                             else f"{kind} = {value}: {message}")
    return "; ".join(sentences) or "the request is malformed"


class ViewerFiles(StaticFiles):
    """The viewer's files with `Cache-Control: no-cache`: the browser revalidates each
    load (an unchanged file costs a 304), so after an upgrade no radiologist runs
    yesterday's modules against today's server, as heuristic caching would allow."""

    def file_response(self, full_path: Any, stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


def create_app(
    archive: Archive, settings: Settings, *, registry: AERegistry, worklist: Worklist,
    accounts: Accounts, alerts: AlertMonitor | None = None,
) -> FastAPI:
    app = FastAPI(
        title="minipacs",
        version=__version__,
        description="DICOM archive: DICOMweb (QIDO-RS, WADO-RS, STOW-RS), admin API, viewer.",
        # Every API route: its rule in route_rules.RULES (401/403 before the route runs).
        dependencies=[Depends(enforce_route_rule)],
    )
    app.state.archive = archive
    app.state.settings = settings
    app.state.ae_registry = registry
    app.state.worklist = worklist
    app.state.accounts = accounts
    app.state.sso = None
    if settings.oidc_issuer:
        try:
            app.state.sso = SingleSignOn(OpenIdProvider(settings), accounts)
        except ValueError as exc:
            raise SystemExit(f"single sign-on settings: {exc}") from None
    app.state.share_links = ShareLinks(archive.engine, archive.write_engine)
    app.state.alerts = alerts or AlertMonitor(archive.engine, archive.write_engine,
                                              AlertRules.from_settings(settings))
    # MPR (web/mpr.py): series volumes kept between reslice requests, bounded in bytes.
    app.state.mpr_volumes = VolumeCache(settings.mpr_cache_bytes)

    @app.exception_handler(MinipacsError)
    def _core_error(request: Request, exc: MinipacsError) -> Response:
        status = status_for(exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        headers = {}
        if status == 401:
            # RFC 6750 §3 / RFC 7617: the schemes a client may use. Bearer only: a Basic
            # challenge would make browsers pop up their own dialog over the viewer.
            headers["WWW-Authenticate"] = 'Bearer realm="minipacs"'
        if (request.url.path + "/").startswith("/fhir/"):  # the FHIR door answers OperationOutcome
            return fhir.fhir_error(status, str(exc), headers)
        return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
        # Every parameter or body error is a 400 in our own format, never FastAPI's 422;
        # a body in a media type other than JSON is 415 (RFC 9110 §15.5.16).
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body_error = any(e.get("loc", ("",))[0] == "body" for e in exc.errors())
        if body_error and content_type and not content_type.endswith(("/json", "+json")):
            return JSONResponse({"error": f"Content-Type {content_type!r} is not accepted "
                                          "here; send application/json"}, status_code=415)
        if (request.url.path + "/").startswith("/fhir/"):  # FHIR: an OperationOutcome
            return fhir.fhir_error(400, describe_validation_error(exc), {})
        return JSONResponse({"error": describe_validation_error(exc)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Unknown paths (404) and methods (405) answer in the same error format.
        if (request.url.path + "/").startswith("/fhir/"):  # unmatched /fhir paths: OperationOutcome
            return fhir.unsupported(request.method, request.url.path, exc.status_code)
        if exc.status_code == 404:
            message = f"no resource at {request.url.path[:200]!r}; see /docs for the API"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path[:200]!r}"
        else:
            message = str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code,
                            headers=dict(exc.headers or {}))

    if settings.cors_origins.strip():
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            # Never credentials cross-origin (with '*' above all): other sites' pages call
            # us with a bearer token of their own, never with a user's session cookie.
            allow_credentials=False,
            expose_headers=dicomweb.EXPOSED_HEADERS,
        )
    app.include_router(auth.router)
    app.include_router(oidc.router)
    app.include_router(accounts_admin.router)
    app.include_router(dicomweb.router)
    app.include_router(wado_pixels.router)
    app.include_router(stow.router)
    app.include_router(key_images.router)
    app.include_router(wado_uri.router)
    app.include_router(admin.router)
    app.include_router(retention.router)
    app.include_router(exports.router)
    app.include_router(share.router)
    app.include_router(restricted_admin.router)
    app.include_router(access_tags_admin.router)
    app.include_router(patients_admin.router)
    app.include_router(fhir_orders.router)  # before fhir's catch-all /fhir/{type}
    app.include_router(fhir_reports.router)  # before fhir's catch-all too
    app.include_router(fhir.router)
    app.include_router(emr_sync.router)
    app.include_router(report_templates.router)
    app.include_router(mpr.router)  # MPR (minipacs extension, issue #14)
    app.include_router(hanging_protocols.router)  # the viewer's layouts (issue #14)
    app.include_router(claims.router)
    app.include_router(hl7_reports.router)  # the ORU^R01 sender's state (issue #14)
    # Security headers, unsafe-URL refusal and the JSON body bound, in one ASGI layer
    # outside even Starlette's ServerErrorMiddleware, so an unexpected 500 gets the
    # headers too (web/request_bounds.py).
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = (  # type: ignore[method-assign]
        lambda: RequestEdge(build_stack(), settings))
    install_openapi(app)

    @app.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        return RedirectResponse("/viewer/")

    @app.get("/healthz", tags=["admin"], summary="Liveness and archive counts")
    def _health() -> dict[str, object]:
        return {"status": "ok", "version": __version__, **archive.counts()}

    @app.get("/viewer", include_in_schema=False)
    def _viewer_slash() -> RedirectResponse:
        # The viewer's assets are relative URLs: they resolve only under /viewer/.
        return RedirectResponse("/viewer/")

    if VIEWER_DIR.is_dir():
        app.mount("/viewer", ViewerFiles(directory=VIEWER_DIR, html=True), name="viewer")
    return app
