"""Frames of a stored instance: decoded pixels, or the compressed bitstreams as stored.

Pure functions over Part-10 bytes; no I/O. WADO-RS frames (PS3.18 §10.4.1.1.3) and
rendering both start here. Frame numbers are 1-based, as in the DICOMweb URL.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array  # type: ignore[attr-defined]
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from minipacs.errors import NotAcceptable, NotFound

NATIVE_SYNTAXES = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                             ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian})

# PS3.18 Table 8.7.3-3/-4: media types of compressed frames and the transfer syntaxes each
# one may carry. Keys are media types; values are transfer syntax UIDs (first = default).
FRAME_MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "image/jpeg": ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
                   "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"),
    "image/jls": ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    "image/jp2": ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"),
    "image/jpx": ("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"),
    "image/jphc": ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                   "1.2.840.10008.1.2.4.203"),
    "image/x-dicom-rle": ("1.2.840.10008.1.2.5",),
}


def media_type_of(transfer_syntax_uid: str) -> str | None:
    """The compressed-frame media type for a stored transfer syntax, if it has one."""
    for media, syntaxes in FRAME_MEDIA_TYPES.items():
        if transfer_syntax_uid in syntaxes:
            return media
    return None


@dataclass(frozen=True)
class DecodedFrame:
    """One frame's pixels as decoded, and what they are.

    `pixels` is (rows, columns) or (rows, columns, samples) with samples interleaved;
    `photometric_interpretation` is what the decoder produced (YBR_FULL and YBR_FULL_422
    JPEG sources come out RGB, as pydicom converts them).
    """

    pixels: NDArray[Any]
    photometric_interpretation: str
    bits_allocated: int
    pixel_representation: int

    def little_endian_bytes(self) -> bytes:
        """Uncompressed little-endian bytes, samples interleaved (PlanarConfiguration 0)."""
        arr = self.pixels
        if self.bits_allocated > 8 and arr.dtype.itemsize == 1:
            arr = arr.astype(np.uint16)
        return np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False
                                                ).tobytes()


def read_dataset(part10: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(part10))


def frame_count(ds: Dataset) -> int:
    """Number of frames (1 when NumberOfFrames is absent); 0 without pixel data."""
    if "PixelData" not in ds:
        return 0
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def check_frame_numbers(ds: Dataset, numbers: list[int]) -> None:
    """Raise `NotFound` naming the first frame number the instance does not have."""
    count = frame_count(ds)
    if count == 0:
        raise NotFound(f"instance {ds.get('SOPInstanceUID', '?')} has no pixel data")
    for number in numbers:
        if number < 1 or number > count:
            raise NotFound(
                f"frame {number} does not exist: instance {ds.get('SOPInstanceUID', '?')} has "
                f"{count} frame(s), numbered from 1"
            )


def stored_transfer_syntax(ds: Dataset) -> UID:
    return UID(str(ds.file_meta.TransferSyntaxUID))


def decode_frame(ds: Dataset, number: int) -> DecodedFrame:
    """Decode frame `number` (1-based), decompressing when stored compressed.

    Raises `NotAcceptable` when no installed codec can decode the stored syntax.
    """
    check_frame_numbers(ds, [number])
    ts = stored_transfer_syntax(ds)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise NotAcceptable(f"frames stored as {ts.name} ({ts}) cannot be decoded") from exc
    try:
        arr, meta = decoder.as_array(ds, index=number - 1)
    except Exception as exc:  # codecs raise assorted errors on streams they cannot read
        raise NotAcceptable(
            f"frame {number} of {ds.get('SOPInstanceUID', '?')} ({ts.name}) could not be "
            f"decoded: {exc}"
        ) from exc
    return DecodedFrame(
        pixels=arr,
        photometric_interpretation=str(meta.get("photometric_interpretation",
                                                ds.get("PhotometricInterpretation", ""))),
        bits_allocated=int(meta.get("bits_allocated", ds.get("BitsAllocated", 8))),
        pixel_representation=int(meta.get("pixel_representation",
                                          ds.get("PixelRepresentation", 0))),
    )


def decode_frame_from_file(fh: BinaryIO, number: int) -> tuple[DecodedFrame, Dataset]:
    """Decode frame `number` (1-based) of the Part-10 file open in `fh` (seekable), reading
    only that frame for uncompressed data. Returns the frame and the header (no pixels).

    Raises `NotFound` (no such frame, no pixel data) or `NotAcceptable` (cannot decode).
    """
    header = pydicom.dcmread(fh, stop_before_pixels=True)
    if "Rows" not in header or "Columns" not in header:
        raise NotFound(f"instance {header.get('SOPInstanceUID', '?')} has no pixel data")
    try:
        count = max(int(header.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        count = 1
    if number < 1 or number > count:
        raise NotFound(f"frame {number} does not exist: instance "
                       f"{header.get('SOPInstanceUID', '?')} has {count} frame(s), numbered from 1")
    ts = stored_transfer_syntax(header)
    fh.seek(0)
    if ts == DeflatedExplicitVRLittleEndian:
        # The whole data set is deflated: no frame can be found without inflating it all.
        full = pydicom.dcmread(fh)
        return decode_frame(full, number), full
    try:
        arr = pixel_array(fh, index=number - 1)
    except AttributeError as exc:  # pydicom: the data set has no Pixel Data element
        raise NotFound(f"instance {header.get('SOPInstanceUID', '?')} has no pixel data") from exc
    except Exception as exc:  # codecs raise assorted errors on streams they cannot read
        raise NotAcceptable(
            f"frame {number} of {header.get('SOPInstanceUID', '?')} ({ts.name}) could not be "
            f"decoded: {exc}"
        ) from exc
    photometric = str(header.get("PhotometricInterpretation", ""))
    if photometric.startswith("YBR") and arr.ndim == 3:
        photometric = "RGB"  # pydicom converts YBR to RGB when decoding (as_rgb)
    frame = DecodedFrame(arr, photometric, int(header.get("BitsAllocated", 8)),
                         int(header.get("PixelRepresentation", 0)))
    return frame, header


def can_decode(transfer_syntax_uid: str) -> bool:
    """Whether an installed codec can decode pixel data stored in this syntax."""
    try:
        return bool(get_decoder(UID(transfer_syntax_uid)).is_available)
    except NotImplementedError:
        return False


def encapsulated_frame(ds: Dataset, number: int) -> bytes:
    """Frame `number` (1-based) exactly as stored in encapsulated pixel data (PS3.5 A.4)."""
    check_frame_numbers(ds, [number])
    ts = stored_transfer_syntax(ds)
    if ts in NATIVE_SYNTAXES:
        raise NotAcceptable(f"pixel data is stored uncompressed ({ts.name}), not as a bitstream")
    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    return get_frame(ds.PixelData, number - 1, number_of_frames=frame_count(ds),
                     extended_offsets=extended)


def element_value(ds: Dataset, tag: int) -> bytes | None:
    """The raw little-endian value of a (top-level or nested) element, for bulk data.

    Returns None when no element has that tag. Nested elements are searched depth-first,
    since stored BulkDataURIs name the tag only.
    """
    if tag in ds:
        elem = ds[tag]
        value = elem.value
        if isinstance(value, bytes):
            return value
        return None
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                found = element_value(item, tag)
                if found is not None:
                    return found
    return None


@dataclass(frozen=True)
class StoredPixels:
    """Where a Part-10 file's pixel data is and what it holds, read from the header only.

    `fragments_at` is the file offset of the Basic Offset Table item of encapsulated
    pixel data (PS3.5 A.4), None when the pixel data is native (uncompressed)."""

    header: Dataset
    transfer_syntax: UID
    frame_count: int
    fragments_at: int | None


def stored_pixels(fh: BinaryIO) -> StoredPixels:
    """Read the header of the Part-10 file open in `fh` (seekable), not its pixel data.

    Raises `NotFound` when the instance has no pixel data."""
    fh.seek(0)
    header = pydicom.dcmread(fh, stop_before_pixels=True)
    ts = stored_transfer_syntax(header)
    uid = header.get("SOPInstanceUID", "?")
    if "Rows" not in header or "Columns" not in header:
        raise NotFound(f"instance {uid} has no pixel data")
    try:
        count = max(int(header.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        count = 1
    fragments_at = None
    if ts not in NATIVE_SYNTAXES:
        # stop_before_pixels leaves the file at the (7FE0,0010) element: tag, VR OB, two
        # reserved bytes, undefined length, then the item sequence (PS3.5 A.4).
        start = fh.tell()
        element_head = fh.read(12)
        if element_head[:4] != b"\xe0\x7f\x10\x00" or element_head[8:12] != b"\xff" * 4:
            raise NotFound(f"instance {uid} has no encapsulated pixel data")
        fragments_at = start + 12
    return StoredPixels(header, ts, count, fragments_at)


def check_frames_exist(pixels: StoredPixels, numbers: list[int]) -> None:
    """Raise `NotFound` naming the first frame number the instance does not have."""
    for number in numbers:
        if number < 1 or number > pixels.frame_count:
            raise NotFound(
                f"frame {number} does not exist: instance "
                f"{pixels.header.get('SOPInstanceUID', '?')} has {pixels.frame_count} "
                "frame(s), numbered from 1"
            )


def encapsulated_frame_from_file(fh: BinaryIO, pixels: StoredPixels, number: int) -> bytes:
    """Frame `number` (1-based) as stored, read from the file without loading the other
    frames: one frame's bytes in memory, however large the instance."""
    if pixels.fragments_at is None:
        raise NotAcceptable(f"pixel data is stored uncompressed ({pixels.transfer_syntax.name}), "
                            "not as a bitstream")
    header = pixels.header
    extended = None
    if "ExtendedOffsetTable" in header and "ExtendedOffsetTableLengths" in header:
        extended = (header.ExtendedOffsetTable, header.ExtendedOffsetTableLengths)
    fh.seek(pixels.fragments_at)
    return get_frame(fh, number - 1, number_of_frames=pixels.frame_count,
                     extended_offsets=extended)


_RANGED_PHOTOMETRICS = {"MONOCHROME1": 1, "MONOCHROME2": 1, "RGB": 3}


def native_frame_from_file(fh: BinaryIO, pixels: StoredPixels, number: int
                           ) -> DecodedFrame | None:
    """Frame `number` of uncompressed little-endian pixel data as a ranged read of the
    file: the frame's bytes only, no parse of the pixel data element (PS3.5 §8.1.1: native
    frames are contiguous, each Rows x Columns x SamplesPerPixel x BitsAllocated/8 bytes).

    Gives what `decode_frame_from_file` gives (unused high bits masked, or sign-extended for
    signed pixels, as pydicom does), or None when this data needs the general decoder:
    big endian, deflated, bit-packed or float pixels, planar or YBR colour. `fh` must be
    where `stored_pixels` left it (at the Pixel Data element)."""
    header = pixels.header
    ts = pixels.transfer_syntax
    if ts not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        return None
    photometric = str(header.get("PhotometricInterpretation", ""))
    samples = int(header.get("SamplesPerPixel", 1))
    bits = int(header.get("BitsAllocated", 0))
    stored = int(header.get("BitsStored", bits))
    signed = int(header.get("PixelRepresentation", 0)) == 1
    if (_RANGED_PHOTOMETRICS.get(photometric) != samples or bits not in (8, 16, 32)
            or not 0 < stored <= bits or int(header.get("PlanarConfiguration", 0)) != 0):
        return None
    rows, columns = int(header.Rows), int(header.Columns)
    size = rows * columns * samples * bits // 8
    start = fh.tell()
    explicit = ts == ExplicitVRLittleEndian
    head = fh.read(12 if explicit else 8)
    if head[:4] != b"\xe0\x7f\x10\x00" or (explicit and head[4:6] not in (b"OB", b"OW")):
        fh.seek(start)
        return None
    length = int.from_bytes(head[-4:], "little")
    if length == 0xFFFFFFFF or length < size * pixels.frame_count:
        fh.seek(start)
        return None
    fh.seek(start + len(head) + size * (number - 1))
    data = fh.read(size)
    if len(data) != size:
        fh.seek(start)
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    arr = np.frombuffer(data, dtype=dtype).reshape(
        (rows, columns, samples) if samples > 1 else (rows, columns))
    if stored < bits:
        unused = bits - stored
        # Unsigned: clear the unused high bits; signed: sign-extend from BitsStored.
        arr = (arr << unused) >> unused if signed else arr & ((1 << stored) - 1)
    return DecodedFrame(arr, photometric, bits, int(signed))
