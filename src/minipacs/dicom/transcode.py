"""Transfer syntax conversion for peers that cannot take what we stored.

Stored bytes are never changed; a transcoded copy is made per request. Only
decompression to the uncompressed little-endian syntaxes is offered: that is what
every DICOM peer must accept (PS3.5 §10.1) and what the viewer asks for.
"""

from __future__ import annotations

import io
import logging

import pydicom
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from minipacs.errors import NotAcceptable

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
