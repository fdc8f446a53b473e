"""Pixels out of the archive: frames, rendered images and thumbnails (WADO-RS).

A service next to `archive.py`: it reads instances and caches rendered images only
through `Archive` (which owns the blob store), and leaves the pixel work to the pure
modules `dicom/frames.py` and `dicom/render.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset

from minipacs.archive import Archive, InstanceRecord
from minipacs.dicom.frames import (
    DecodedFrame,
    check_frame_numbers,
    check_frames_exist,
    decode_frame_from_file,
    element_value,
    encapsulated_frame,
    encapsulated_frame_from_file,
    frame_count,
    native_frame_from_file,
    read_dataset,
    stored_pixels,
)
from minipacs.dicom.pixel_headers import pixels_of
from minipacs.dicom.render import RenderOptions, Viewport, render_frame
from minipacs.dicom.video import video_fragments
from minipacs.errors import NotFound

log = logging.getLogger(__name__)

THUMBNAIL_VIEWPORT = Viewport(128, 128)
_SUFFIX = {"image/jpeg": "jpg", "image/png": "png"}
# How a complete image of each kind ends (JPEG EOI marker; PNG IEND chunk and its CRC): a
# cache file written without fsync that a crash left empty or zero-filled does not.
_COMPLETE_END = {"jpg": b"\xff\xd9", "png": b"IEND\xaeB`\x82"}


# A rendered image's cache write, put off until its answer is sent (`Imaging.rendered`).
CacheWrite = Callable[[], None]


@dataclass(frozen=True)
class FramePart:
    """One frame to send: its bytes and what they are (for the part headers)."""

    number: int
    data: bytes
    photometric_interpretation: str
    samples_per_pixel: int
    bits_allocated: int
    pixel_representation: int


class Imaging:
    """Frames, rendered images and thumbnails of stored instances."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def dataset(self, record: InstanceRecord) -> Dataset:
        return read_dataset(self.archive.read_instance(record))

    # ------------------------------------------------------------------ frames
    def frames(self, record: InstanceRecord, numbers: list[int], *, decode: bool
               ) -> list[FramePart]:
        """Frames `numbers` (1-based) decoded to little-endian pixels, or as stored.

        Raises `NotFound` for frame numbers the instance lacks, `NotAcceptable` when the
        stored syntax cannot be decoded.
        """
        if decode:
            parts = []
            with self.archive.open_instance(record, as_stored=True) as fh:
                for number in numbers:
                    frame, _ = decode_frame_from_file(fh, number)
                    samples = frame.pixels.shape[2] if frame.pixels.ndim == 3 else 1
                    parts.append(FramePart(number, frame.little_endian_bytes(),
                                           frame.photometric_interpretation, samples,
                                           frame.bits_allocated, frame.pixel_representation))
                    fh.seek(0)
            return parts
        ds = self.dataset(record)
        check_frame_numbers(ds, numbers)
        return [
            FramePart(number, encapsulated_frame(ds, number),
                      str(ds.get("PhotometricInterpretation", "")),
                      int(ds.get("SamplesPerPixel", 1)), int(ds.get("BitsAllocated", 8)),
                      int(ds.get("PixelRepresentation", 0)))
            for number in numbers
        ]

    def iter_frames(self, record: InstanceRecord, numbers: list[int], *, decode: bool
                    ) -> Generator[FramePart, None, None]:
        """As `frames`, one frame at a time: memory holds one frame, not the list.

        Every frame number is checked against the header before the first frame is
        yielded, so `NotFound` comes before any byte is sent; `NotAcceptable` for an
        undecodable first frame too (take the first part before starting a response)."""
        with self.archive.open_instance(record, as_stored=True) as fh:
            # The header parse, cached per blob and digest (dicom/pixel_headers.py).
            pixels, pixel_data_at = pixels_of(fh, record.blob_key, record.sha256)
            check_frames_exist(pixels, numbers)
            header = pixels.header
            for number in numbers:
                if decode:
                    fh.seek(pixel_data_at)
                    frame = native_frame_from_file(fh, pixels, number)
                    if frame is None:
                        fh.seek(0)
                        frame, _ = decode_frame_from_file(fh, number)
                    samples = frame.pixels.shape[2] if frame.pixels.ndim == 3 else 1
                    yield FramePart(number, frame.little_endian_bytes(),
                                    frame.photometric_interpretation, samples,
                                    frame.bits_allocated, frame.pixel_representation)
                else:
                    yield FramePart(number, encapsulated_frame_from_file(fh, pixels, number),
                                    str(header.get("PhotometricInterpretation", "")),
                                    int(header.get("SamplesPerPixel", 1)),
                                    int(header.get("BitsAllocated", 8)),
                                    int(header.get("PixelRepresentation", 0)))

    def bulkdata(self, record: InstanceRecord, tag: int) -> bytes:
        """Value of the element a BulkDataURI names (not Pixel Data: that goes by frames).

        Read from the header (up to Pixel Data) first: a waveform or an overlay never
        costs loading the pixels; only a tag not found there is looked for in all of it."""
        with self.archive.open_instance(record, as_stored=True) as fh:
            value = element_value(dcmread(fh, stop_before_pixels=True), tag)
        if value is None:
            value = element_value(self.dataset(record), tag)
        if value is None:
            raise NotFound(f"instance {record.sop_instance_uid} has no bulk data element "
                           f"({tag >> 16:04X},{tag & 0xFFFF:04X})")
        return value

    def video(self, record: InstanceRecord) -> Generator[bytes, None, None]:
        """The video stream of an instance stored in a video transfer syntax
        (`dicom/video.py`): its Pixel Data fragments as stored, read one at a time while
        the generator runs (the instance stays open until it is exhausted or closed).
        `NotFound` comes at the first `next()`, before any byte: take it before
        starting a response."""
        with self.archive.open_instance(record, as_stored=True) as fh:
            yield from video_fragments(fh, record.sop_instance_uid)

    def frame_count(self, record: InstanceRecord) -> int:
        if record.number_of_frames:
            return record.number_of_frames
        return frame_count(self.dataset(record))

    # ------------------------------------------------------------------ rendered
    def rendered(self, record: InstanceRecord, frame: int | None, options: RenderOptions,
                 *, kind: str = "rendered", cache_writes: list[CacheWrite] | None = None
                 ) -> bytes:
        """One frame (the first when `frame` is None) rendered per `options`, cached under a
        name made of the instance's SHA-256, the frame and every option (annotation
        included), so a different request never gets another's image.

        With `cache_writes`, a new image's cache write is appended there instead of done,
        for the caller to run once the answer is sent (the image is already in hand; the
        cache is for the next request)."""
        number = frame or 1
        name = self._cache_name(record, kind, number, options)
        end = _COMPLETE_END.get(name.rsplit(".", 1)[-1])
        cached = self.archive.read_derived(record, name)
        if cached is not None and (end is None or cached.endswith(end)):
            return cached
        with self.archive.open_instance(record) as fh:
            decoded, header = _frame_and_header(fh, number, record)
        data = render_frame(decoded, header, options, number)
        # A cache, recomputed when lost: written without fsync (those were a quarter of a
        # first render) when a torn file is recognised above by how it ends.
        write = functools.partial(self.archive.write_derived, record, name, data,
                                  durable=end is None)
        if cache_writes is None:
            write()
        else:
            cache_writes.append(write)
        return data

    def thumbnail(self, records: list[InstanceRecord], options: RenderOptions, *,
                  cache_writes: list[CacheWrite] | None = None) -> bytes:
        """A representative image of a study, series or instance: the middle instance of
        its largest series, its middle frame (PS3.18 §10.4.1.1.4 leaves the choice to us).
        `cache_writes` as for `rendered`.

        Raises `NotFound` when none of the instances has pixel data.
        """
        if options.viewport is None:
            options = dataclasses.replace(options, viewport=THUMBNAIL_VIEWPORT)
        for record in _representatives(records):
            try:
                middle = (self.frame_count(record) + 1) // 2 if record.number_of_frames else 1
                return self.rendered(record, middle, options, kind="thumbnail",
                                     cache_writes=cache_writes)
            except NotFound:
                continue  # no pixel data (SR, PDF...): try the next candidate
        raise NotFound("none of the requested instances has pixel data to show")

    def _cache_name(self, record: InstanceRecord, kind: str, frame: int,
                    options: RenderOptions) -> str:
        # A reconciled patient's values are part of what is rendered (annotations).
        token = f"{kind}|{record.sha256}|{frame}|{options.cache_token()}" + (
            f"|{record.patient_patch}" if record.patient_patch else "")
        digest = hashlib.sha256(token.encode()).hexdigest()[:40]
        return f"{digest}.{_SUFFIX.get(options.media_type, 'bin')}"


def _frame_and_header(fh: BinaryIO, number: int, record: InstanceRecord
                      ) -> tuple[DecodedFrame, Dataset]:
    """Frame `number` decoded and the header: a ranged read for uncompressed pixels.

    `fh` is the instance as served. Unpatched, that is the blob as stored, so its header
    comes from the frames' cache (`dicom/pixel_headers.py`: a viewer that loaded an
    instance's frames does not parse it again for its thumbnail). A reconciled patient's
    instance (`record.patient_patch`) is a patched copy: parsed here, not cached."""
    if record.patient_patch:
        pixels = stored_pixels(fh)
    else:
        pixels, pixel_data_at = pixels_of(fh, record.blob_key, record.sha256)
        fh.seek(pixel_data_at)
    check_frames_exist(pixels, [number])
    frame = native_frame_from_file(fh, pixels, number)
    if frame is not None:
        return frame, pixels.header
    fh.seek(0)
    return decode_frame_from_file(fh, number)


def _representatives(records: list[InstanceRecord]) -> list[InstanceRecord]:
    """Candidates for a thumbnail, best first: the middle instance of the largest series,
    then the rest of that series outwards, then the other series."""
    by_series: dict[str, list[InstanceRecord]] = {}
    for record in records:
        by_series.setdefault(record.series_instance_uid, []).append(record)
    ordered = sorted(by_series.values(), key=lambda rs: -len(rs))
    out: list[InstanceRecord] = []
    for series in ordered:
        middle = (len(series) - 1) // 2
        # By position (a stable sort): `series.index(r)` in the key compared whole records
        # n²/2 times, ~20 ms for a 300-slice series' thumbnail.
        nearest = sorted(range(len(series)), key=lambda i: abs(i - middle))
        out.extend(series[i] for i in nearest)
    return out


def describe_part(part: FramePart) -> dict[str, Any]:
    """Per-part headers that say what uncompressed pixels are (minipacs extension)."""
    headers: dict[str, Any] = {
        "X-Photometric-Interpretation": part.photometric_interpretation,
        "X-Samples-Per-Pixel": str(part.samples_per_pixel),
        "X-Bits-Allocated": str(part.bits_allocated),
        "X-Pixel-Representation": str(part.pixel_representation),
    }
    if part.samples_per_pixel > 1:
        headers["X-Planar-Configuration"] = "0"
    return headers
