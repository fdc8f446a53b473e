"""Multiplanar reconstruction over HTTP: a minipacs extension next to WADO-RS (not part
of PS3.18), shaped like it so a DICOMweb viewer needs little new code.

    GET /dicom-web/studies/{study}/series/{series}/mpr/{plane}
        application/dicom+json: one data set per reconstructed frame (Image Plane module,
        pixel description, window), as series metadata is.
    GET .../mpr/{plane}/frames/{n}             raw pixels, as WADO-RS frames
    GET .../mpr/{plane}/frames/{n}/rendered    image/jpeg or image/png, as WADO-RS rendered

{plane} is axial, coronal or sagittal. The volume is built through the archive
(`volumes.py`: permission and audit on every request) and the maths is `dicom/mpr.py`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydicom.uid import ExplicitVRLittleEndian

from minipacs.dicom.frames import DecodedFrame
from minipacs.dicom.mpr import (
    PLANES,
    Plane,
    Volume,
    frame_dataset,
    frame_pixels,
    plane,
    plane_metadata,
)
from minipacs.dicom.render import render_frame
from minipacs.errors import NotAcceptable, NotFound
from minipacs.imaging import FramePart, describe_part
from minipacs.volumes import SeriesVolumes
from minipacs.web.dicomweb import ArchiveDep, _uid, check_uid, dicomweb_base
from minipacs.web.multipart import encode_parts, multipart_content_type, new_boundary
from minipacs.web.negotiation import frame_choice
from minipacs.web.wado_pixels import (
    AcceptQ,
    AnnotationQ,
    QualityQ,
    ViewportQ,
    WindowQ,
    _options,
)

router = APIRouter(prefix="/dicom-web", tags=["MPR (minipacs extension)"])

SERIES = "/studies/{study}/series/{series}"
PlaneP = Annotated[str, Path(description="axial, coronal or sagittal")]
FrameP = Annotated[int, Path(description="Frame number from 1 (one frame per request)")]
_BINARY: dict[str, Any] = {"schema": {"type": "string", "format": "binary"}}
# What each route answers (OpenAPI): declared here, so the document names no JSON body.
_METADATA_200: dict[int | str, dict[str, Any]] = {200: {
    "description": "One DICOM JSON data set per reconstructed frame",
    "content": {"application/dicom+json": {"schema": {"type": "array",
                                                       "items": {"type": "object"}}}}}}
_FRAME_200: dict[int | str, dict[str, Any]] = {200: {
    "description": "The frame's stored values, uncompressed little endian",
    "content": {"multipart/related": _BINARY, "application/octet-stream": _BINARY}}}
_RENDERED_200: dict[int | str, dict[str, Any]] = {200: {
    "description": "The frame rendered", "content": {"image/jpeg": _BINARY,
                                                     "image/png": _BINARY}}}


def _volume_and_plane(request: Request, archive: ArchiveDep, study: str, series: str,
                      name: str) -> tuple[Volume, Plane]:
    if name not in PLANES:
        raise NotFound(f"plane {name[:20]!r} is not one of {', '.join(PLANES)}")
    settings = request.app.state.settings
    volumes = SeriesVolumes(archive, request.app.state.mpr_volumes,
                            settings.mpr_max_volume_bytes)
    volume = volumes.volume(check_uid(study, "StudyInstanceUID"),
                            check_uid(series, "SeriesInstanceUID"))
    return volume, plane(volume, name)


@router.get(SERIES + "/mpr/{plane_name}", summary="MPR: the frames of a reconstructed plane",
            response_class=Response, responses=_METADATA_200)
def mpr_metadata(
    request: Request, archive: ArchiveDep, plane_name: PlaneP,
    study: str = _uid("StudyInstanceUID"), series: str = _uid("SeriesInstanceUID"),
) -> Response:
    """DICOM JSON (PS3.18 F.2), one data set per frame in frame order: InstanceNumber
    is the frame number; ImagePositionPatient, ImageOrientationPatient and PixelSpacing
    place it in the series' Frame of Reference (for measurements and reference lines)."""
    volume, chosen = _volume_and_plane(request, archive, study, series, plane_name)
    return Response(json.dumps(plane_metadata(volume, chosen), separators=(",", ":")),
                    media_type="application/dicom+json")


@router.get(SERIES + "/mpr/{plane_name}/frames/{frame}", summary="MPR: one frame's pixels",
            response_class=Response, responses=_FRAME_200)
def mpr_frame(
    request: Request, archive: ArchiveDep, plane_name: PlaneP, frame: FrameP,
    study: str = _uid("StudyInstanceUID"), series: str = _uid("SeriesInstanceUID"),
) -> Response:
    """Uncompressed little-endian stored values (Modality LUT not applied, as WADO-RS
    frames): multipart/related; type="application/octet-stream" (default), or a single
    body for `Accept: application/octet-stream`, described by X-* headers."""
    choice = frame_choice(request.headers.get("accept"), ExplicitVRLittleEndian)
    volume, chosen = _volume_and_plane(request, archive, study, series, plane_name)
    pixels = frame_pixels(volume, chosen, frame)
    decoded = DecodedFrame(pixels, str(volume.header.get("PhotometricInterpretation",
                                                         "MONOCHROME2")),
                           pixels.dtype.itemsize * 8, int(pixels.dtype.kind == "i"))
    part = FramePart(frame, decoded.little_endian_bytes(), decoded.photometric_interpretation,
                     1, decoded.bits_allocated, decoded.pixel_representation)
    content_type = f"{choice.media}; transfer-syntax={choice.transfer_syntax}"
    if not choice.multipart:
        return Response(part.data, media_type=content_type, headers=describe_part(part))
    url = (f"{dicomweb_base(request)}{SERIES.format(study=study, series=series)}"
           f"/mpr/{plane_name}/frames/{frame}")
    headers = {"Content-Type": content_type, "Content-Location": url,
               "Content-Length": str(len(part.data)), **describe_part(part)}
    boundary = new_boundary()
    return Response(b"".join(encode_parts([(headers, iter((part.data,)))], boundary)),
                    media_type=multipart_content_type(choice.media, boundary,
                                                      choice.transfer_syntax))


@router.get(SERIES + "/mpr/{plane_name}/frames/{frame}/rendered",
            summary="MPR: one frame rendered", response_class=Response,
            responses=_RENDERED_200)
def mpr_rendered(
    request: Request, archive: ArchiveDep, plane_name: PlaneP, frame: FrameP,
    study: str = _uid("StudyInstanceUID"), series: str = _uid("SeriesInstanceUID"),
    window: WindowQ = None, viewport: ViewportQ = None, quality: QualityQ = None,
    accept: AcceptQ = None, annotation: AnnotationQ = None,
) -> Response:
    """image/jpeg (default) or image/png: Modality LUT, then the window from the
    request, else the series' header, else the frame's range (as WADO-RS rendered)."""
    options = _options(request, accept, window, viewport, quality, annotation)
    volume, chosen = _volume_and_plane(request, archive, study, series, plane_name)
    pixels = frame_pixels(volume, chosen, frame)
    photometric = str(volume.header.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise NotAcceptable(f"series photometric interpretation {photometric} is not "
                            "greyscale")
    decoded = DecodedFrame(pixels, photometric, pixels.dtype.itemsize * 8,
                           int(pixels.dtype.kind == "i"))
    header = frame_dataset(volume, chosen, frame)
    return Response(render_frame(decoded, header, options, frame),
                    media_type=options.media_type)
