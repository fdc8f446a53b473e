"""WADO-RS bulk data of video objects (PS3.18 §8.7.3, Table 8.7.3-4): the Pixel Data of an
instance stored in an MPEG-2, MPEG-4 AVC/H.264 or HEVC transfer syntax, sent as the
video stream it holds, for a browser's <video> element.

Reached through `.../instances/{i}/bulkdata/7FE00010` (wado_pixels.py hands video
instances here), so its access rule (view) and its audit (the core's, when the instance
is looked up) are those of every bulk data retrieve.
"""

from __future__ import annotations

import itertools

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from minipacs.archive import Archive, InstanceRecord
from minipacs.dicom.video import video_media_type
from minipacs.errors import NotAcceptable
from minipacs.imaging import Imaging
from minipacs.web.multipart import encode_parts, multipart_content_type, new_boundary
from minipacs.web.negotiation import parse_accept


def is_video(record: InstanceRecord) -> bool:
    return video_media_type(record.transfer_syntax_uid) is not None


def _covers(range_media: str, media: str) -> bool:
    return range_media in ("*/*", "*", "video/*") or range_media == media


def video_response(request: Request, archive: Archive, record: InstanceRecord,
                   url: str) -> Response:
    """The stream as `video/mp4` (or `video/mpeg2`): one body when the Accept header names
    the type itself (what a page fetching a video asks), multipart/related with one part
    for `multipart/related; type=video/mp4` and for wildcards (the PS3.18 default for
    bulk data). Only the stored stream is offered: no transcoding. Sent as read, one
    fragment at a time (no Content-Length: the fragments' total is not in the header)."""
    stored = record.transfer_syntax_uid
    media = video_media_type(stored) or "application/octet-stream"
    accept = request.headers.get("accept")
    for wanted in parse_accept(accept):
        if not _covers(wanted.media, media) or wanted.transfer_syntax not in (None, "*",
                                                                            stored):
            continue
        fragments = Imaging(archive).video(record)
        # The first fragment is read before the response starts: a missing stream is
        # still a 404, not a broken 200. The rest follow one fragment at a time.
        first = next(fragments, b"")
        stream = itertools.chain([first], fragments)
        if not wanted.multipart and "*" not in wanted.media:
            return StreamingResponse(stream, media_type=media)
        boundary = new_boundary()
        headers = {"Content-Type": f"{media}; transfer-syntax={stored}",
                   "Content-Location": url}
        return StreamingResponse(encode_parts([(headers, stream)], boundary),
                                 media_type=multipart_content_type(media, boundary, stored))
    raise NotAcceptable(
        f"instance {record.sop_instance_uid} holds a video stream ({stored}); it is sent "
        f"only as {media} (Accept: {media}, or multipart/related; type=\"{media}\"), "
        f"not as {accept!r}")
