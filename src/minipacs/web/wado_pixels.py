"""WADO-RS pixel resources (PS3.18 §10.4): frames, bulk data, rendered, thumbnails.

Translates HTTP to `Imaging` calls and back; the pixel work lives in `dicom/`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from minipacs.archive import Archive, InstanceRecord
from minipacs.dicom.annotation import parse_annotation
from minipacs.dicom.render import (
    DEFAULT_QUALITY,
    RENDERED_MEDIA_TYPES,
    RenderOptions,
    parse_quality,
    parse_viewport,
    parse_window,
)
from minipacs.errors import NotAcceptable, NotFound, QueryError
from minipacs.imaging import CacheWrite, Imaging, describe_part
from minipacs.reports.documents import ENCAPSULATED_PDF
from minipacs.web.dicomweb import ArchiveDep, _uid, check_uid, dicomweb_base
from minipacs.web.multipart import (
    encode_parts,
    in_batches,
    multipart_content_type,
    new_boundary,
)
from minipacs.web.negotiation import frame_choice, rendered_media_type
from minipacs.web.wado_video import is_video, video_response

log = logging.getLogger(__name__)
ENCAPSULATED_DOCUMENT = 0x00420011


def document_bytes(value: bytes) -> bytes:
    """An Encapsulated Document without its padding: an odd-length document is stored
    with one trailing NUL (PS3.3 §A.45.1.4.1); a PDF never ends in one."""
    return value[:-1] if value.endswith(b"\x00") else value

router = APIRouter(prefix="/dicom-web", tags=["DICOMweb pixels"])

INSTANCE = "/studies/{study}/series/{series}/instances/{instance}"
WindowQ = Annotated[str | None, Query(
    description="VOI window: center,width[,function] in modality units (e.g. HU); "
    "function linear (default), linear-exact or sigmoid (PS3.18 §8.3.5.1.4)")]
ViewportQ = Annotated[str | None, Query(
    description="vw,vh[,sx,sy,sw,sh]: scale to fit vw x vh (aspect kept), optionally "
    "after cropping the source region sx,sy,sw,sh (PS3.18 §8.3.5.1.3)")]
QualityQ = Annotated[str | None, Query(description="JPEG quality 1-100 (default 90)")]
AnnotationQ = Annotated[str | None, Query(
    description="patient and/or technique (comma-separated): burn the patient's name, ID, "
    "birth date / the modality, technique and window into the image (PS3.18 §8.3.5.1.1)")]
AcceptQ = Annotated[str | None, Query(
    alias="accept", description="Media type, overriding the Accept header (image/jpeg, image/png)")]


def _record(archive: Archive, study: str, series: str, instance: str) -> InstanceRecord:
    return archive.instances(
        check_uid(study, "StudyInstanceUID"), check_uid(series, "SeriesInstanceUID"),
        check_uid(instance, "SOPInstanceUID"),
    )[0]


def parse_frame_list(text: str, limit: int) -> list[int]:
    """'1,3,5' → [1, 3, 5]; `QueryError` naming the frame list when malformed, when it
    names a frame twice, or when it names more than `limit` frames.

    PS3.18 §10.4.1.1.3 asks for a list of frame numbers; a repeated number would only make
    the server decode and send the same frame again, so repetitions are refused, not
    merged silently: the client learns its list was not what it meant."""
    pieces = text.split(",")
    if len(pieces) > limit:
        raise QueryError(f"frame list names {len(pieces)} frames; at most {limit} per request "
                         "(MINIPACS_HTTP_MAX_FRAMES_PER_REQUEST): split the request")
    try:
        numbers = [int(part) for part in pieces]
    except ValueError as exc:
        raise QueryError(f"frame list {text[:80]!r} must be frame numbers separated by "
                         "commas, e.g. 1,3,5") from exc
    if any(n < 1 for n in numbers):
        raise QueryError(f"frame list {text[:80]!r}: frame numbers start at 1")
    seen: set[int] = set()
    for number in numbers:
        if number in seen:
            raise QueryError(f"frame list {text[:80]!r} names frame {number} twice; name "
                             "each frame once")
        seen.add(number)
    return numbers


def _frame_limit(request: Request) -> int:
    return int(request.app.state.settings.http_max_frames_per_request)


# ---------------------------------------------------------------------- frames
@router.get(INSTANCE + "/frames/{frames}", summary="WADO-RS: retrieve frames")
def retrieve_frames(
    request: Request, archive: ArchiveDep,
    study: str = _uid("StudyInstanceUID"), series: str = _uid("SeriesInstanceUID"),
    instance: str = _uid("SOPInstanceUID"),
    frames: str = Path(description="Frame numbers from 1, each at most once, e.g. 1 or "
                       "1,3,5 (at most MINIPACS_HTTP_MAX_FRAMES_PER_REQUEST)"),
) -> Response:
    """`Accept: multipart/related; type="application/octet-stream"` (default, also for
    `*/*`) gives raw little-endian pixels, decompressed server-side, colour interleaved
    (PlanarConfiguration 0) and YBR JPEG sources as RGB; each part says so in its
    `X-Photometric-Interpretation`, `X-Samples-Per-Pixel`, `X-Bits-Allocated`,
    `X-Pixel-Representation` headers. `type="image/jpeg"`, `image/jp2`, `image/jls`,
    `image/x-dicom-rle`, ... or `transfer-syntax=*` give the bitstreams as stored.
    Frames are read and sent one at a time: the peak is one frame, not the list."""
    record = _record(archive, study, series, instance)
    numbers = parse_frame_list(frames, _frame_limit(request))
    return _frames_response(request, archive, record, numbers)


def _frames_response(request: Request, archive: Archive, record: InstanceRecord,
                     numbers: list[int]) -> Response:
    choice = frame_choice(request.headers.get("accept"), record.transfer_syntax_uid)
    content_type = f"{choice.media}; transfer-syntax={choice.transfer_syntax}"
    if not choice.multipart and len(numbers) != 1:
        raise NotAcceptable(f"{len(numbers)} frames need a multipart/related Accept type")
    parts = Imaging(archive).iter_frames(record, numbers, decode=choice.decode)
    # The first frame is read before the response starts, so a missing frame or an
    # undecodable stream is still a 404/406, not a broken 200.
    first = next(parts, None)
    if first is None:
        raise NotFound(f"instance {record.sop_instance_uid} has no frames to send")
    if not choice.multipart:
        parts.close()
        return Response(first.data, media_type=content_type,
                        headers=describe_part(first) if choice.decode else {})
    path = INSTANCE.format(study=record.study_instance_uid, series=record.series_instance_uid,
                           instance=record.sop_instance_uid)
    base = f"{dicomweb_base(request)}{path}"
    boundary = new_boundary()

    def body() -> Iterator[tuple[dict[str, str], Iterator[bytes]]]:
        for part in itertools.chain([first], parts):
            headers = {"Content-Type": content_type,
                       "Content-Location": f"{base}/frames/{part.number}",
                       "Content-Length": str(len(part.data))}
            if choice.decode:
                headers.update(describe_part(part))
            yield headers, iter((part.data,))

    media_type = multipart_content_type(choice.media, boundary, choice.transfer_syntax)
    if len(numbers) == 1:
        # One frame is already in memory: the same bytes as one body, not a stream. A
        # StreamingResponse hops to the thread pool for every chunk, which was a fifth of
        # a one-frame request (docs/performance.md, "Retrieve").
        return Response(b"".join(encode_parts(body(), boundary)), media_type=media_type)
    return StreamingResponse(in_batches(encode_parts(body(), boundary)), media_type=media_type)


@router.get(INSTANCE + "/bulkdata/{tag}", summary="WADO-RS: retrieve bulk data")
def retrieve_bulkdata(
    request: Request, archive: ArchiveDep,
    study: str = _uid("StudyInstanceUID"), series: str = _uid("SeriesInstanceUID"),
    instance: str = _uid("SOPInstanceUID"),
    tag: str = Path(description="Tag as 8 hex digits, as in the metadata's BulkDataURI"),
) -> Response:
    """The value behind a BulkDataURI of the metadata, as multipart/related;
    type="application/octet-stream". Pixel Data (7FE00010) is all frames, negotiated as
    for /frames."""
    record = _record(archive, study, series, instance)
    if len(tag) != 8 or any(c not in "0123456789abcdefABCDEF" for c in tag):
        raise QueryError(f"bulk data tag {tag[:20]!r} must be 8 hex digits, e.g. 7FE00010")
    if tag.upper() == "7FE00010" and is_video(record):
        # A video's Pixel Data is one stream, not frames (PS3.5 §8.2.5-8.2.11).
        path = INSTANCE.format(study=study, series=series, instance=instance)
        return video_response(request, archive, record,
                              f"{dicomweb_base(request)}{path}/bulkdata/{tag}")
    if tag.upper() == "7FE00010":
        # All frames, streamed one at a time: the frame-list cap is for lists a client
        # writes, not for the whole pixel data it asks for by tag.
        numbers = list(range(1, Imaging(archive).frame_count(record) + 1))
        return _frames_response(request, archive, record, numbers)
    data = Imaging(archive).bulkdata(record, int(tag, 16))
    boundary = new_boundary()
    path = INSTANCE.format(study=study, series=series, instance=instance)
    url = f"{dicomweb_base(request)}{path}/bulkdata/{tag}"
    headers = {"Content-Type": "application/octet-stream", "Content-Location": url,
               "Content-Length": str(len(data))}
    return StreamingResponse(
        encode_parts([(headers, [data])], boundary),
        media_type=multipart_content_type("application/octet-stream", boundary),
    )


# ---------------------------------------------------------------------- rendered
def _after_answer(cache_writes: list[CacheWrite]) -> BackgroundTask | None:
    """The rendered-image cache writes, run once the answer is sent: the client has its
    image without waiting for a cache that only the next request reads (a cache write
    lost to a crash is a re-render, docs/performance.md "Rendered, fourth pass")."""
    if not cache_writes:
        return None

    def write_all() -> None:
        for write in cache_writes:
            write()

    return BackgroundTask(write_all)


def _options(request: Request, accept: str | None, window: str | None, viewport: str | None,
             quality: str | None, annotation: str | None = None) -> RenderOptions:
    media = rendered_media_type(accept or request.headers.get("accept"), RENDERED_MEDIA_TYPES)
    return RenderOptions(
        media_type=media,
        window=parse_window(window) if window is not None else None,
        viewport=parse_viewport(viewport) if viewport is not None else None,
        quality=parse_quality(quality) if quality is not None else DEFAULT_QUALITY,
        annotation=parse_annotation(annotation) if annotation is not None else (),
    )


def _rendered_parts(imaging: Imaging, records: list[InstanceRecord], options: RenderOptions
                    ) -> Response:
    """Rendered study/series: one part per instance with pixels (its first frame).

    Instances without pixel data (SR, PDF...) or with pixels no codec here can decode
    are left out; none left → `NotFound`."""
    def rendered_or_none(record: InstanceRecord) -> bytes | None:
        try:
            return imaging.rendered(record, None, options)
        except (NotFound, NotAcceptable) as exc:
            log.info("rendered %s: skipping %s: %s", record.series_instance_uid,
                     record.sop_instance_uid, exc)
            return None

    # Up to the first renderable instance before the response starts (none → 404); the
    # rest one at a time as the body is sent: one image in memory, not the study's.
    remaining = iter(records)
    first = next((image for image in map(rendered_or_none, remaining) if image is not None),
                 None)
    if first is None:
        raise NotFound("none of these instances has pixel data that can be rendered")

    def images() -> Iterator[bytes]:
        yield first
        for record in remaining:
            image = rendered_or_none(record)
            if image is not None:
                yield image

    boundary = new_boundary()
    return StreamingResponse(
        encode_parts((({"Content-Type": options.media_type}, [image]) for image in images()),
                     boundary),
        media_type=multipart_content_type(options.media_type, boundary),
    )


@router.get("/studies/{study}/rendered", summary="WADO-RS: a study rendered")
def render_study(
    request: Request, archive: ArchiveDep, study: str = _uid("StudyInstanceUID"),
    window: WindowQ = None, viewport: ViewportQ = None, quality: QualityQ = None,
    accept: AcceptQ = None, annotation: AnnotationQ = None,
) -> Response:
    """multipart/related; type="image/jpeg" (or png): each instance's first frame."""
    options = _options(request, accept, window, viewport, quality, annotation)
    records = archive.instances(check_uid(study, "StudyInstanceUID"))
    return _rendered_parts(Imaging(archive), records, options)


@router.get("/studies/{study}/series/{series}/rendered", summary="WADO-RS: a series rendered")
def render_series(
    request: Request, archive: ArchiveDep,
    study: str = _uid("StudyInstanceUID"), series: str = _uid("SeriesInstanceUID"),
    window: WindowQ = None, viewport: ViewportQ = None, quality: QualityQ = None,
    accept: AcceptQ = None, annotation: AnnotationQ = None,
) -> Response:
    """multipart/related; type="image/jpeg" (or png): each instance's first frame."""
    options = _options(request, accept, window, viewport, quality, annotation)
    records = archive.instances(check_uid(study, "StudyInstanceUID"),
                                check_uid(series, "SeriesInstanceUID"))
    return _rendered_parts(Imaging(archive), records, options)


@router.get(INSTANCE + "/rendered", summary="WADO-RS: an instance rendered (first frame)")
def render_instance(
    request: Request, archive: ArchiveDep,
    study: str = _uid("StudyInstanceUID"), series: str = _uid("SeriesInstanceUID"),
    instance: str = _uid("SOPInstanceUID"),
    window: WindowQ = None, viewport: ViewportQ = None, quality: QualityQ = None,
    accept: AcceptQ = None, annotation: AnnotationQ = None,
) -> Response:
    """image/jpeg (default) or image/png with Modality LUT, VOI LUT (window from the
    request, else the header, else the pixel range), MONOCHROME1 inverted. An
    Encapsulated PDF renders as its document, application/pdf (PS3.18 §8.7.4, rendered
    media types of Encapsulated PDF): the URL a FHIR DiagnosticReport's presentedForm
    gives an EMR."""
    record = _record(archive, study, series, instance)
    if record.sop_class_uid == ENCAPSULATED_PDF:
        rendered_media_type(accept or request.headers.get("accept"), ("application/pdf",))
        document = Imaging(archive).bulkdata(record, ENCAPSULATED_DOCUMENT)
        return Response(document_bytes(document), media_type="application/pdf")
    options = _options(request, accept, window, viewport, quality, annotation)
    writes: list[CacheWrite] = []
    image = Imaging(archive).rendered(record, None, options, cache_writes=writes)
    return Response(image, media_type=options.media_type, background=_after_answer(writes))


@router.get(INSTANCE + "/frames/{frames}/rendered", summary="WADO-RS: a frame rendered")
def render_frames(
    request: Request, archive: ArchiveDep,
    study: str = _uid("StudyInstanceUID"), series: str = _uid("SeriesInstanceUID"),
    instance: str = _uid("SOPInstanceUID"),
    frames: str = Path(description="Frame numbers from 1, e.g. 1 or 1,3,5"),
    window: WindowQ = None, viewport: ViewportQ = None, quality: QualityQ = None,
    accept: AcceptQ = None, annotation: AnnotationQ = None,
) -> Response:
    """One frame: a single image; several (`1,3,5`): multipart/related of images."""
    options = _options(request, accept, window, viewport, quality, annotation)
    record = _record(archive, study, series, instance)
    numbers = parse_frame_list(frames, _frame_limit(request))
    imaging = Imaging(archive)
    # The first image is made before the response starts (its errors are still statuses);
    # the others one at a time as the body is sent: one image in memory, not the list.
    writes: list[CacheWrite] = []
    first = imaging.rendered(record, numbers[0], options,
                             cache_writes=writes if len(numbers) == 1 else None)
    if len(numbers) == 1:
        return Response(first, media_type=options.media_type,
                        background=_after_answer(writes))
    count = imaging.frame_count(record)
    missing = next((n for n in numbers if n > count), None)
    if missing is not None:
        raise NotFound(f"frame {missing} does not exist: instance {record.sop_instance_uid} "
                       f"has {count} frame(s), numbered from 1")

    def images() -> Iterator[bytes]:
        yield first
        for number in numbers[1:]:
            yield imaging.rendered(record, number, options)

    boundary = new_boundary()
    return StreamingResponse(
        encode_parts((({"Content-Type": options.media_type}, [image]) for image in images()),
                     boundary),
        media_type=multipart_content_type(options.media_type, boundary),
    )


# ---------------------------------------------------------------------- thumbnails
def _thumbnail(request: Request, archive: Archive, records: list[InstanceRecord],
               viewport: str | None, accept: str | None) -> Response:
    options = _options(request, accept, None, viewport, None)
    writes: list[CacheWrite] = []
    image = Imaging(archive).thumbnail(records, options, cache_writes=writes)
    return Response(image, media_type=options.media_type,
                    headers={"Cache-Control": "private, max-age=3600"},
                    background=_after_answer(writes))


@router.get("/studies/{study}/thumbnail", summary="WADO-RS: thumbnail of a study")
def study_thumbnail(
    request: Request, archive: ArchiveDep, study: str = _uid("StudyInstanceUID"),
    viewport: ViewportQ = None, accept: AcceptQ = None,
) -> Response:
    """The middle image of the study's largest series, 128x128 unless `viewport`."""
    return _thumbnail(request, archive, archive.instances(check_uid(study, "StudyInstanceUID")),
                      viewport, accept)


@router.get("/studies/{study}/series/{series}/thumbnail", summary="WADO-RS: series thumbnail")
def series_thumbnail(
    request: Request, archive: ArchiveDep,
    study: str = _uid("StudyInstanceUID"), series: str = _uid("SeriesInstanceUID"),
    viewport: ViewportQ = None, accept: AcceptQ = None,
) -> Response:
    """The middle image of the series, 128x128 unless `viewport`."""
    records = archive.instances(check_uid(study, "StudyInstanceUID"),
                                check_uid(series, "SeriesInstanceUID"))
    return _thumbnail(request, archive, records, viewport, accept)


@router.get(INSTANCE + "/thumbnail", summary="WADO-RS: instance thumbnail")
def instance_thumbnail(
    request: Request, archive: ArchiveDep,
    study: str = _uid("StudyInstanceUID"), series: str = _uid("SeriesInstanceUID"),
    instance: str = _uid("SOPInstanceUID"), viewport: ViewportQ = None, accept: AcceptQ = None,
) -> Response:
    """The middle frame of the instance, 128x128 unless `viewport`."""
    return _thumbnail(request, archive, [_record(archive, study, series, instance)], viewport,
                      accept)
