"""Transfer syntax conversion for peers that cannot take what we stored.

Stored bytes are never changed; a transcoded copy is made per request. Only
decompression to the uncompressed little-endian syntaxes is offered: that is what
every DICOM peer must accept (PS3.5 §10.1) and what the viewer asks for.
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from minipacs.dicom.frames import DecodedFrame, decode_frame_from_file
from minipacs.errors import NotAcceptable, NotFound

log = logging.getLogger(__name__)

UNCOMPRESSED_TARGETS = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
_NATIVE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
                     DeflatedExplicitVRLittleEndian})


def can_transcode(source_ts: str, target_ts: str) -> bool:
    """Whether `transcode` may succeed (decoding can still fail on a broken stream)."""
    if source_ts == target_ts:
        return True
    return target_ts in UNCOMPRESSED_TARGETS


def transcode(part10: bytes, target_ts: str) -> bytes:
    """The Part-10 instance re-encoded in `target_ts` (Explicit or Implicit VR LE).

    Raises `NotAcceptable` with the reason when the target is not offered or the pixel
    data cannot be decoded (no codec, corrupt stream).
    """
    target = UID(target_ts)
    ds = pydicom.dcmread(io.BytesIO(part10))
    source = UID(ds.file_meta.TransferSyntaxUID)
    if source == target:
        return part10
    if target not in UNCOMPRESSED_TARGETS:
        raise NotAcceptable(
            f"cannot convert {source.name} to {target.name}: only decompression to "
            "Explicit or Implicit VR Little Endian is offered"
        )
    try:
        if source not in _NATIVE and "PixelData" in ds:
            # Same instance in another encoding: the SOP Instance UID must not change
            # (pydicom would generate a new one by default).
            ds.decompress(generate_instance_uid=False)
        elif "PixelData" in ds and source == ExplicitVRBigEndian:
            # The value of OW pixel data is byte-swapped; pydicom keeps raw bytes.
            arr = ds.pixel_array
            ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    except Exception as exc:  # codecs raise assorted errors on streams they cannot read
        raise NotAcceptable(
            f"cannot decode {source.name} pixel data of {ds.get('SOPInstanceUID', '?')}: {exc}"
        ) from exc
    ds.file_meta.TransferSyntaxUID = target
    out = io.BytesIO()
    # force_encoding: a big-endian source is re-encoded little endian (values are decoded).
    ds.preamble = ds.preamble or b"\0" * 128
    dcmwrite(out, ds, implicit_vr=target == ImplicitVRLittleEndian, little_endian=True,
             force_encoding=True)
    return out.getvalue()


@dataclass(frozen=True)
class TranscodedStream:
    """A transcoded Part-10 instance produced piece by piece: `length` bytes in all,
    known before the first chunk (for the part's Content-Length)."""

    length: int
    chunks: Iterator[bytes]


_PIXEL_DATA_LE = b"\xe0\x7f\x10\x00"
_STREAMABLE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
_CHUNK = 1024 * 1024


def transcode_stream(fh: BinaryIO, target_ts: str) -> TranscodedStream:
    """The instance open in `fh` (seekable) re-encoded in `target_ts`, with memory bounded
    by the header plus one frame (or one 1 MiB chunk of native pixel data) instead of
    the whole instance twice over.

    Streamed: little-endian native and compressed sources with Pixel Data. Elements after
    Pixel Data (only Data Set Trailing Padding and Digital Signatures may follow it, and a
    signature no longer holds for re-encoded bytes) are left out. Other sources (big
    endian, deflated, no pixel data) go through `transcode` in memory. Raises
    `NotAcceptable` as `transcode` does; for a compressed source the first frame is
    decoded before this returns, so an undecodable stream fails here, not mid-response.
    """
    target = UID(target_ts)
    fh.seek(0)
    header = pydicom.dcmread(fh, stop_before_pixels=True)
    source = UID(header.file_meta.TransferSyntaxUID)
    pixel_at = fh.tell()
    head = fh.read(12)
    if target not in UNCOMPRESSED_TARGETS or source == target:
        fh.seek(0)
        data = transcode(fh.read(), target)
        return TranscodedStream(len(data), iter((data,)))
    if head[:4] != _PIXEL_DATA_LE or source in (ExplicitVRBigEndian,
                                                DeflatedExplicitVRLittleEndian):
        fh.seek(0)
        data = transcode(fh.read(), target)
        return TranscodedStream(len(data), iter((data,)))
    if source in _STREAMABLE:
        return _native_stream(fh, header, source, target, pixel_at, head)
    return _decoded_stream(fh, header, source, target)


def _element_head(target: UID, vr: str, length: int) -> bytes:
    """Pixel Data element header, PS3.5 §7.1.2 (explicit: OB/OW have 2 reserved bytes
    and a 32-bit length) or §7.1.3 (implicit: tag and 32-bit length)."""
    if target == ImplicitVRLittleEndian:
        return _PIXEL_DATA_LE + struct.pack("<I", length)
    return _PIXEL_DATA_LE + vr.encode("ascii") + b"\0\0" + struct.pack("<I", length)


def _header_bytes(header: Dataset, target: UID) -> bytes:
    header.file_meta.TransferSyntaxUID = target
    header.preamble = header.preamble or b"\0" * 128
    out = io.BytesIO()
    dcmwrite(out, header, implicit_vr=target == ImplicitVRLittleEndian, little_endian=True,
             force_encoding=True)
    return out.getvalue()


def _native_stream(fh: BinaryIO, header: Dataset, source: UID, target: UID, pixel_at: int,
                   head: bytes) -> TranscodedStream:
    # Same little-endian value bytes either way; only the element header changes.
    if source == ImplicitVRLittleEndian:
        length = struct.unpack("<I", head[4:8])[0]
        value_at = pixel_at + 8
        vr = "OW" if int(header.get("BitsAllocated", 16)) > 8 else "OB"
    else:
        vr = head[4:6].decode("ascii", "replace")
        length = struct.unpack("<I", head[8:12])[0]
        value_at = pixel_at + 12
    if length == 0xFFFFFFFF:
        raise NotAcceptable(f"{header.get('SOPInstanceUID', '?')}: native Pixel Data with "
                            "undefined length is not valid DICOM (PS3.5 §A.4)")
    prefix = _header_bytes(header, target) + _element_head(target, vr, length)

    def chunks() -> Iterator[bytes]:
        yield prefix
        fh.seek(value_at)
        left = length
        while left > 0:
            chunk = fh.read(min(_CHUNK, left))
            if not chunk:
                raise NotAcceptable(f"{header.get('SOPInstanceUID', '?')}: Pixel Data is "
                                    f"cut short, {left} bytes missing")
            left -= len(chunk)
            yield chunk

    return TranscodedStream(len(prefix) + length, chunks())


def _decoded_stream(fh: BinaryIO, header: Dataset, source: UID, target: UID
                    ) -> TranscodedStream:
    uid = header.get("SOPInstanceUID", "?")
    try:
        count = max(int(header.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        count = 1

    def frame(number: int) -> DecodedFrame:
        fh.seek(0)
        try:
            decoded, _ = decode_frame_from_file(fh, number)
        except NotFound as exc:
            raise NotAcceptable(f"cannot decode {source.name} pixel data of {uid}: {exc}"
                                ) from exc
        return decoded

    first = frame(1)
    first_bytes = first.little_endian_bytes()
    frame_size = len(first_bytes)
    length = frame_size * count
    if length >= 0xFFFFFFFE:
        raise NotAcceptable(f"{uid} decompressed would be {length} bytes, beyond the 4 GiB "
                            "a Pixel Data value can hold (PS3.5 §7.1.2); ask for it as stored")
    pad = length % 2
    # What the decoder produced (PS3.5 §8.2: the header must describe the native pixels):
    # interleaved samples, YBR JPEG sources as RGB, bits as the array holds them.
    samples = first.pixels.shape[2] if first.pixels.ndim == 3 else 1
    header.PhotometricInterpretation = first.photometric_interpretation
    bits = 8 * (frame_size // max(1, first.pixels.shape[0] * first.pixels.shape[1] * samples))
    header.BitsAllocated = bits
    if samples > 1:
        header.PlanarConfiguration = 0
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in header:
            delattr(header, keyword)
    prefix = _header_bytes(header, target) + _element_head(target, "OW" if bits > 8 else "OB",
                                                           length + pad)

    def chunks() -> Iterator[bytes]:
        yield prefix
        yield first_bytes
        for number in range(2, count + 1):
            data = frame(number).little_endian_bytes()
            if len(data) != frame_size:
                raise NotAcceptable(f"frame {number} of {uid} decodes to {len(data)} bytes, "
                                    f"frame 1 to {frame_size}")
            yield data
        if pad:
            yield b"\0"

    return TranscodedStream(len(prefix) + length + pad, chunks())
