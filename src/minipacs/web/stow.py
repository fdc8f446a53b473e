"""STOW-RS (PS3.18 §10.5): store instances posted as multipart/related.

The body is spooled part by part to temporary files as it arrives (never held whole in
memory), then each part goes through `Archive.ingest`, the same path C-STORE takes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from minipacs.archive import Archive, IngestResult
from minipacs.dicom.completeness import check_complete
from minipacs.dicom.header import ParsedInstance, parse_instance
from minipacs.dicom.json_model import dumps, element
from minipacs.errors import Conflict, InvalidAttribute, InvalidInstance, StorageError
from minipacs.storage.scratch import scratch_folder, stow_spool
from minipacs.web.auth import acting_archive
from minipacs.web.dicomweb import DICOM_JSON, _uid, check_uid, dicomweb_base
from minipacs.web.multipart import MultipartError, MultipartSpooler, boundary_of
from minipacs.web.negotiation import parse_accept

log = logging.getLogger(__name__)

router = APIRouter(prefix="/dicom-web", tags=["DICOMweb"])

# Failure Reason (0008,1197) values, PS3.18 Table I.2-2; 0xA901 and 0x0111 are ours
# (PS3.18 I.2.2 allows implementation codes), listed in docs/conformance.md.
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
STUDY_MISMATCH = 0xA901
CANNOT_UNDERSTAND = 0xC000
DUPLICATE_SOP_INSTANCE = 0x0111  # PS3.7 C.4: Duplicate SOP Instance
PROCESSING_FAILURE = 0x0110
# Warning Reason (0008,1196): PS3.18 Table I.2-1, B000 Coercion of data elements... we use
# none; a replaced duplicate is reported as a plain success (and audited).


@dataclass(frozen=True)
class PartOutcome:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    failure: int | None = None
    detail: str = ""


def _outcome_of_part(archive: Archive, path: Path, media: str, expected_study: str | None,
                     received_from: str) -> PartOutcome:
    if media.split(";")[0].strip().lower() not in ("application/dicom", ""):
        return PartOutcome("", "", "", "", CANNOT_UNDERSTAND,
                           f"part type {media!r} is not application/dicom")
    parsed: ParsedInstance | None = None
    refusal: InvalidInstance | None = None
    try:
        parsed = parse_instance(path)
    except InvalidInstance as exc:
        refusal = exc
    try:
        # Whatever the header said: a part cut short is refused for that, naming the
        # element it ends in (and the instance, when its UIDs survived the cut).
        check_complete(path)
    except InvalidInstance as exc:
        refusal = exc
    if refusal is not None or parsed is None:
        ids = ("", "", "", "") if parsed is None else _ids(parsed)
        code = DOES_NOT_MATCH_SOP_CLASS if isinstance(refusal, InvalidAttribute) \
            else CANNOT_UNDERSTAND
        return PartOutcome(*ids, code, str(refusal))
    a = parsed.attributes
    ids = _ids(parsed)
    if expected_study is not None and a.study_instance_uid != expected_study:
        return PartOutcome(*ids, STUDY_MISMATCH,
                           f"StudyInstanceUID {a.study_instance_uid} is not the study "
                           f"{expected_study} of the request URL")
    try:
        result: IngestResult = archive.ingest(path, received_from=received_from)
    except InvalidAttribute as exc:
        return PartOutcome(*ids, DOES_NOT_MATCH_SOP_CLASS, str(exc))
    except InvalidInstance as exc:
        return PartOutcome(*ids, CANNOT_UNDERSTAND, str(exc))
    except Conflict as exc:
        return PartOutcome(*ids, DUPLICATE_SOP_INSTANCE, str(exc))
    except StorageError as exc:
        return PartOutcome(*ids, OUT_OF_RESOURCES, str(exc))
    return PartOutcome(result.sop_class_uid, result.sop_instance_uid,
                       result.study_instance_uid, result.series_instance_uid)


def _ids(parsed: ParsedInstance) -> tuple[str, str, str, str]:
    a = parsed.attributes
    return a.sop_class_uid, a.sop_instance_uid, a.study_instance_uid, a.series_instance_uid


def _response_body(outcomes: list[PartOutcome], base: str, study: str | None
                   ) -> dict[str, Any]:
    """Store Instances Response Module, PS3.18 Annex I (Table I.2-1)."""
    stored = [o for o in outcomes if o.failure is None]
    failed = [o for o in outcomes if o.failure is not None]
    body: dict[str, Any] = {}
    studies = {o.study_instance_uid for o in stored}
    study_uid = study or (studies.pop() if len(studies) == 1 else None)
    body["00081190"] = element("00081190", f"{base}/studies/{study_uid}" if study_uid else None)
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [
            {"00081150": element("00081150", o.sop_class_uid),
             "00081155": element("00081155", o.sop_instance_uid),
             "00081197": element("00081197", o.failure)}
            for o in failed
        ]}
    body["00081199"] = {"vr": "SQ", "Value": [
        {"00081150": element("00081150", o.sop_class_uid),
         "00081155": element("00081155", o.sop_instance_uid),
         "00081190": element("00081190", f"{base}/studies/{o.study_instance_uid}/series/"
                             f"{o.series_instance_uid}/instances/{o.sop_instance_uid}")}
        for o in stored
    ]} if stored else {"vr": "SQ"}
    return body


async def _store(request: Request, study: str | None) -> Response:
    settings = request.app.state.settings
    archive: Archive = acting_archive(request)
    content_type = request.headers.get("content-type", "")
    main = content_type.split(";")[0].strip().lower()
    part_type = ""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "type":
            part_type = value.strip().strip('"').lower()
    boundary = boundary_of(content_type)
    if main != "multipart/related" or part_type not in ("application/dicom", ""):
        return JSONResponse(
            {"error": f"Content-Type {content_type!r} is not supported; send "
                      'multipart/related; type="application/dicom" (PS3.18 §10.5.1)'},
            status_code=415,
        )
    if boundary is None:
        return JSONResponse({"error": "the multipart/related Content-Type has no boundary"},
                            status_code=400)
    accept = request.headers.get("accept")
    if accept and not any(r.media in ("*/*", "application/*", DICOM_JSON, "application/json")
                          for r in parse_accept(accept)):
        return JSONResponse({"error": f"the response is {DICOM_JSON}; {accept!r} excludes it"},
                            status_code=406)
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return _too_large(int(declared), limit)
    received_from = f"STOW-RS {request.client.host if request.client else '?'}"
    # Under the data dir, marked in use while this request runs: what a killed process
    # leaves there (patient data) is swept at the next start and by `minipacs verify`.
    with scratch_folder(stow_spool(settings.data_dir), "request-") as folder:
        spooler = MultipartSpooler(boundary, folder)
        total = 0
        try:
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    return _too_large(total, limit)
                await run_in_threadpool(spooler.feed, chunk)
            parts = spooler.finish()
        except MultipartError as exc:
            return JSONResponse({"error": f"malformed multipart body: {exc}"}, status_code=400)
        if not parts:
            return JSONResponse({"error": "the multipart body holds no parts"}, status_code=400)
        outcomes = []
        for part in parts:
            outcome = await run_in_threadpool(
                _outcome_of_part, archive, part.path, part.headers.get("content-type", ""),
                study, received_from,
            )
            if outcome.failure is not None:
                log.warning("STOW-RS part %s refused (0x%04X): %s", part.path.name,
                            outcome.failure, outcome.detail)
            outcomes.append(outcome)
            part.path.unlink(missing_ok=True)
    body = _response_body(outcomes, dicomweb_base(request), study)
    failures = sum(o.failure is not None for o in outcomes)
    # PS3.18 §10.5.3.1: 200 all stored, 202 some failed, 409 none stored.
    status = 200 if failures == 0 else 409 if failures == len(outcomes) else 202
    return Response(dumps(body), status_code=status, media_type=DICOM_JSON)


def _too_large(size: int, limit: int) -> Response:
    return JSONResponse(
        {"error": f"request body of {size} bytes exceeds the limit of {limit} bytes "
                  "(MINIPACS_MAX_UPLOAD_BYTES); send fewer instances per request"},
        status_code=413,
    )


# The body is read as a stream (not through a FastAPI body parameter), so describe it here.
_OPENAPI: dict[str, Any] = {
    "requestBody": {"required": True, "content": {
        'multipart/related; type="application/dicom"': {
            "schema": {"type": "string", "format": "binary"}}}},
    "responses": {
        "202": {"description": "Some instances stored, some failed (see FailedSOPSequence)"},
        "400": {"description": "Malformed multipart body"},
        "409": {"description": "No instance stored (see FailedSOPSequence)"},
        "413": {"description": "Body larger than MINIPACS_MAX_UPLOAD_BYTES"},
        "415": {"description": "Content-Type is not multipart/related; "
                               'type="application/dicom"'},
    },
}


@router.post("/studies", summary="STOW-RS: store instances", openapi_extra=_OPENAPI)
async def store_instances(request: Request) -> Response:
    """Body: multipart/related; type="application/dicom", one Part-10 instance per part.
    200 all stored, 202 some failed, 409 none stored (FailedSOPSequence says why),
    415 other media types, 413 over MINIPACS_MAX_UPLOAD_BYTES."""
    return await _store(request, None)


@router.post("/studies/{study}", summary="STOW-RS: store instances into one study",
             openapi_extra=_OPENAPI)
async def store_study_instances(request: Request, study: str = _uid("StudyInstanceUID")
                                ) -> Response:
    """As POST /studies; instances of another study fail with reason 0xA901."""
    return await _store(request, check_uid(study, "StudyInstanceUID"))
