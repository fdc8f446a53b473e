"""FHIR R4 DiagnosticReport at /fhir: create, read, search, update (If-Match).

Routes translate: the body is validated with the fhir.resources R4B model and mapped
(`fhir/diagnostic_report.py`); the report service (`reports/service.py`) decides: it
checks the caller may `report` (write, sign, amend) or `view`/`query`, and audits.
Status final (or amended, on a final report) signs: the PDF and SR are stored in the study.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response
from fhir.resources.R4B.bundle import Bundle, BundleEntry, BundleEntrySearch, BundleLink
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.meta import Meta

from minipacs.access.roles import Action
from minipacs.errors import InvalidRequest, NotFound, QueryError
from minipacs.fhir.diagnostic_report import (
    FROM_FHIR,
    REPORT_PARAMS,
    diagnostic_report_resource,
    report_draft,
)
from minipacs.fhir.ids import patient_key_of, study_uid_of
from minipacs.fhir.search import SearchBuilder
from minipacs.reports.service import Report, Reports
from minipacs.web.auth import acting_archive
from minipacs.web.fhir import fhir_base, fhir_response
from minipacs.web.fhir_orders import _if_match, _json, _validated

router = APIRouter(tags=["fhir"])


def reports_of(request: Request) -> Reports:
    """The report service, acting for the caller."""
    state = request.app.state
    return Reports(acting_archive(request), state.settings.report_hospital_name,
                   getattr(state, "report_signer", None),
                   oru_outbox=bool(state.settings.hl7_report_peer))


def _id(logical_id: str) -> int:
    if not logical_id.isdigit() or len(logical_id) > 12:
        raise NotFound(f"DiagnosticReport/{logical_id[:80]} does not exist (ids are numbers)")
    return int(logical_id)


def _answer(request: Request, report: Report, status: int = 200) -> Response:
    response = fhir_response(diagnostic_report_resource(report, fhir_base(request)), status)
    response.headers["ETag"] = f'W/"{report.version}"'
    if status == 201:
        response.headers["Location"] = (f"{fhir_base(request)}/fhir/DiagnosticReport/"
                                        f"{report.id}/_history/{report.version}")
    return response


@router.post("/fhir/DiagnosticReport", summary="Write a report (FHIR DiagnosticReport)")
async def create_diagnostic_report(request: Request) -> Response:
    body = await _json(request)
    _validated(body, DiagnosticReport)
    return _answer(request, reports_of(request).create(report_draft(body)), 201)


@router.get("/fhir/DiagnosticReport/{logical_id}", summary="Read a report")
def read_diagnostic_report(request: Request, logical_id: str) -> Response:
    return _answer(request, reports_of(request).get(_id(logical_id)))


@router.put("/fhir/DiagnosticReport/{logical_id}",
            summary="Change, sign (status final) or amend (status amended) a report")
async def update_diagnostic_report(request: Request, logical_id: str) -> Response:
    report_id = _id(logical_id)
    body = await _json(request)
    if body.get("id") not in (None, logical_id):
        raise InvalidRequest(f"the body's id {str(body.get('id'))[:80]!r} is not "
                             f"{logical_id!r} of the URL")
    _validated(body, DiagnosticReport)
    report = reports_of(request).update(report_id, report_draft(body),
                                        if_version=_if_match(request))
    # An amendment is a new report: 201 with its own Location.
    return _answer(request, report, 201 if report.id != report_id else 200)


def _study_uids_of_patient_identifier(request: Request, value: str) -> tuple[str, ...]:
    """Studies of the patient an identifier names (CCCD, BHYT, hospital ID), found by
    the ImagingStudy search (fhir/search.py), so every identifier system works alike."""
    settings = request.app.state.settings
    from minipacs.patient_identity import IdentitySystems

    builder = SearchBuilder(IdentitySystems.from_settings(settings), settings.fhir_page_size,
                            settings.max_query_results)
    search = builder.build([("patient.identifier", value),
                            ("_count", str(settings.max_query_results))], "ImagingStudy",
                           strict=True)
    page = acting_archive(request).search_page("STUDY", search.filter, search.conditions,
                                               action=Action.QUERY, limit=search.count,
                                               offset=0)
    return tuple(str(m.get("0020000D", {}).get("Value", [""])[0]) for m in page.matches)


@router.get("/fhir/DiagnosticReport", summary="Search reports (FHIR DiagnosticReport)")
def search_diagnostic_reports(request: Request) -> Response:
    params = request.query_params
    unknown = sorted(set(params) - set(REPORT_PARAMS) - {"_count", "_format"})
    if unknown:
        raise QueryError(f"DiagnosticReport search parameter {unknown[0]!r} is not "
                         f"supported; supported: {', '.join(REPORT_PARAMS)}, _count")
    study_uids: tuple[str, ...] | None = None
    patient_ids: tuple[str, ...] | None = None
    statuses: list[str] = []
    ids: set[int] | None = None
    for name, value in params.multi_items():
        if name in ("patient", "subject"):
            key = patient_key_of(value.rsplit("Patient/", 1)[-1])
            patient_ids = (key[0],) if key else ("\0",)
        elif name == "patient.identifier":
            study_uids = _study_uids_of_patient_identifier(request, value)
        elif name == "study":
            uid = study_uid_of(value.rsplit("ImagingStudy/", 1)[-1])
            wanted = (uid,) if uid else ()
            study_uids = wanted if study_uids is None else \
                tuple(u for u in study_uids if u in wanted)
        elif name == "status":
            for code in value.split(","):
                if code not in FROM_FHIR:
                    raise QueryError(f"status={code!r}: expected one of "
                                     f"{', '.join(FROM_FHIR)}")
                statuses.append(FROM_FHIR[code])
        elif name == "_id":
            ids = {int(v) for v in value.split(",") if v.isdigit()}
    count = params.get("_count", "100")
    if not count.isdigit():
        raise QueryError(f"_count={count!r}: expected a number")
    found = reports_of(request).search(patient_ids=patient_ids, study_uids=study_uids,
                                       statuses=tuple(statuses), limit=int(count))
    if ids is not None:
        found = [r for r in found if r.id in ids]
    base = fhir_base(request)
    bundle = Bundle(
        type="searchset", total=len(found), meta=Meta(lastUpdated=datetime.now(UTC)),
        link=[BundleLink(relation="self", url=str(request.url))],
        entry=[BundleEntry(fullUrl=f"{base}/fhir/DiagnosticReport/{r.id}",
                           resource=diagnostic_report_resource(r, base),
                           search=BundleEntrySearch(mode="match")) for r in found] or None)
    return fhir_response(bundle)
