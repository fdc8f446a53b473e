"""FHIR R4 ServiceRequest at /fhir: create, read, search, update (If-Match), and the
transaction Bundle (Patient + ServiceRequest) at POST /fhir. Orders are worklist items
(`emr/orders.py`); the mapping is `fhir/service_request.py`.

Routes translate: the body is parsed and validated with the fhir.resources R4B models,
the order service decides (it checks the caller may `manage-worklist` and audits).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from fhir.resources.R4B.bundle import (
    Bundle,
    BundleEntry,
    BundleEntryResponse,
    BundleEntrySearch,
    BundleLink,
)
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.servicerequest import ServiceRequest
from pydantic import ValidationError

from minipacs.dicom.matching import Filter, Match
from minipacs.emr.orders import Order, Orders
from minipacs.errors import InvalidRequest, NotFound, QueryError
from minipacs.fhir.ids import order_id_of, patient_id_of, patient_key_of, step_id_of
from minipacs.fhir.resources import DICOM_UID_SYSTEM
from minipacs.fhir.service_request import (
    ORDER_STATUS,
    SERVICE_REQUEST_PARAMS,
    OrderDraft,
    PatientFacts,
    order_draft,
    patient_facts,
    service_request_resource,
    today_in,
)
from minipacs.patient_identity import IdentitySystems
from minipacs.web.auth import acting_archive
from minipacs.web.fhir import fhir_base, fhir_response
from minipacs.worklist import COMPLETED, IN_PROGRESS, SCHEDULED, OtherPatientID

router = APIRouter(tags=["fhir"])
_SEARCH_STATUS = {"active": (SCHEDULED, IN_PROGRESS), "completed": (COMPLETED,),
                  **{k: (v,) for k, v in ORDER_STATUS.items()
                     if k not in ("active", "completed", "draft")}}
_PAGE = {"_count", "_getpagesoffset", "_format", "_pretty"}


def orders_of(request: Request) -> Orders:
    """The order service, acting for the caller."""
    return Orders(acting_archive(request), request.app.state.worklist)


class Directory:
    """Who an order's subject is, from the configured systems and the index."""

    def __init__(self, orders: Orders, systems: IdentitySystems) -> None:
        self.orders = orders
        self.systems = systems

    def by_identifier(self, system: str, value: str) -> PatientFacts:
        named = self.systems.named_by(system) if system else self.systems.hospital
        if named is None:
            raise InvalidRequest(f"subject.identifier.system {system[:80]!r} is not a "
                                 "configured patient identifier system (hospital ID, CCCD,"
                                 " BHYT; see docs/emr-integration.md)")
        if named is self.systems.hospital:
            return self.by_key(value, "")
        other = OtherPatientID(value, named.dicom_issuer)
        known = self.orders.known_patient(other_id=value)
        if known is None:  # not seen yet: the national ID is the PatientID (documented)
            return PatientFacts(value, named.dicom_issuer, other_patient_ids=(other,))
        return PatientFacts(known.patient_id, known.issuer_of_patient_id,
                            known.patient_name, known.patient_birth_date,
                            known.patient_sex, (other,))

    def by_key(self, patient_id: str, issuer: str) -> PatientFacts:
        known = self.orders.known_patient(patient_id, issuer)
        if known is None:
            return PatientFacts(patient_id, issuer)
        return PatientFacts(known.patient_id, known.issuer_of_patient_id,
                            known.patient_name, known.patient_birth_date,
                            known.patient_sex)


def _settings(request: Request) -> Any:
    return request.app.state.settings


def _systems(request: Request) -> IdentitySystems:
    return IdentitySystems.from_settings(_settings(request))


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be one FHIR resource (a JSON object)")
    return body


def _validated(body: dict[str, Any], model: type[Any]) -> None:
    """Check a resource against its R4B model; a 400 naming the first problems."""
    try:
        model.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise InvalidRequest(f"{model.__name__} is not valid FHIR R4: {problems}") from None


def _draft(request: Request, orders: Orders, body: dict[str, Any], *, step_id: str = "",
           in_bundle: dict[str, PatientFacts] | None = None) -> OrderDraft:
    _validated(body, ServiceRequest)
    return order_draft(body, step_id=step_id, in_bundle=in_bundle,
                       today=today_in(_settings(request).fhir_timezone),
                       directory=Directory(orders, _systems(request)))


def _etag(order: Order) -> str:
    return f'W/"{order.version}"'


def _answer(request: Request, order: Order, status: int = 200) -> Response:
    response = fhir_response(service_request_resource(
        order, timezone=_settings(request).fhir_timezone), status)
    response.headers["ETag"] = _etag(order)
    if status == 201:
        response.headers["Location"] = (f"{fhir_base(request)}/fhir/ServiceRequest/"
                                        f"{order_id_of(order.step_id)}/_history/"
                                        f"{order.version}")
    return response


def _step(logical_id: str) -> str:
    step = step_id_of(logical_id)
    if step is None:
        raise NotFound(f"ServiceRequest/{logical_id[:80]} does not exist")
    return step


def _if_match(request: Request) -> int | None:
    """The version an If-Match header names (W/"3" or "3"), None when absent."""
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    text = raw.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise InvalidRequest(f"If-Match {raw[:40]!r}: expected W/\"<versionId>\" as the "
                             "ETag of a read gives it")
    return int(text)


@router.post("/fhir/ServiceRequest", summary="Place an order (FHIR ServiceRequest)")
async def create_service_request(request: Request) -> Response:
    orders = orders_of(request)
    draft = _draft(request, orders, await _json(request))
    order = orders.place(draft.item, placer_order_number=draft.placer_order_number)
    return _answer(request, order, 201)


@router.get("/fhir/ServiceRequest/{logical_id}", summary="Read an order (ServiceRequest)")
def read_service_request(request: Request, logical_id: str) -> Response:
    return _answer(request, orders_of(request).get(_step(logical_id)))


@router.put("/fhir/ServiceRequest/{logical_id}",
            summary="Update or cancel an order (status revoked); If-Match: its ETag")
async def update_service_request(request: Request, logical_id: str) -> Response:
    step = _step(logical_id)
    body = await _json(request)
    if body.get("id") not in (None, logical_id):
        raise InvalidRequest(f"the body's id {str(body.get('id'))[:80]!r} is not "
                             f"{logical_id!r} of the URL")
    orders = orders_of(request)
    draft = _draft(request, orders, body, step_id=step)
    order = orders.update(step, draft.item, if_version=_if_match(request),
                          placer_order_number=draft.placer_order_number)
    return _answer(request, order)


def _search_filter(request: Request) -> tuple[Filter, tuple[str, ...], bool]:
    """Search parameters → (worklist Filter, order statuses, matches nothing)."""
    systems = _systems(request)
    matches: list[Match] = []
    statuses: tuple[str, ...] = tuple(ORDER_STATUS.values()) + (IN_PROGRESS,)
    nothing = False
    prefer = request.headers.get("prefer", "").replace(" ", "").lower()
    strict = "handling=strict" in prefer
    for name, value in request.query_params.multi_items():
        if name in _PAGE:
            continue
        if name not in SERVICE_REQUEST_PARAMS and not strict \
                and re.split(r"[:.]", name)[0] not in SERVICE_REQUEST_PARAMS:
            continue  # unknown: ignored, as on the other resources (fhir/search.py)
        if name not in SERVICE_REQUEST_PARAMS:
            raise QueryError(f"search parameter {name[:40]!r} is not supported on "
                             f"ServiceRequest (supported: "
                             f"{', '.join(sorted(SERVICE_REQUEST_PARAMS))})")
        system, _, ident = value.rpartition("|")
        if not ident:
            raise QueryError(f"{name}= has no value")
        if name == "_id":
            step = step_id_of(value)
            nothing |= step is None
            matches.append(Match("00400100.00400009", "single", (step or "",), "SH"))
        elif name == "identifier":
            if system == DICOM_UID_SYSTEM or ident.startswith("urn:oid:"):
                matches.append(Match("0020000D", "single",
                                     (ident.removeprefix("urn:oid:"),), "UI"))
            else:
                matches.append(Match("00080050", "single", (ident,), "SH"))
        elif name in ("patient", "subject"):
            key = patient_key_of(value.rsplit("Patient/", 1)[-1])
            nothing |= key is None
            patient_id, issuer = key or ("", "")
            matches.append(Match("00100020", "single", (patient_id,), "LO"))
            if issuer:
                matches.append(Match("00100021", "single", (issuer,), "LO"))
        elif name in ("patient.identifier", "subject:Patient.identifier"):
            named = systems.named_by(system) if system else systems.hospital
            if named is None:
                nothing = True
            elif named is systems.hospital:
                matches.append(Match("00100020", "single", (ident,), "LO"))
            else:
                matches += [Match("00101002.00100020", "single", (ident,), "LO"),
                            Match("00101002.00100021", "single", (named.dicom_issuer,),
                                  "LO")]
        elif name == "status":
            wanted: set[str] = set()
            for code in value.split(","):
                if code.strip() not in _SEARCH_STATUS:
                    raise QueryError(f"status={value[:40]!r}: expected any of "
                                     f"{', '.join(_SEARCH_STATUS)}")
                wanted |= set(_SEARCH_STATUS[code.strip()])
            statuses = tuple(s for s in statuses if s in wanted)
    return Filter(tuple(matches)), tuple(dict.fromkeys(statuses)), nothing


def _number(name: str, value: str) -> int:
    if not value.isdigit():
        raise QueryError(f"{name}={value[:20]!r} must be a whole number, 0 or more")
    return int(value)


@router.get("/fhir/ServiceRequest", summary="Search orders (FHIR ServiceRequest)")
def search_service_requests(request: Request) -> Response:
    settings = _settings(request)
    params = request.query_params
    count = min(_number("_count", params.get("_count", str(settings.fhir_page_size))),
                settings.max_query_results)
    offset = _number("_getpagesoffset", params.get("_getpagesoffset", "0"))
    filt, statuses, nothing = _search_filter(request)
    found = [] if nothing or count == 0 else orders_of(request).search(
        filt, statuses=statuses, limit=count + 1, offset=offset)
    base = fhir_base(request)

    def link(relation: str, at: int) -> BundleLink:
        kept = [(k, v) for k, v in params.multi_items()
                if k not in ("_count", "_getpagesoffset")]
        query = urlencode([*kept, ("_count", str(count)), ("_getpagesoffset", str(at))])
        return BundleLink(relation=relation, url=f"{base}/fhir/ServiceRequest?{query}")

    links = [link("self", offset)]
    if len(found) > count:
        links.append(link("next", offset + count))
    if offset > 0:
        links.append(link("previous", max(0, offset - max(count, 1))))
    resources = [service_request_resource(o, timezone=settings.fhir_timezone)
                 for o in found[:count]]
    return fhir_response(Bundle(
        type="searchset", link=links,
        entry=[BundleEntry(fullUrl=f"{base}/fhir/ServiceRequest/{r.id}", resource=r,
                           search=BundleEntrySearch(mode="match"))
               for r in resources] or None))


@router.post("/fhir", summary="A transaction Bundle: Patient + ServiceRequest entries")
async def transaction(request: Request) -> Response:
    """FHIR R4 http.html#transaction: every entry or none. Patient entries (POST) say
    who the orders referencing their fullUrl (urn:uuid:) are for; ServiceRequest
    entries (POST) become orders, placed in one database transaction."""
    body = await _json(request)
    _validated(body, Bundle)
    if body.get("resourceType") != "Bundle" or body.get("type") != "transaction":
        raise InvalidRequest("POST /fhir takes a Bundle of type transaction")
    systems = _systems(request)
    orders = orders_of(request)
    patients: dict[str, PatientFacts] = {}
    requests: list[tuple[int, dict[str, Any]]] = []
    for number, entry in enumerate(body.get("entry") or []):
        resource = entry.get("resource") or {}
        kind = resource.get("resourceType")
        method = (entry.get("request") or {}).get("method")
        if method != "POST":
            raise InvalidRequest(f"entry {number}: request.method {method!r}; only POST "
                                 "(create) is supported in a transaction")
        if kind == "Patient":
            _validated(resource, Patient)
            patients[str(entry.get("fullUrl") or "")] = patient_facts(resource, systems)
        elif kind == "ServiceRequest":
            requests.append((number, resource))
        else:
            raise InvalidRequest(f"entry {number}: {str(kind)[:40]!r} is not supported in "
                                 "a transaction (Patient and ServiceRequest are)")
    drafts = []
    for number, resource in requests:
        try:
            drafts.append(_draft(request, orders, resource, in_bundle=patients))
        except InvalidRequest as exc:
            raise InvalidRequest(f"entry {number}: {exc}") from None
    placed = orders.place_all([(d.item, d.placer_order_number) for d in drafts])
    timezone = _settings(request).fhir_timezone
    base = fhir_base(request)
    entries = []
    for entry in body.get("entry") or []:
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == "Patient":
            facts = patients[str(entry.get("fullUrl") or "")]
            location = patient_id_of(facts.patient_id, facts.issuer_of_patient_id)
            entries.append(BundleEntry(response=BundleEntryResponse(
                status="200 OK",
                location=f"Patient/{location}" if location else None)))
        else:
            order = placed.pop(0)
            entries.append(BundleEntry(
                fullUrl=f"{base}/fhir/ServiceRequest/{order_id_of(order.step_id)}",
                resource=service_request_resource(order, timezone=timezone),
                response=BundleEntryResponse(
                    status="201 Created", etag=_etag(order),
                    location=f"ServiceRequest/{order_id_of(order.step_id)}/_history/"
                             f"{order.version}")))
    return fhir_response(Bundle(type="transaction-response", entry=entries or None))

