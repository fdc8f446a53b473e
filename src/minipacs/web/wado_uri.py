"""WADO-URI (PS3.18 §9, the URI service): `/wado?requestType=WADO&studyUID=...` for
older EMRs. One instance per request, as DICOM or as a rendered image."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from minipacs.dicom.render import DEFAULT_QUALITY, RenderOptions, Viewport, Window
from minipacs.dicom.transcode import transcode
from minipacs.errors import NotAcceptable, QueryError
from minipacs.imaging import Imaging
from minipacs.web.dicomweb import ArchiveDep, check_uid

router = APIRouter(tags=["WADO-URI"])

_UID = "digits and dots, at most 64 characters"


def _number(name: str, value: str | None, *, minimum: float | None = None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError as exc:
        raise QueryError(f"{name}={value!r} must be a number") from exc
    if minimum is not None and number < minimum:
        raise QueryError(f"{name}={value!r} must be at least {minimum:g}")
    return number


@router.get("/wado", summary="WADO-URI: retrieve one instance (PS3.18 §9)")
def wado_uri(
    request: Request,
    archive: ArchiveDep,
    requestType: Annotated[str, Query(description="Must be WADO")],  # noqa: N803 - PS3.18 name
    studyUID: Annotated[str, Query(description=f"Study Instance UID ({_UID})")],  # noqa: N803
    seriesUID: Annotated[str, Query(description=f"Series Instance UID ({_UID})")],  # noqa: N803
    objectUID: Annotated[str, Query(description=f"SOP Instance UID ({_UID})")],  # noqa: N803
    contentType: Annotated[str | None, Query(  # noqa: N803
        description="application/dicom, image/jpeg (default) or image/png")] = None,
    transferSyntax: Annotated[str | None, Query(  # noqa: N803
        description="For application/dicom: a UID to transcode to (default: as stored)")] = None,
    frameNumber: Annotated[int | None, Query(ge=1, description="Frame to render")] = None,  # noqa: N803
    windowCenter: Annotated[str | None, Query(description="VOI window center")] = None,  # noqa: N803
    windowWidth: Annotated[str | None, Query(description="VOI window width")] = None,  # noqa: N803
    rows: Annotated[int | None, Query(ge=1, le=8192, description="Rendered height")] = None,
    columns: Annotated[int | None, Query(ge=1, le=8192, description="Rendered width")] = None,
    imageQuality: Annotated[int | None, Query(ge=1, le=100,  # noqa: N803
                                              description="JPEG quality 1-100")] = None,
) -> Response:
    """`contentType=application/dicom` returns the instance (as stored, or in
    `transferSyntax`); image/jpeg and image/png render it (window, rows/columns, frame)."""
    if requestType != "WADO":
        raise QueryError(f"requestType={requestType!r} must be WADO")
    if "anonymize" in request.query_params:
        # Serving identified data to a client that asked for it de-identified is worse
        # than refusing (the anonymize parameter of PS3.18 WADO-URI).
        raise QueryError("anonymize is not supported: minipacs does not de-identify on the fly")
    record = archive.instances(check_uid(studyUID, "studyUID"), check_uid(seriesUID, "seriesUID"),
                               check_uid(objectUID, "objectUID"))[0]
    wanted = [t.split(";")[0].strip().lower() for t in (contentType or "image/jpeg").split(",")]
    for media in wanted:
        if media == "application/dicom":
            data = archive.read_instance(record)
            if transferSyntax and transferSyntax != record.transfer_syntax_uid:
                data = transcode(data, transferSyntax)
            return Response(data, media_type="application/dicom")
        # PS3.18 §9.1.2.1: image/jpeg is the default for images.
        if media in ("image/jpeg", "image/png", "*/*", "image/*"):
            center = _number("windowCenter", windowCenter)
            width = _number("windowWidth", windowWidth, minimum=1)
            if (center is None) != (width is None):
                raise QueryError("windowCenter and windowWidth must be given together")
            window = Window(center, width) if center is not None and width is not None else None
            viewport = None
            if rows or columns:
                viewport = Viewport(columns or 8192, rows or 8192)
            options = RenderOptions(
                media_type="image/png" if media == "image/png" else "image/jpeg",
                window=window, viewport=viewport, quality=imageQuality or DEFAULT_QUALITY,
            )
            return Response(Imaging(archive).rendered(record, frameNumber, options),
                            media_type=options.media_type)
    raise NotAcceptable(f"contentType={contentType!r} is not offered; use application/dicom, "
                        "image/jpeg or image/png")
