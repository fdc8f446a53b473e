"""The OpenAPI document as clients may rely on it: every status and media type each
route can answer, with the project's error body, and no FastAPI 422 (the app maps every
parameter or body error to 400/415 in `web.app`).

FastAPI derives parameters and bodies from the routes; what it cannot know (the media
types our `Response` objects carry, the statuses the core's errors become) is added here
from one table, so the document and the code change in one place.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from minipacs.web.route_rules import PUBLIC, SIGNED_IN, rule_for

DICOM_JSON = "application/dicom+json"
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_DICOM_JSON_ARRAY = {"schema": {"type": "array", "items": {"type": "object"}}}
_ERROR_REF = {"schema": {"$ref": "#/components/schemas/Error"}}
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string",
                             "description": "What was wrong, with the value, and what to do"}},
}

_OUTCOME = {"application/fhir+json": {"schema": {
    "type": "object", "description": "a FHIR R4 OperationOutcome"}}}
_ERRORS: dict[str, str] = {
    "400": "A parameter or the body is malformed (the error names it, its value and what is "
           "expected)",
    "401": "No credentials, or wrong, expired or revoked ones (log in, or send "
           "Authorization: Bearer <token> or Basic)",
    "403": "The caller's role may not do this (docs/security.md), or must change its "
           "one-time password first",
    "404": "No such study, series, instance, frame, AE or worklist item",
    "406": "The Accept header (or accept/contentType parameter) excludes every media type "
           "this resource can produce",
    "409": "The request conflicts with what is stored",
    "413": "Request body larger than MINIPACS_MAX_UPLOAD_BYTES (STOW-RS) or "
           "MINIPACS_HTTP_MAX_JSON_BODY_BYTES (JSON routes)",
    "415": "Request body in a media type this route does not take",
    "431": "Request line and headers larger than MINIPACS_HTTP_MAX_HEADER_BYTES (answered "
           "before routing; the connection is closed)",
    "503": "The blob store or index is unavailable; retrying later may succeed",
}

# (method, path pattern) -> 200 content: media type -> description. First match wins.
_UID = r"\{[a-z_]+\}"
_CONTENT: list[tuple[str, str, dict[str, dict[str, Any]]]] = [
    ("get", r"^/fhir/", {"application/fhir+json": {"schema": {"type": "object"}}}),
    ("get", rf"^/dicom-web(/studies/{_UID}(/series/{_UID})?)?/(studies|series|instances)$",
     {DICOM_JSON: _DICOM_JSON_ARRAY}),
    ("get", r"/metadata$", {DICOM_JSON: _DICOM_JSON_ARRAY}),
    ("get", rf"^/dicom-web/studies/{_UID}(/series/{_UID}(/instances/{_UID})?)?$",
     {"multipart/related": _BINARY}),
    ("get", r"/frames/\{frames\}$",
     {"multipart/related": _BINARY, "application/octet-stream": _BINARY,
      "image/jpeg": _BINARY, "image/jls": _BINARY, "image/jp2": _BINARY,
      "image/jpx": _BINARY, "image/jphc": _BINARY, "image/x-dicom-rle": _BINARY}),
    # video objects' Pixel Data: the stream itself (web/wado_video.py)
    ("get", r"/bulkdata/\{tag\}$", {"multipart/related": _BINARY, "video/mp4": _BINARY,
                                    "video/mpeg2": _BINARY}),
    ("get", r"/instances/\{instance\}(/frames/\{frames\})?/rendered$",
     {"image/jpeg": _BINARY, "image/png": _BINARY, "multipart/related": _BINARY}),
    ("get", r"/rendered$", {"multipart/related": _BINARY}),
    ("get", r"/thumbnail$", {"image/jpeg": _BINARY, "image/png": _BINARY}),
    ("get", r"^/wado$", {"application/dicom": _BINARY, "image/jpeg": _BINARY,
                         "image/png": _BINARY}),
    ("post", r"^/dicom-web/studies", {DICOM_JSON: {"schema": {"type": "object"}}}),
]
_MULTIPART_NOTE = (' multipart/related bodies carry a type parameter naming the part media '
                   'type (application/dicom, application/octet-stream, image/jpeg, ...) '
                   'and, for DICOM and frames, a transfer-syntax parameter.')


def _statuses(method: str, path: str, operation: dict[str, Any]) -> set[str]:
    """The error statuses an operation can answer, from what it takes and does."""
    codes = {"431", "503"}  # any request: an oversized head; the index or store down
    if operation.get("parameters") or "requestBody" in operation or \
            path == "/IHEInvokeImageDisplay":  # reads its IID parameters itself
        codes.add("400")
    if "{" in path or path == "/wado":
        codes.add("404")
    if path.startswith("/dicom-web") or path == "/wado":
        codes.add("406")  # negotiated from Accept (PS3.18 §8.7)
    if "requestBody" in operation:
        codes.update({"413", "415"})
    if (method == "post" and path.startswith("/dicom-web/studies")) or \
            (method, path) == ("post", "/admin/users"):
        codes.add("409")
    rule = rule_for(method.upper(), path)
    if rule != PUBLIC:
        codes.add("401")  # web/route_rules.py: this route needs credentials
    if rule not in (PUBLIC, SIGNED_IN):
        codes.add("403")  # ... and a role with its action
    if path in ("/auth/login", "/auth/share"):
        codes.add("401")
    return codes


def _describe(openapi: dict[str, Any]) -> dict[str, Any]:
    openapi.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    schemas = openapi["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, item in openapi.get("paths", {}).items():
        for method, operation in item.items():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            responses.pop("422", None)
            for pattern_method, pattern, content in _CONTENT:
                if pattern_method == method and re.search(pattern, path):
                    ok = next((c for c in ("200", "201", "204") if c in responses), "200")
                    described = responses.setdefault(ok, {"description": "Success"})
                    described["content"] = dict(content)
                    if "multipart/related" in content:
                        described["description"] = (described.get("description", "")
                                                    + "." + _MULTIPART_NOTE).lstrip(".")
                    break
            if path == "/IHEInvokeImageDisplay":
                responses.pop("200", None)
                responses["303"] = {"description": "See Other: the viewer's link for the "
                                                   "request (Location)"}
            if path.endswith("/metadata") and path.startswith("/dicom-web"):
                responses["304"] = {"description": "Not modified: If-None-Match named the "
                                                   "current ETag"}
            if method == "post" and path.startswith("/dicom-web/studies"):
                for code in ("202", "409"):
                    responses.setdefault(code, {"description": "See FailedSOPSequence"})
                    responses[code]["content"] = {DICOM_JSON: {"schema": {"type": "object"}}}
            # The FHIR door answers errors as OperationOutcome (FHIR R4 §3.1.0.4).
            error = _OUTCOME if path.startswith("/fhir") else {"application/json": _ERROR_REF}
            for code in _statuses(method, path, operation):
                if code == "409" and "content" in responses.get(code, {}):
                    continue
                entry = responses.setdefault(code, {"description": _ERRORS[code]})
                entry["content"] = dict(error)
            for code, entry in responses.items():  # errors a route declared itself
                if code.startswith(("4", "5")) and "content" not in entry:
                    entry["content"] = dict(error)
    return openapi


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` (and /openapi.json) return the completed document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _describe(get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
