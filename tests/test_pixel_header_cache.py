"""The frames' header cache (dicom/pixel_headers.py) answers what a fresh parse answers,
and never answers a blob whose digest changed from an older entry."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from minipacs.dicom import pixel_headers
from minipacs.dicom.frames import native_frame_from_file, stored_pixels

pytestmark = pytest.mark.door_only  # an in-process cache, no backend


def _part10(rows: int, columns: int, uid: str) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.arange(rows * columns, dtype="<u2").tobytes()
    ds["PixelData"].VR = "OW"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_a_cached_header_gives_the_same_frame_as_a_fresh_parse() -> None:
    pixel_headers.forget_all()
    data = _part10(4, 6, "1.2.3.4")
    fresh = stored_pixels(io.BytesIO(data))
    first, at_first = pixel_headers.pixels_of(io.BytesIO(data), "k/1", "aa")
    # The second answer comes from the cache: a handle with no DICOM in it is not read.
    second, at_second = pixel_headers.pixels_of(io.BytesIO(b"not dicom"), "k/1", "aa")
    assert second is first and at_second == at_first
    assert (first.transfer_syntax, first.frame_count) == (fresh.transfer_syntax, 1)
    fh = io.BytesIO(data)
    fh.seek(at_second)
    frame = native_frame_from_file(fh, second, 1)
    assert frame is not None
    assert frame.little_endian_bytes() == np.arange(24, dtype="<u2").tobytes()


def test_a_blob_with_another_digest_is_parsed_again() -> None:
    pixel_headers.forget_all()
    old, new = _part10(4, 6, "1.2.3.4"), _part10(8, 3, "1.2.3.5")
    pixel_headers.pixels_of(io.BytesIO(old), "k/1", "digest-old")
    again, _ = pixel_headers.pixels_of(io.BytesIO(new), "k/1", "digest-new")
    assert (again.header.Rows, again.header.Columns) == (8, 3)
    assert again.header.SOPInstanceUID == "1.2.3.5"


def test_the_cache_is_bounded() -> None:
    pixel_headers.forget_all()
    data = _part10(2, 2, "1.2.3.6")
    for n in range(pixel_headers.MAX_ENTRIES + 10):
        pixel_headers.pixels_of(io.BytesIO(data), f"k/{n}", "d")
    assert len(pixel_headers._entries) == pixel_headers.MAX_ENTRIES
