"""What each HTTP route does, as an action of the permission matrix: one table.

`enforce_route_rule` runs before every API route (an app-wide dependency): it looks the
matched route up here, authenticates the caller (401) unless the route is public, and
asks the one check in `access.control` (403). A route missing from this table is refused
to everyone, and `tests/test_access_matrix.py` fails on it, so no route ships without a
rule. The core checks again, with the same function, for what it is asked to do.
"""

from __future__ import annotations

import logging
from typing import Final, Literal

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from minipacs.access import control
from minipacs.access.roles import Action
from minipacs.errors import Forbidden
from minipacs.web.auth import authenticate, authenticate_cached

log = logging.getLogger(__name__)

PUBLIC: Final = "public"  # no credentials needed (nothing about any patient)
SIGNED_IN: Final = "signed-in"  # any valid credentials (one's own session)
Rule = Action | Literal["public", "signed-in"]

INSTANCE = "/dicom-web/studies/{study}/series/{series}/instances/{instance}"
RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/"): PUBLIC,
    ("GET", "/viewer"): PUBLIC,
    ("POST", "/auth/login"): PUBLIC,
    ("POST", "/auth/logout"): PUBLIC,
    ("GET", "/auth/me"): SIGNED_IN,
    ("POST", "/auth/password"): SIGNED_IN,
    ("POST", "/auth/totp/enroll"): SIGNED_IN,
    ("POST", "/auth/totp/confirm"): SIGNED_IN,
    ("GET", "/auth/totp"): SIGNED_IN,
    ("POST", "/auth/totp/disable"): SIGNED_IN,
    # single sign-on (web/oidc.py): the redirects to and from the OpenID Provider
    ("GET", "/auth/oidc"): PUBLIC,
    ("GET", "/auth/oidc/login"): PUBLIC,
    ("GET", "/auth/oidc/callback"): PUBLIC,
    # QIDO-RS
    ("GET", "/dicom-web/studies"): Action.QUERY,
    ("GET", "/dicom-web/series"): Action.QUERY,
    ("GET", "/dicom-web/instances"): Action.QUERY,
    ("GET", "/dicom-web/studies/{study}/series"): Action.QUERY,
    ("GET", "/dicom-web/studies/{study}/instances"): Action.QUERY,
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances"): Action.QUERY,
    # WADO-RS: whole instances are a download; what a viewer displays is a view
    ("GET", "/dicom-web/studies/{study}"): Action.DOWNLOAD,
    ("GET", "/dicom-web/studies/{study}/series/{series}"): Action.DOWNLOAD,
    ("GET", INSTANCE): Action.DOWNLOAD,
    ("GET", "/dicom-web/studies/{study}/metadata"): Action.VIEW,
    ("GET", "/dicom-web/studies/{study}/series/{series}/metadata"): Action.VIEW,
    ("GET", INSTANCE + "/metadata"): Action.VIEW,
    ("GET", INSTANCE + "/frames/{frames}"): Action.VIEW,
    ("GET", INSTANCE + "/bulkdata/{tag}"): Action.VIEW,
    ("GET", "/dicom-web/studies/{study}/rendered"): Action.VIEW,
    ("GET", "/dicom-web/studies/{study}/series/{series}/rendered"): Action.VIEW,
    ("GET", INSTANCE + "/rendered"): Action.VIEW,
    ("GET", INSTANCE + "/frames/{frames}/rendered"): Action.VIEW,
    ("GET", "/dicom-web/studies/{study}/thumbnail"): Action.VIEW,
    ("GET", "/dicom-web/studies/{study}/series/{series}/thumbnail"): Action.VIEW,
    ("GET", INSTANCE + "/thumbnail"): Action.VIEW,
    # WADO-URI: a rendered image by default (application/dicom asks the core to download)
    ("GET", "/wado"): Action.VIEW,
    # STOW-RS
    ("POST", "/dicom-web/studies"): Action.STORE,
    ("POST", "/dicom-web/studies/{study}"): Action.STORE,
    # reading (issue #14): key images stored as a Key Object Selection in the study
    ("POST", "/dicom-web/studies/{study}/key-images"): Action.STORE,
    # reading (issue #14): multiplanar reconstruction, a view like rendered frames
    ("GET", "/dicom-web/studies/{study}/series/{series}/mpr/{plane_name}"): Action.VIEW,
    ("GET", "/dicom-web/studies/{study}/series/{series}/mpr/{plane_name}/frames/{frame}"):
        Action.VIEW,
    ("GET", "/dicom-web/studies/{study}/series/{series}/mpr/{plane_name}/frames/{frame}"
     "/rendered"): Action.VIEW,
    # administration
    ("DELETE", "/admin/studies/{study}"): Action.DELETE,
    ("GET", "/admin/storage"): Action.MANAGE_AES,
    ("GET", "/admin/ae"): Action.MANAGE_AES,
    ("GET", "/admin/ae/{ae_title}"): Action.MANAGE_AES,
    ("PUT", "/admin/ae/{ae_title}"): Action.MANAGE_AES,
    ("DELETE", "/admin/ae/{ae_title}"): Action.MANAGE_AES,
    ("GET", "/admin/worklist"): Action.MANAGE_WORKLIST,
    ("POST", "/admin/worklist"): Action.MANAGE_WORKLIST,
    ("GET", "/admin/worklist/{step_id}"): Action.MANAGE_WORKLIST,
    ("PUT", "/admin/worklist/{step_id}"): Action.MANAGE_WORKLIST,
    ("DELETE", "/admin/worklist/{step_id}"): Action.MANAGE_WORKLIST,
    ("GET", "/admin/users"): Action.MANAGE_USERS,
    ("POST", "/admin/users"): Action.MANAGE_USERS,
    ("POST", "/admin/users/{username}/disable"): Action.MANAGE_USERS,
    ("POST", "/admin/users/{username}/enable"): Action.MANAGE_USERS,
    ("POST", "/admin/users/{username}/reset-password"): Action.MANAGE_USERS,
    ("GET", "/admin/tokens"): Action.MANAGE_USERS,
    ("POST", "/admin/tokens"): Action.MANAGE_USERS,
    ("DELETE", "/admin/tokens/{token_id}"): Action.MANAGE_USERS,
    ("GET", "/admin/audit"): Action.READ_AUDIT,
    # who may open whom is an access decision, like accounts (not a demographics fix)
    ("GET", "/admin/restricted-patients"): Action.MANAGE_USERS,
    ("POST", "/admin/restricted-patients"): Action.MANAGE_USERS,
    ("DELETE", "/admin/restricted-patients/{patient_id}"): Action.MANAGE_USERS,
    # patient reconciliation (web/patients_admin.py): demographics and merges
    ("PATCH", "/admin/patients/{patient_id}"): Action.RECONCILE,
    ("POST", "/admin/patients/merge"): Action.RECONCILE,
    ("GET", "/admin/patients/{patient_id}/history"): Action.RECONCILE,
    # access tags: who sees which studies is an access decision too (docs/security.md)
    ("PUT", "/admin/users/{username}/access-tags"): Action.MANAGE_USERS,
    ("PUT", "/admin/users/{username}/practising-certificate"): Action.MANAGE_USERS,
    ("PUT", "/admin/tokens/{token_id}/access-tags"): Action.MANAGE_USERS,
    ("GET", "/admin/studies/{study}/access-tags"): Action.MANAGE_USERS,
    ("POST", "/admin/studies/{study}/access-tags"): Action.MANAGE_USERS,
    ("GET", "/admin/audit/export"): Action.READ_AUDIT,
    ("GET", "/admin/alerts"): Action.READ_AUDIT,
    ("POST", "/admin/alerts/{alert_id}/acknowledge"): Action.READ_AUDIT,
    ("POST", "/exports/deidentified"): Action.EXPORT_DEIDENTIFIED,
    ("POST", "/share-links"): Action.SHARE,
    ("GET", "/admin/share-links"): Action.MANAGE_USERS,
    ("DELETE", "/admin/share-links/{link_id}"): Action.MANAGE_USERS,
    ("POST", "/auth/share"): PUBLIC,
    # FHIR R4 (web/fhir.py): searches query, reads view; the CapabilityStatement, the
    # Endpoints, the unknown-type answers and the IID redirect say nothing about a patient
    ("GET", "/fhir/metadata"): PUBLIC,
    ("GET", "/fhir/ImagingStudy"): Action.QUERY,
    ("GET", "/fhir/ImagingStudy/{study}"): Action.VIEW,
    ("GET", "/fhir/Patient"): Action.QUERY,
    ("GET", "/fhir/Patient/{patient_id}"): Action.VIEW,
    ("GET", "/fhir/Endpoint/{endpoint_id}"): PUBLIC,
    ("GET", "/fhir/{resource_type}"): PUBLIC,
    ("GET", "/fhir/{resource_type}/{logical_id}"): PUBLIC,
    ("GET", "/IHEInvokeImageDisplay"): PUBLIC,
    # Orders (web/fhir_orders.py, web/admin.py): placing, changing and cancelling one
    # manages the worklist; reading orders is a query or a view of patient data.
    ("POST", "/fhir/ServiceRequest"): Action.MANAGE_WORKLIST,
    ("PUT", "/fhir/ServiceRequest/{logical_id}"): Action.MANAGE_WORKLIST,
    ("POST", "/fhir"): Action.MANAGE_WORKLIST,
    ("GET", "/fhir/ServiceRequest"): Action.QUERY,
    ("GET", "/fhir/ServiceRequest/{logical_id}"): Action.VIEW,
    # Reports (web/fhir_reports.py): writing, signing and amending need `report`
    # (radiologist); reading views the report's study, searching queries.
    ("POST", "/fhir/DiagnosticReport"): Action.REPORT,
    ("PUT", "/fhir/DiagnosticReport/{logical_id}"): Action.REPORT,
    ("GET", "/fhir/DiagnosticReport"): Action.QUERY,
    ("GET", "/fhir/DiagnosticReport/{logical_id}"): Action.VIEW,
    ("GET", "/admin/orders/reconciliation"): Action.MANAGE_WORKLIST,
    # Keeping the EMR in sync (web/emr_sync.py): the change feed is a query; the FHIR
    # push's state is the archive's peers, like the AE registry
    ("GET", "/changes"): Action.QUERY,
    ("GET", "/admin/fhir-push"): Action.MANAGE_AES,
    ("POST", "/admin/fhir-push/retry"): Action.MANAGE_AES,
    ("GET", "/admin/hl7-reports"): Action.MANAGE_AES,  # the ORU^R01 sender's state
    # Report templates (web/report_templates.py): read by whoever writes reports; changed
    # only by administrators, as the archive's configuration (like the AE registry)
    ("GET", "/report-templates"): Action.REPORT,
    ("POST", "/report-templates"): Action.MANAGE_AES,
    ("PUT", "/report-templates/{template_id}"): Action.MANAGE_AES,
    ("DELETE", "/report-templates/{template_id}"): Action.MANAGE_AES,
    # Hanging protocols (web/hanging_protocols.py): one's own are one's settings; the
    # defaults are the archive's configuration, like the AE registry
    ("GET", "/viewer-settings/hanging-protocols"): SIGNED_IN,
    ("PUT", "/viewer-settings/hanging-protocols/mine/{protocol}"): SIGNED_IN,
    ("DELETE", "/viewer-settings/hanging-protocols/mine/{protocol}"): SIGNED_IN,
    ("PUT", "/viewer-settings/hanging-protocols/defaults/{protocol}"): Action.MANAGE_AES,
    ("DELETE", "/viewer-settings/hanging-protocols/defaults/{protocol}"): Action.MANAGE_AES,
    # Insurance claims (web/claims.py): the rows are the signed report's text and times,
    # so reading them is viewing the study, as reading the DiagnosticReport is
    ("GET", "/claims/studies/{study}"): Action.VIEW,
    ("GET", "/claims"): Action.VIEW,
}


def rule_for(method: str, path: str) -> Rule | None:
    # HEAD is answered by GET routes (RFC 9110 §9.3.2): same rule.
    return RULES.get(("GET" if method == "HEAD" else method, path))


async def enforce_route_rule(request: Request) -> None:
    """App-wide dependency: the matched route's rule, applied (401/403).

    Async: with a credential the accounts verified seconds ago (`authenticate_cached`)
    the rule is a few dictionary look-ups, done on the event loop; anything needing I/O
    (a credential to check, a refusal to audit) runs on a worker thread."""
    route = request.scope.get("route")
    path = route.path if isinstance(route, APIRoute) else request.url.path
    rule = rule_for(request.method, path)
    if rule == PUBLIC:
        return
    principal = authenticate_cached(request)
    if principal is None:
        principal = await run_in_threadpool(authenticate, request)
    if rule == SIGNED_IN:
        return
    if rule is None:
        log.error("route %s %s has no access rule in web/route_rules.py: refused",
                  request.method, path)
        raise Forbidden(f"{request.method} {path} has no access rule; refused to everyone")
    # The study a route is about, for principals limited to some studies (share links).
    study = request.path_params.get("study") or request.query_params.get("studyUID")
    if not control.permits(principal, rule, study):
        await run_in_threadpool(
            request.app.state.archive.audit,
            rule.value, principal.actor, detail=f"{request.method} {request.url.path}",
            role=principal.role.value, source=principal.source, outcome="refused")
    control.require(principal, rule, study)
