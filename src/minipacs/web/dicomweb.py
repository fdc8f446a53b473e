"""DICOMweb routes (PS3.18): QIDO-RS search, WADO-RS retrieve and metadata.

Each route translates HTTP to one `Archive` call and back; nothing here touches the
index or the blob store directly.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response, StreamingResponse

from minipacs.access.roles import Action
from minipacs.archive import Archive, InstanceRecord, QueryResult
from minipacs.dicom.json_model import dumps, element, with_base_url
from minipacs.dicom.matching import Filter, Match
from minipacs.dicom.transcode import transcode_stream
from minipacs.dicom.uids import is_safe_uid
from minipacs.errors import NotAcceptable, QueryError
from minipacs.index.query import Level
from minipacs.query_results import SERIES_KEYS, STUDY_KEYS
from minipacs.web.auth import acting_archive_dependency
from minipacs.web.multipart import (
    encode_parts,
    in_batches,
    multipart_content_type,
    new_boundary,
)
from minipacs.web.negotiation import instance_transfer_syntax, parse_accept
from minipacs.web.query_params import QidoQuery, parse_qido

router = APIRouter(prefix="/dicom-web", tags=["DICOMweb"])
DOWNLOAD = Action.DOWNLOAD  # whole instances: the files themselves

DICOM_JSON = "application/dicom+json"
_GZIP_MIN = 1024
# Response headers a browser viewer on another origin may read (CORS).
EXPOSED_HEADERS = ["ETag", "Warning", "Content-Location", "Content-Type", "Content-Encoding",
                   "X-Photometric-Interpretation", "X-Samples-Per-Pixel", "X-Bits-Allocated",
                   "X-Pixel-Representation", "X-Planar-Configuration"]


async def get_archive(request: Request) -> Archive:
    return await acting_archive_dependency(request)


def dicomweb_base(request: Request) -> str:
    """Base URL of the DICOMweb service as clients see it."""
    settings = request.app.state.settings
    if settings.public_url:
        return f"{settings.public_url.rstrip('/')}/dicom-web"
    host = request.headers.get("host", "")
    if host and ":" not in host.rsplit("]", 1)[-1]:
        # Some clients (dicomweb-client among them) send Host without the port.
        host = f"{host}:{settings.http_port}"
    root = f"{request.url.scheme}://{host}" if host else str(request.base_url).rstrip("/")
    return f"{root}/dicom-web"


ArchiveDep = Annotated[Archive, Depends(get_archive)]


def _uid(name: str) -> Any:
    return Path(description=f"{name} (digits and dots, at most 64 characters)")


def check_uid(value: str, name: str) -> str:
    if not is_safe_uid(value):
        raise QueryError(f"{name} {value[:80]!r} is not a DICOM UID")
    return value


# ---------------------------------------------------------------------- QIDO-RS
def _qido(request: Request, archive: Archive, level: Level, fixed: dict[str, str]
          ) -> Response:
    query: QidoQuery = parse_qido(list(request.query_params.multi_items()))
    matches = [m for m in query.filter.matches if m.key not in fixed]
    for key, uid in fixed.items():
        matches.append(Match(key, "single", (uid,), "UI"))
    filt = Filter(tuple(matches), fuzzy=query.filter.fuzzy)
    include = query.include
    if include != "all":
        # PS3.18 Table 6.7.1-2a: searching series or instances across studies (or instances
        # across a study's series) also returns the higher levels' attributes.
        implied: tuple[str, ...] = ()
        if level in ("SERIES", "IMAGE") and "0020000D" not in fixed:
            implied += STUDY_KEYS
        if level == "IMAGE" and "0020000E" not in fixed:
            implied += SERIES_KEYS
        include = tuple(dict.fromkeys((*include, *implied)))
    result: QueryResult = archive.find(
        level, filt, include=include, limit=query.limit, offset=query.offset
    )
    base = dicomweb_base(request)
    for model in result.matches:
        model["00081190"] = element("00081190", _retrieve_url(base, level, model))
    headers = {}
    if result.truncated:
        # PS3.18 §8.3.4.4: say when the result set was cut.
        headers["Warning"] = (
            '299 minipacs "The number of results exceeded the maximum supported; '
            'use limit and offset to page, or narrow the query"'
        )
    return json_response(request, dumps(result.matches), headers=headers)


def _retrieve_url(base: str, level: Level, model: dict[str, Any]) -> str:
    def uid(key: str) -> str:
        return str(model.get(key, {}).get("Value", [""])[0])

    url = f"{base}/studies/{uid('0020000D')}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{uid('0020000E')}"
    if level == "IMAGE":
        url += f"/instances/{uid('00080018')}"
    return url


_QIDO_PARAMETERS = (
    ("limit", "Most matches to return (capped by MINIPACS_MAX_QUERY_RESULTS)"),
    ("offset", "Matches to skip, for paging"),
    ("fuzzymatching", "true: person names match ignoring case and diacritics (đ → d), from "
     "the start of any name component"),
    ("includefield", "Extra attributes to return: keywords or tags, comma-separated, or "
     "'all'"),
)


def qido_openapi() -> dict[str, Any]:
    """The QIDO-RS parameters in OpenAPI (as FastAPI would describe optional string query
    parameters); `parse_qido` reads them (plus any attribute key such as
    PatientName=nguyen* or 00100020=BN1) and reports bad values. Documentation only,
    not a dependency: FastAPI would parse and validate them on every request for
    nothing (docs/performance.md, "QIDO and per-request cost, fourth pass")."""
    return {"parameters": [
        {"name": name, "in": "query", "required": False, "description": description,
         "schema": {"anyOf": [{"type": "string"}, {"type": "null"}],
                    "title": name.capitalize(), "description": description}}
        for name, description in _QIDO_PARAMETERS]}


@router.get("/studies", summary="QIDO-RS: search for studies",
            openapi_extra=qido_openapi())
def search_studies(request: Request, archive: ArchiveDep) -> Response:
    """Attribute matching by keyword or tag (`PatientName=nguyen*`, `00100020=BN1`), date
    ranges (`StudyDate=20240101-`), UID lists, `fuzzymatching`, `includefield`, `limit`,
    `offset`."""
    return _qido(request, archive, "STUDY", {})


@router.get("/series", summary="QIDO-RS: search for series in all studies",
            openapi_extra=qido_openapi())
def search_all_series(request: Request, archive: ArchiveDep) -> Response:
    return _qido(request, archive, "SERIES", {})


@router.get("/instances", summary="QIDO-RS: search for instances in all studies",
            openapi_extra=qido_openapi())
def search_all_instances(request: Request, archive: ArchiveDep) -> Response:
    return _qido(request, archive, "IMAGE", {})


@router.get("/studies/{study}/series", summary="QIDO-RS: search for a study's series",
            openapi_extra=qido_openapi())
def search_series(request: Request, archive: ArchiveDep, study: str = _uid("StudyInstanceUID")
                  ) -> Response:
    return _qido(request, archive, "SERIES", {"0020000D": check_uid(study, "StudyInstanceUID")})


@router.get("/studies/{study}/instances", summary="QIDO-RS: search for a study's instances",
            openapi_extra=qido_openapi())
def search_study_instances(
    request: Request, archive: ArchiveDep, study: str = _uid("StudyInstanceUID")
) -> Response:
    return _qido(request, archive, "IMAGE", {"0020000D": check_uid(study, "StudyInstanceUID")})


@router.get(
    "/studies/{study}/series/{series}/instances",
    summary="QIDO-RS: search for a series' instances", openapi_extra=qido_openapi(),
)
def search_series_instances(
    request: Request,
    archive: ArchiveDep,
    study: str = _uid("StudyInstanceUID"),
    series: str = _uid("SeriesInstanceUID"),
) -> Response:
    fixed = {
        "0020000D": check_uid(study, "StudyInstanceUID"),
        "0020000E": check_uid(series, "SeriesInstanceUID"),
    }
    return _qido(request, archive, "IMAGE", fixed)


# ---------------------------------------------------------------------- WADO-RS
def _retrieve(request: Request, archive: Archive, records: list[InstanceRecord]) -> Response:
    """Instances as multipart/related; type="application/dicom" in the negotiated syntax:
    as stored for transfer-syntax=*, Explicit VR LE when none is named (PS3.18
    §8.7.3.5.2), transcoded per instance when it is stored otherwise."""
    target = instance_transfer_syntax(request.headers.get("accept"),
                                      [r.transfer_syntax_uid for r in records])
    boundary = new_boundary()

    def parts() -> Iterator[tuple[dict[str, str], Iterable[bytes]]]:
        for record in records:
            if target is None or record.transfer_syntax_uid == target:
                served = archive.serve_instance(record)
                yield (
                    {"Content-Type": "application/dicom; transfer-syntax="
                     + record.transfer_syntax_uid, "Content-Length": str(served.length)},
                    served.chunks,
                )
            else:
                # Transcoded one frame at a time: the peak is the header plus one frame
                # per request, not the instance decoded whole (docs/conformance.md §2).
                with archive.open_instance(record) as fh:
                    stream = transcode_stream(fh, target)
                    yield (
                        {"Content-Type": f"application/dicom; transfer-syntax={target}",
                         "Content-Length": str(stream.length)},
                        stream.chunks,
                    )

    return StreamingResponse(
        in_batches(encode_parts(parts(), boundary)),
        media_type=multipart_content_type("application/dicom", boundary, target),
    )


@router.get("/studies/{study}", summary="WADO-RS: retrieve a study's instances")
def retrieve_study(request: Request, archive: ArchiveDep, study: str = _uid("StudyInstanceUID")
                   ) -> Response:
    records = archive.instances(check_uid(study, "StudyInstanceUID"), action=DOWNLOAD)
    return _retrieve(request, archive, records)


@router.get("/studies/{study}/series/{series}", summary="WADO-RS: retrieve a series")
def retrieve_series(
    request: Request,
    archive: ArchiveDep,
    study: str = _uid("StudyInstanceUID"),
    series: str = _uid("SeriesInstanceUID"),
) -> Response:
    records = archive.instances(
        check_uid(study, "StudyInstanceUID"), check_uid(series, "SeriesInstanceUID"),
        action=DOWNLOAD,
    )
    return _retrieve(request, archive, records)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}",
    summary="WADO-RS: retrieve one instance, byte-exact as stored",
)
def retrieve_instance(
    request: Request,
    archive: ArchiveDep,
    study: str = _uid("StudyInstanceUID"),
    series: str = _uid("SeriesInstanceUID"),
    instance: str = _uid("SOPInstanceUID"),
) -> Response:
    records = archive.instances(
        check_uid(study, "StudyInstanceUID"),
        check_uid(series, "SeriesInstanceUID"),
        check_uid(instance, "SOPInstanceUID"), action=DOWNLOAD,
    )
    return _retrieve(request, archive, records)


def _metadata(request: Request, texts: list[str]) -> Response:
    body = with_base_url("[" + ",".join(texts) + "]", dicomweb_base(request))
    return json_response(request, body, etag=True)


def json_response(request: Request, body: str, *, etag: bool = False,
                  headers: dict[str, str] | None = None) -> Response:
    """application/dicom+json, gzip-compressed when the client accepts it; with an ETag
    (and 304 on a matching If-None-Match, RFC 9110 §13.1.2) when `etag`."""
    accept = request.headers.get("accept")
    if accept and not any(r.media in ("*/*", "application/*", DICOM_JSON, "application/json")
                          for r in parse_accept(accept)):
        raise NotAcceptable(f"DICOM JSON is all we return here, and {accept!r} excludes it; "
                            f"ask for {DICOM_JSON}")
    out = dict(headers or {})
    out["Vary"] = "Accept-Encoding"
    data = body.encode("utf-8")
    if etag:
        tag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        out["ETag"] = tag
        wanted = request.headers.get("if-none-match", "")
        candidates = {c.strip().removeprefix("W/") for c in wanted.split(",")}
        if tag in candidates or "*" in candidates:
            return Response(status_code=304, headers=out)
    if len(data) >= _GZIP_MIN and "gzip" in request.headers.get("accept-encoding", "").lower():
        data = gzip.compress(data, compresslevel=5)
        out["Content-Encoding"] = "gzip"
    return Response(data, media_type=DICOM_JSON, headers=out)


@router.get("/studies/{study}/metadata", summary="WADO-RS: metadata of a study")
def study_metadata(request: Request, archive: ArchiveDep, study: str = _uid("StudyInstanceUID")
                   ) -> Response:
    return _metadata(request, archive.metadata(check_uid(study, "StudyInstanceUID")))


@router.get("/studies/{study}/series/{series}/metadata", summary="WADO-RS: metadata of a series")
def series_metadata(
    request: Request,
    archive: ArchiveDep,
    study: str = _uid("StudyInstanceUID"),
    series: str = _uid("SeriesInstanceUID"),
) -> Response:
    texts = archive.metadata(
        check_uid(study, "StudyInstanceUID"), check_uid(series, "SeriesInstanceUID")
    )
    return _metadata(request, texts)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/metadata",
    summary="WADO-RS: metadata of one instance",
)
def instance_metadata(
    request: Request,
    archive: ArchiveDep,
    study: str = _uid("StudyInstanceUID"),
    series: str = _uid("SeriesInstanceUID"),
    instance: str = _uid("SOPInstanceUID"),
) -> Response:
    texts = archive.metadata(
        check_uid(study, "StudyInstanceUID"),
        check_uid(series, "SeriesInstanceUID"),
        check_uid(instance, "SOPInstanceUID"),
    )
    return _metadata(request, texts)
