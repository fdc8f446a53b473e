"""Video objects (MPEG-2, MPEG-4 AVC/H.264, HEVC/H.265 transfer syntaxes): the stored
bitstream as one file a browser's <video> element can play.

PS3.5 §8.2.5-8.2.11: the encapsulated Pixel Data of these transfer syntaxes is one video
stream (in an MP4 or MPEG-2 transport/program stream container), split into fragments
however the sender liked; there is no frame-per-fragment mapping. Joining the fragments
gives the stream back byte for byte. PS3.18 Table 8.7.3-4 names the media types of the
bulk data: video/mpeg2 for MPEG-2, video/mp4 for MPEG-4 AVC/H.264 and HEVC/H.265.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from pydicom import uid as dicom_uid
from pydicom.encaps import generate_fragments

from minipacs.dicom.frames import stored_pixels
from minipacs.errors import NotFound

# Fragmentable variants (the ...F names) carry the same stream; pydicom names them all.
_MPEG2 = ("MPEG2MPML", "MPEG2MPMLF", "MPEG2MPHL", "MPEG2MPHLF")
_MP4 = ("MPEG4HP41", "MPEG4HP41F", "MPEG4HP41BD", "MPEG4HP41BDF", "MPEG4HP422D",
        "MPEG4HP422DF", "MPEG4HP423D", "MPEG4HP423DF", "MPEG4HP42STEREO",
        "MPEG4HP42STEREOF", "HEVCMP51", "HEVCM10P51")
VIDEO_MEDIA_TYPES: dict[str, str] = {
    **{str(getattr(dicom_uid, name)): "video/mpeg2" for name in _MPEG2},
    **{str(getattr(dicom_uid, name)): "video/mp4" for name in _MP4},
}


def video_media_type(transfer_syntax_uid: str) -> str | None:
    """The bulk data media type of a video transfer syntax; None for any other syntax."""
    return VIDEO_MEDIA_TYPES.get(transfer_syntax_uid)


def video_fragments(fh: BinaryIO, sop_instance_uid: str) -> Iterator[bytes]:
    """The video stream of the stored Part-10 file open in `fh` (seekable), one fragment
    at a time as read from the file: one fragment in memory, however long the video.

    Raises `NotFound` naming the instance, before yielding, when it has no encapsulated
    Pixel Data."""
    pixels = stored_pixels(fh)
    if pixels.fragments_at is None:
        raise NotFound(f"instance {sop_instance_uid} has no encapsulated Pixel Data "
                       "(7FE0,0010): no video stream to send")
    fh.seek(pixels.fragments_at)
    # The first item is the Basic Offset Table (PS3.5 §A.4), not part of the stream.
    fragments = generate_fragments(fh)
    next(fragments, None)
    return fragments
