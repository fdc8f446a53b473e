"""The FHIR R4 door at /fhir (JSON, application/fhir+json): CapabilityStatement,
ImagingStudy and Patient read and search, the two Endpoints; and the IHE Invoke Image
Display entry point (/IHEInvokeImageDisplay) that sends a browser to the viewer.

Searches become the same `Filter` C-FIND and QIDO-RS use (`fhir/search.py`) and reach
the archive acting for the caller (`acting_archive`), which checks and audits. Errors
are OperationOutcome resources (`fhir_error`, installed for /fhir paths by the app).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from fhir.resources.R4B.bundle import Bundle, BundleEntry, BundleEntrySearch, BundleLink
from fhir.resources.R4B.capabilitystatement import (
    CapabilityStatement,
    CapabilityStatementImplementation,
    CapabilityStatementRest,
    CapabilityStatementRestInteraction,
    CapabilityStatementRestResource,
    CapabilityStatementRestResourceInteraction,
    CapabilityStatementRestResourceSearchParam,
    CapabilityStatementRestSecurity,
    CapabilityStatementSoftware,
)
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.meta import Meta
from fhir.resources.R4B.operationoutcome import OperationOutcome, OperationOutcomeIssue
from fhir.resources.R4B.resource import Resource

from minipacs import __version__
from minipacs.access.roles import Action
from minipacs.emr.orders import Orders
from minipacs.errors import NotFound, QueryError
from minipacs.fhir.diagnostic_report import REPORT_PARAMS
from minipacs.fhir.ids import order_id_of, patient_key_of, step_id_of, study_uid_of
from minipacs.fhir.resources import endpoints, imaging_study_resource, patient_resource, text
from minipacs.fhir.search import IMAGING_STUDY_PARAMS, PATIENT_PARAMS, Search, SearchBuilder
from minipacs.fhir.service_request import SERVICE_REQUEST_PARAMS
from minipacs.patient_identity import IdentitySystems
from minipacs.search_pages import RecordConditions, SearchPage
from minipacs.web.auth import acting_archive

FHIR_JSON = "application/fhir+json"
router = APIRouter(tags=["fhir"])
SearchKind = Literal["ImagingStudy", "Patient"]
_SEARCHES: dict[SearchKind, dict[str, Any]] = {"ImagingStudy": IMAGING_STUDY_PARAMS,
                                               "Patient": PATIENT_PARAMS}


def fhir_base(request: Request) -> str:
    """The server's base URL as clients see it (MINIPACS_PUBLIC_URL, else the request's)."""
    settings = request.app.state.settings
    if settings.public_url:
        return str(settings.public_url).rstrip("/")
    host = request.headers.get("host", "")
    if host and ":" not in host.rsplit("]", 1)[-1]:
        host = f"{host}:{settings.http_port}"
    return f"{request.url.scheme}://{host}" if host else str(request.base_url).rstrip("/")


def fhir_response(resource: Resource, status: int = 200) -> Response:
    return Response(resource.model_dump_json(exclude_none=True), status_code=status,
                    media_type=FHIR_JSON)


# FHIR R4 OperationOutcome issue-type codes per HTTP status (http.html, RESTful API).
_ISSUE_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found",
                405: "not-supported",
                406: "not-supported", 409: "conflict", 412: "conflict",
                503: "transient"}


def fhir_error(status: int, diagnostics: str, headers: dict[str, str] | None = None
               ) -> Response:
    """An OperationOutcome with one issue, as the response for `status`."""
    outcome = OperationOutcome(issue=[OperationOutcomeIssue(
        severity="error" if status < 500 else "fatal",
        code=_ISSUE_CODES.get(status, "exception"), diagnostics=diagnostics)])
    response = fhir_response(outcome, status)
    response.headers.update(headers or {})
    return response


def _systems(request: Request) -> IdentitySystems:
    return IdentitySystems.from_settings(request.app.state.settings)


def _strict(request: Request) -> bool:
    prefer = request.headers.get("prefer", "").replace(" ", "").lower()
    return "handling=strict" in prefer.split(",") or "handling=strict" in prefer.split(";")


def _parse(request: Request, kind: SearchKind) -> Search:
    settings = request.app.state.settings
    builder = SearchBuilder(_systems(request), settings.fhir_page_size,
                            settings.max_query_results, _study_of_order(request))
    return builder.build(list(request.query_params.multi_items()), kind,
                         strict=_strict(request))


def _page(request: Request, kind: SearchKind, search: Search, action: Action,
          study_uid: str | None = None) -> SearchPage:
    level: Literal["PATIENT", "STUDY"] = "STUDY" if kind == "ImagingStudy" else "PATIENT"
    return acting_archive(request).search_page(level, search.filter, search.conditions,
                                               action=action, study_uid=study_uid,
                                               limit=search.count, offset=search.offset)


def _resources(request: Request, kind: SearchKind, page: SearchPage) -> list[Resource]:
    if kind == "Patient":
        systems = _systems(request)
        return [p for p in (patient_resource(m, systems) for m in page.matches) if p]
    timezone = request.app.state.settings.fhir_timezone
    based_on = _orders(request).orders_of_studies(
        [text(study, "0020000D") for study in page.matches])
    out: list[Resource] = []
    for study in page.matches:
        uid = text(study, "0020000D")
        out.append(imaging_study_resource(
            study, page.series.get(uid, []), page.instances, timezone=timezone,
            last_updated=page.last_updated.get(uid),
            based_on=[i for i in map(order_id_of, based_on.get(uid, [])) if i]))
    return out


def _orders(request: Request) -> Orders:
    return Orders(acting_archive(request), request.app.state.worklist)


def _study_of_order(request: Request) -> Callable[[str], str | None]:
    def study_of(logical_id: str) -> str | None:
        step = step_id_of(logical_id)
        return _orders(request).study_of_order(step) if step else None
    return study_of


def _link(request: Request, kind: SearchKind, relation: str, offset: int, count: int,
          ignored: tuple[str, ...]) -> BundleLink:
    # FHIR R4 search §3.1.1.5.7: the self link shows the parameters actually used.
    kept = [(k, v) for k, v in request.query_params.multi_items()
            if k not in ("_count", "_getpagesoffset", *ignored)]
    query = urlencode([*kept, ("_count", str(count)), ("_getpagesoffset", str(offset))])
    return BundleLink(relation=relation, url=f"{fhir_base(request)}/fhir/{kind}?{query}")


def _search(request: Request, kind: SearchKind) -> Response:
    search = _parse(request, kind)
    page = _page(request, kind, search, Action.QUERY)
    base = fhir_base(request)
    ignored = search.ignored
    links = [_link(request, kind, "self", search.offset, search.count, ignored)]
    if search.count and search.offset + search.count < page.total:
        links.append(_link(request, kind, "next", search.offset + search.count, search.count,
                           ignored))
    if search.offset > 0:
        links.append(_link(request, kind, "previous",
                           max(0, search.offset - max(search.count, 1)), search.count,
                           ignored))
    bundle = Bundle(
        type="searchset", total=page.total, link=links,
        meta=Meta(lastUpdated=datetime.now(UTC)),
        entry=[BundleEntry(fullUrl=f"{base}/fhir/{kind}/{r.id}", resource=r,
                           search=BundleEntrySearch(mode="match"))
               for r in _resources(request, kind, page)] or None,
    )
    return fhir_response(bundle)


@router.get("/fhir/metadata", summary="FHIR CapabilityStatement (what this server does)")
def metadata(request: Request) -> Response:
    return fhir_response(capability_statement(fhir_base(request), SERVICE_REQUEST_PARAMS))


@router.get("/fhir/ImagingStudy", summary="Search ImagingStudy (FHIR R4)")
def search_imaging_studies(request: Request) -> Response:
    return _search(request, "ImagingStudy")


@router.get("/fhir/Patient", summary="Search Patient (FHIR R4)")
def search_patients(request: Request) -> Response:
    return _search(request, "Patient")


@router.get("/fhir/ImagingStudy/{study}", summary="Read an ImagingStudy (FHIR R4)")
def read_imaging_study(request: Request, study: str) -> Response:
    uid = study_uid_of(study)
    search = Search(SearchBuilder(_systems(request), 1, 1).build(
        [("_id", study)], "ImagingStudy", strict=False).filter,
        RecordConditions(matches_nothing=uid is None), 1, 0, ())
    resources = _resources(request, "ImagingStudy",
                           _page(request, "ImagingStudy", search, Action.VIEW, uid))
    if not resources:
        raise NotFound(f"ImagingStudy/{study[:80]} is not in the archive (its id is the "
                       "Study Instance UID)")
    return fhir_response(resources[0])


@router.get("/fhir/Patient/{patient_id}", summary="Read a Patient (FHIR R4)")
def read_patient(request: Request, patient_id: str) -> Response:
    key = patient_key_of(patient_id)
    search = Search(SearchBuilder(_systems(request), 1, 1).build([], "Patient",
                                                                 strict=False).filter,
                    RecordConditions(patient_key=key, matches_nothing=key is None), 1, 0, ())
    resources = _resources(request, "Patient", _page(request, "Patient", search, Action.VIEW))
    if not resources:
        raise NotFound(f"Patient/{patient_id[:80]} is not in the archive")
    return fhir_response(resources[0])


@router.get("/fhir/Endpoint/{endpoint_id}", summary="Read an Endpoint (FHIR R4)")
def read_endpoint(request: Request, endpoint_id: str) -> Response:
    endpoint = endpoints(fhir_base(request)).get(endpoint_id)
    if endpoint is None:
        raise NotFound(f"Endpoint/{endpoint_id[:80]} does not exist; the endpoints are "
                       f"{', '.join(endpoints('').keys())}")
    return fhir_response(endpoint)


@router.get("/fhir/{resource_type}", include_in_schema=False)
def unknown_type(resource_type: str) -> Response:
    return fhir_error(404, f"resource type {resource_type[:80]!r} is not served here; see "
                           "/fhir/metadata for what is")


@router.get("/fhir/{resource_type}/{logical_id}", include_in_schema=False)
def unknown_type_read(resource_type: str, logical_id: str) -> Response:
    return unknown_type(resource_type)


def unsupported(method: str, path: str, status: int) -> Response:
    """A request no /fhir route answers (history, vread, operations, other writes)."""
    return fhir_error(status, f"{method} {path[:120]} is not supported (read and search; "
                              "writes only of ServiceRequest and transaction Bundles; no "
                              "history, vread or operations); see /fhir/metadata")


# IHE ITI TF-1 §29 / TF-2 §3.106 Invoke Image Display: parameters the viewer reads.
_IID_PARAMS = ("requestType", "studyUID", "accessionNumber", "patientID",
               "mostRecentResults", "keyImagesOnly", "lowerDateTime", "upperDateTime",
               "modalitiesInStudy", "viewerType", "diagnosticQuality")


@router.get("/IHEInvokeImageDisplay", summary="IHE Invoke Image Display: open the viewer")
def invoke_image_display(request: Request) -> Response:
    """Sends the browser (303) to the viewer's IID link with the same parameters. Refuses
    (400) a request the viewer could not serve: requestType STUDY without studyUID or
    accessionNumber, PATIENT without patientID, or another requestType."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k in _IID_PARAMS]
    given = dict(params)
    request_type = given.get("requestType", "")
    if request_type == "STUDY" and not (given.get("studyUID") or given.get("accessionNumber")):
        raise QueryError("requestType=STUDY needs studyUID or accessionNumber")
    if request_type == "PATIENT" and not given.get("patientID"):
        raise QueryError("requestType=PATIENT needs patientID")
    if request_type not in ("STUDY", "PATIENT"):
        raise QueryError(f"requestType={request_type[:40]!r}: expected STUDY or PATIENT "
                         "(IHE IID)")
    return RedirectResponse(f"/viewer/?{urlencode(params)}", status_code=303)


def capability_statement(base: str, order_params: dict[str, Any] | None = None
                         ) -> CapabilityStatement:
    """What /fhir does, exactly: generated from the parameter tables the searches use
    (`order_params`: ServiceRequest's, from web/fhir_orders.py)."""
    def params(table: dict[str, Any]) -> list[CapabilityStatementRestResourceSearchParam]:
        return [CapabilityStatementRestResourceSearchParam(name=name, type=kind,
                                                           documentation=doc)
                for name, (kind, doc) in {**table, "_count": ("number", "page size"),
                                          "_getpagesoffset": ("number",
                                                              "index of the page's first "
                                                              "match")}.items()]

    def interactions(*codes: str) -> list[CapabilityStatementRestResourceInteraction]:
        return [CapabilityStatementRestResourceInteraction(code=c) for c in codes]

    return CapabilityStatement(
        status="active", date=datetime.now(UTC), kind="instance",
        fhirVersion="4.0.1", format=["json"], publisher="minipacs",
        software=CapabilityStatementSoftware(name="minipacs", version=__version__),
        implementation=CapabilityStatementImplementation(description="minipacs FHIR door",
                                                         url=f"{base}/fhir"),
        rest=[CapabilityStatementRest(
            mode="server",
            security=CapabilityStatementRestSecurity(
                service=[CodeableConcept(coding=[Coding(
                    system="http://terminology.hl7.org/CodeSystem/restful-security-service",
                    code="Basic")])],
                description="Authorization: Bearer <API token> (minipacs token create, "
                            "role emr) or Basic; see docs/security.md"),
            resource=[
                CapabilityStatementRestResource(
                    type="ImagingStudy", interaction=interactions("read", "search-type"),
                    searchParam=params(IMAGING_STUDY_PARAMS)),
                CapabilityStatementRestResource(
                    type="Patient", interaction=interactions("read", "search-type"),
                    searchParam=params(PATIENT_PARAMS)),
                CapabilityStatementRestResource(
                    type="Endpoint", interaction=interactions("read"),
                    documentation="dicom-wado-rs (DICOMweb base) and ihe-iid (viewer)"),
                CapabilityStatementRestResource(
                    type="ServiceRequest",
                    interaction=interactions("read", "search-type", "create", "update"),
                    versioning="versioned-update", updateCreate=False,
                    conditionalCreate=False, conditionalUpdate=False,
                    documentation="imaging orders: each is a Modality Worklist item; "
                                  "cancel with status revoked (docs/emr-integration.md)",
                    searchParam=params(order_params or {})),
                CapabilityStatementRestResource(
                    type="DiagnosticReport",
                    interaction=interactions("read", "search-type", "create", "update"),
                    versioning="versioned-update", updateCreate=False,
                    documentation="radiology reports: status final signs (Encapsulated "
                                  "PDF + Basic Text SR stored in the study), amended on a "
                                  "final one makes a new version (docs/emr-integration.md)",
                    searchParam=params(REPORT_PARAMS)),
            ],
            interaction=[CapabilityStatementRestInteraction(
                code="transaction",
                documentation="Patient and ServiceRequest entries (POST), all or none")],
        )],
    )
