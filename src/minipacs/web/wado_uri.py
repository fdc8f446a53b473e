"""WADO-URI (PS3.18 §9, the URI service): `/wado?requestType=WADO&studyUID=...` for
older EMRs. One instance per request, as DICOM (§9.4) or as a rendered image (§9.5).

Every parameter is read here as text and checked by hand, so that a missing or bad one
is a 400 whose message names it (PS3.18 §8.1.2.1 leaves the wording to us)."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from minipacs.access.roles import Action
from minipacs.archive import Archive, InstanceRecord
from minipacs.dicom.annotation import parse_annotation
from minipacs.dicom.render import (
    DEFAULT_QUALITY,
    RenderOptions,
    Viewport,
    Window,
    parse_region,
)
from minipacs.dicom.transcode import transcode
from minipacs.errors import NotAcceptable, NotFound, QueryError
from minipacs.imaging import Imaging
from minipacs.web.dicomweb import ArchiveDep, check_uid

router = APIRouter(tags=["WADO-URI"])

_UID = "digits and dots, at most 64 characters"
_REQUIRED = ("requestType", "studyUID", "seriesUID", "objectUID")
# PS3.18 §9.5.1: parameters of a rendered response only; §9.4.1: of a DICOM one only.
_RENDERING = ("annotation", "rows", "columns", "region", "windowCenter", "windowWidth",
              "imageQuality", "frameNumber")
_DICOM_ONLY = ("transferSyntax",)
_MAX_SIZE = 8192
Text = str | None


def _number(name: str, value: str | None, *, minimum: float | None = None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError as exc:
        raise QueryError(f"{name}={value!r} must be a number") from exc
    if not math.isfinite(number):
        raise QueryError(f"{name}={value!r} must be a finite number")
    if minimum is not None and number < minimum:
        raise QueryError(f"{name}={value!r} must be at least {minimum:g}")
    return number


def _whole(name: str, value: str | None, low: int, high: int) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError as exc:
        raise QueryError(f"{name}={value!r} must be a whole number from {low} to {high}") from exc
    if not low <= number <= high:
        raise QueryError(f"{name}={value!r} must be from {low} to {high}")
    return number


def _window(center_text: str | None, width_text: str | None) -> Window | None:
    center = _number("windowCenter", center_text)
    # PS3.3 C.11.2.1.2.1: Window Width >= 1 for the LINEAR function WADO-URI uses.
    width = _number("windowWidth", width_text, minimum=1)
    if (center is None) != (width is None):
        given, missing = ("windowCenter", "windowWidth") if width is None else \
            ("windowWidth", "windowCenter")
        # PS3.18 §9.5.1.2.3: if either is present, both shall be present.
        raise QueryError(f"{given} was given without {missing}; give both or neither")
    return Window(center, width) if center is not None and width is not None else None


def _media_types(content_type: str | None) -> list[str]:
    return [t.split(";")[0].strip().lower() for t in content_type.split(",") if t.strip()] \
        if content_type else []


def _rendered(archive: Archive, record: InstanceRecord, media: str,
              params: dict[str, str | None]) -> Response:
    frames = record.number_of_frames or 1
    frame = _whole("frameNumber", params["frameNumber"], 1, frames)
    rows = _whole("rows", params["rows"], 1, _MAX_SIZE)
    columns = _whole("columns", params["columns"], 1, _MAX_SIZE)
    quality = _whole("imageQuality", params["imageQuality"], 1, 100)
    viewport = None
    if rows is not None or columns is not None:
        # Each is a maximum; the aspect ratio is kept (PS3.18 §8.3.5.1.3 scaling). The
        # 2011 text allowed either alone, so one alone bounds only its own dimension.
        viewport = Viewport(columns or _MAX_SIZE, rows or _MAX_SIZE)
    options = RenderOptions(
        media_type=media, window=_window(params["windowCenter"], params["windowWidth"]),
        viewport=viewport, quality=quality or DEFAULT_QUALITY,
        annotation=parse_annotation(params["annotation"]) if params["annotation"] else (),
        region=parse_region(params["region"]) if params["region"] is not None else None,
    )
    return Response(Imaging(archive).rendered(record, frame, options), media_type=media)


def _dicom(archive: Archive, record: InstanceRecord, transfer_syntax: str | None) -> Response:
    data = archive.read_instance(record)
    if transfer_syntax and transfer_syntax != record.transfer_syntax_uid:
        data = transcode(data, check_uid(transfer_syntax, "transferSyntax"))
    return Response(data, media_type="application/dicom")


@router.get("/wado", summary="WADO-URI: retrieve one instance (PS3.18 §9)")
def wado_uri(
    request: Request,
    archive: ArchiveDep,
    requestType: Annotated[Text, Query(description="Required: WADO")] = None,  # noqa: N803
    studyUID: Annotated[Text, Query(description=f"Required: Study Instance UID ({_UID})")  # noqa: N803
                        ] = None,
    seriesUID: Annotated[Text, Query(description=f"Required: Series Instance UID ({_UID})")  # noqa: N803
                         ] = None,
    objectUID: Annotated[Text, Query(description=f"Required: SOP Instance UID ({_UID})")  # noqa: N803
                         ] = None,
    contentType: Annotated[Text, Query(  # noqa: N803
        description="application/dicom, image/jpeg or image/png, or a comma-separated list "
        "in order of preference. Default: image/jpeg (the first frame unless frameNumber), "
        "application/dicom for an instance without pixels or with transferSyntax")] = None,
    charset: Annotated[Text, Query(description="Accepted and ignored: images carry no "
                                   "text, DICOM is returned as stored")] = None,
    transferSyntax: Annotated[Text, Query(  # noqa: N803
        description="application/dicom only: Explicit (1.2.840.10008.1.2.1) or Implicit "
        "(1.2.840.10008.1.2) VR Little Endian to decompress to; default as stored")] = None,
    frameNumber: Annotated[Text, Query(description="Frame to render, from 1")] = None,  # noqa: N803
    windowCenter: Annotated[Text, Query(description="VOI window center, modality "  # noqa: N803
                                        "units (with windowWidth)")] = None,
    windowWidth: Annotated[Text, Query(description="VOI window width, at least 1 "  # noqa: N803
                                       "(with windowCenter)")] = None,
    rows: Annotated[Text, Query(description="Largest height in pixels (aspect kept)")] = None,
    columns: Annotated[Text, Query(description="Largest width in pixels (aspect kept)")
                       ] = None,
    region: Annotated[Text, Query(description="xmin,ymin,xmax,ymax: fractions 0.0-1.0 of "
                                  "the image to show, before rows/columns")] = None,
    annotation: Annotated[Text, Query(description="patient and/or technique, burned into "
                                      "the image")] = None,
    imageQuality: Annotated[Text, Query(description="JPEG quality 1-100")] = None,  # noqa: N803
) -> Response:
    """`contentType=application/dicom` returns the instance (as stored, or in
    `transferSyntax`); image/jpeg and image/png render it (frame, window, region,
    rows/columns, annotation). `anonymize`, `presentationUID` and `presentationSeriesUID`
    are refused (400): minipacs neither de-identifies nor applies presentation states,
    and an image without what was asked for must not pass for one with it."""
    given = {"requestType": requestType, "studyUID": studyUID, "seriesUID": seriesUID,
             "objectUID": objectUID}
    missing = [name for name in _REQUIRED if not given[name]]
    if missing:
        raise QueryError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing: "
                         "WADO-URI (PS3.18 §9) needs requestType=WADO, studyUID, seriesUID "
                         "and objectUID")
    if requestType != "WADO":
        raise QueryError(f"requestType={requestType!r} must be WADO")
    query = request.query_params
    if "anonymize" in query:
        # PS3.18 §9.4.1.2.1: serving identified data to a client that asked for it
        # de-identified is worse than refusing.
        raise QueryError("anonymize is not supported: minipacs does not de-identify on the "
                         "fly; ask without anonymize")
    for name in ("presentationUID", "presentationSeriesUID"):
        if name in query:
            raise QueryError(f"{name} is not supported: minipacs does not apply presentation "
                             "states; ask without it (windowCenter/windowWidth, region and "
                             "annotation are offered)")
    assert studyUID and seriesUID and objectUID  # checked above, for mypy
    if frameNumber is not None and not (frameNumber.isdigit() and int(frameNumber) >= 1):
        # The form now; the range once the instance is known (`_rendered`).
        raise QueryError(f"'frameNumber' must be a frame number from 1, not {frameNumber!r}")
    wanted = _media_types(contentType)
    if not wanted:
        # PS3.18 (2013) §7.1.2: image/jpeg by default. A multi-frame instance gives its
        # first frame (or frameNumber) rather than the 2013 §7.2.2 application/dicom:
        # EMRs put these URLs in <img> tags. transferSyntax only makes sense for DICOM.
        wanted = ["application/dicom" if transferSyntax is not None else "image/jpeg"]
    # The instance itself is a download; an image of it is a view (docs/security.md).
    action = Action.DOWNLOAD if wanted[0] == "application/dicom" else Action.VIEW
    record = archive.instances(check_uid(studyUID, "studyUID"), check_uid(seriesUID, "seriesUID"),
                               check_uid(objectUID, "objectUID"), action=action)[0]
    params: dict[str, str | None] = {
        "annotation": annotation, "rows": rows, "columns": columns, "region": region,
        "windowCenter": windowCenter, "windowWidth": windowWidth,
        "imageQuality": imageQuality, "frameNumber": frameNumber,
        "transferSyntax": transferSyntax,
    }
    for media in wanted:
        if media == "application/dicom":
            _refuse(params, _RENDERING, media)
            return _dicom(archive, record, transferSyntax)
        if media in ("image/jpeg", "image/png", "image/*", "*/*"):
            chosen = "image/png" if media == "image/png" else "image/jpeg"
            _refuse(params, _DICOM_ONLY, chosen)
            try:
                return _rendered(archive, record, chosen, params)
            except NotFound:
                if contentType is None and frameNumber is None:
                    # No pixel data (SR, PDF...): the default for non-image objects is
                    # the instance itself (PS3.18 (2013) §7.3-§7.4).
                    return _dicom(archive, record, None)
                raise
    raise NotAcceptable(f"contentType={contentType!r} is not offered; use application/dicom, "
                        "image/jpeg or image/png")


def _refuse(params: dict[str, str | None], names: tuple[str, ...], media: str) -> None:
    """PS3.18 §9.4.1 / §9.5.1: rendering parameters are not allowed with
    application/dicom, transferSyntax not with an image."""
    given = [name for name in names if params.get(name) is not None]
    if given:
        raise QueryError(f"{', '.join(given)} cannot be used with contentType={media}: "
                         + ("they apply to rendered images only" if media == "application/dicom"
                            else "transferSyntax applies to application/dicom only"))
