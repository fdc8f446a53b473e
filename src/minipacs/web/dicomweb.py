"""DICOMweb routes (PS3.18): QIDO-RS search, WADO-RS retrieve and metadata.

Each route translates HTTP to one `Archive` call and back; nothing here touches the
index or the blob store directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response, StreamingResponse

from minipacs.archive import Archive, InstanceRecord, QueryResult
from minipacs.dicom.json_model import dumps, element, with_base_url
from minipacs.dicom.matching import Filter, Match
from minipacs.dicom.uids import is_safe_uid
from minipacs.errors import NotAcceptable, QueryError
from minipacs.index.query import Level
from minipacs.web.multipart import encode_parts, multipart_content_type, new_boundary
from minipacs.web.query_params import QidoQuery, parse_qido

router = APIRouter(prefix="/dicom-web", tags=["DICOMweb"])

DICOM_JSON = "application/dicom+json"


def get_archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


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
    result: QueryResult = archive.find(
        level, filt, include=query.include, limit=query.limit, offset=query.offset
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
    return Response(dumps(result.matches), media_type=DICOM_JSON, headers=headers)


def _retrieve_url(base: str, level: Level, model: dict[str, Any]) -> str:
    def uid(key: str) -> str:
        return str(model.get(key, {}).get("Value", [""])[0])

    url = f"{base}/studies/{uid('0020000D')}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{uid('0020000E')}"
    if level == "IMAGE":
        url += f"/instances/{uid('00080018')}"
    return url


@router.get("/studies", summary="QIDO-RS: search for studies")
def search_studies(request: Request, archive: ArchiveDep) -> Response:
    """Attribute matching by keyword or tag (`PatientName=nguyen*`, `00100020=BN1`), date
    ranges (`StudyDate=20240101-`), UID lists, `fuzzymatching`, `includefield`, `limit`,
    `offset`."""
    return _qido(request, archive, "STUDY", {})


@router.get("/series", summary="QIDO-RS: search for series in all studies")
def search_all_series(request: Request, archive: ArchiveDep) -> Response:
    return _qido(request, archive, "SERIES", {})


@router.get("/instances", summary="QIDO-RS: search for instances in all studies")
def search_all_instances(request: Request, archive: ArchiveDep) -> Response:
    return _qido(request, archive, "IMAGE", {})


@router.get("/studies/{study}/series", summary="QIDO-RS: search for a study's series")
def search_series(request: Request, archive: ArchiveDep, study: str = _uid("StudyInstanceUID")
                  ) -> Response:
    return _qido(request, archive, "SERIES", {"0020000D": check_uid(study, "StudyInstanceUID")})


@router.get("/studies/{study}/instances", summary="QIDO-RS: search for a study's instances")
def search_study_instances(
    request: Request, archive: ArchiveDep, study: str = _uid("StudyInstanceUID")
) -> Response:
    return _qido(request, archive, "IMAGE", {"0020000D": check_uid(study, "StudyInstanceUID")})


@router.get(
    "/studies/{study}/series/{series}/instances",
    summary="QIDO-RS: search for a series' instances",
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
def _requested_transfer_syntax(request: Request) -> str | None:
    """The transfer syntax the Accept header asks for, or None for 'as stored'.

    Only multipart/related; type="application/dicom" (or */*) is served here.
    """
    accept = request.headers.get("accept", "*/*")
    wanted: str | None = None
    acceptable = False
    for media_range in accept.split(","):
        params = [p.strip() for p in media_range.split(";")]
        media = params[0].lower()
        options = {}
        for p in params[1:]:
            name, _, value = p.partition("=")
            options[name.strip().lower()] = value.strip().strip('"')
        if media in ("*/*", "multipart/*") or (
            media == "multipart/related"
            and options.get("type", "application/dicom").lower() == "application/dicom"
        ) or media == "application/dicom":
            acceptable = True
            ts = options.get("transfer-syntax")
            if ts and ts != "*":
                wanted = ts
            else:
                return None
    if not acceptable:
        raise NotAcceptable(
            f"cannot serve instances as {accept!r}; ask for "
            'multipart/related; type="application/dicom"'
        )
    return wanted


def _retrieve(request: Request, archive: Archive, records: list[InstanceRecord]) -> Response:
    wanted = _requested_transfer_syntax(request)
    if wanted is not None:
        mismatched = [r for r in records if r.transfer_syntax_uid != wanted]
        if mismatched:
            raise NotAcceptable(
                f"instance {mismatched[0].sop_instance_uid} is stored as "
                f"{mismatched[0].transfer_syntax_uid} and cannot be sent as {wanted}"
            )
    boundary = new_boundary()

    def parts() -> Iterator[tuple[dict[str, str], Iterator[bytes]]]:
        for record in records:
            yield (
                {"Content-Type": "application/dicom",
                 "Content-Length": str(record.size)},
                archive.stream_instance(record),
            )

    return StreamingResponse(
        encode_parts(parts(), boundary),
        media_type=multipart_content_type("application/dicom", boundary),
    )


@router.get("/studies/{study}", summary="WADO-RS: retrieve a study's instances")
def retrieve_study(request: Request, archive: ArchiveDep, study: str = _uid("StudyInstanceUID")
                   ) -> Response:
    records = archive.instances(check_uid(study, "StudyInstanceUID"))
    return _retrieve(request, archive, records)


@router.get("/studies/{study}/series/{series}", summary="WADO-RS: retrieve a series")
def retrieve_series(
    request: Request,
    archive: ArchiveDep,
    study: str = _uid("StudyInstanceUID"),
    series: str = _uid("SeriesInstanceUID"),
) -> Response:
    records = archive.instances(
        check_uid(study, "StudyInstanceUID"), check_uid(series, "SeriesInstanceUID")
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
        check_uid(instance, "SOPInstanceUID"),
    )
    return _retrieve(request, archive, records)


def _metadata(request: Request, texts: list[str]) -> Response:
    body = with_base_url("[" + ",".join(texts) + "]", dicomweb_base(request))
    return Response(body, media_type=DICOM_JSON)


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
