"""A frame of uncompressed little-endian pixel data is a ranged read of the file, and it
gives exactly what the general decoder gives (masking, sign extension, colour, frames)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from minipacs.dicom.frames import decode_frame_from_file, native_frame_from_file, stored_pixels


def _part10(ts: str, bits: int, stored: int, signed: int, photometric: str, frames: int,
            planar: int = 0) -> bytes:
    samples = 3 if photometric in ("RGB", "YBR_FULL") else 1
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, "1.2.3.4"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 5, 7, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    if samples == 3:
        ds.PlanarConfiguration = planar
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
    ds.PixelRepresentation = signed
    # Random bytes: the unused high bits are set too, as some modalities send them.
    ds.PixelData = np.random.default_rng(bits + stored + signed).bytes(
        5 * 7 * samples * bits // 8 * frames)
    if bits > 8 and ts != ImplicitVRLittleEndian:
        ds["PixelData"].VR = "OW"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize(("bits", "stored", "signed", "photometric"), [
    (16, 12, 0, "MONOCHROME2"), (16, 12, 1, "MONOCHROME2"), (16, 16, 1, "MONOCHROME1"),
    (8, 8, 0, "RGB"), (8, 7, 0, "MONOCHROME2"), (32, 32, 1, "MONOCHROME2"),
    (32, 20, 0, "MONOCHROME2"),
])
def test_ranged_frame_equals_decoded_frame(ts: str, bits: int, stored: int, signed: int,
                                           photometric: str) -> None:
    data = _part10(ts, bits, stored, signed, photometric, frames=3)
    for number in (1, 2, 3):
        fh = io.BytesIO(data)
        ranged = native_frame_from_file(fh, stored_pixels(fh), number)
        decoded, _ = decode_frame_from_file(io.BytesIO(data), number)
        assert ranged is not None
        assert ranged.little_endian_bytes() == decoded.little_endian_bytes()
        assert ranged.pixels.shape == decoded.pixels.shape
        assert (ranged.photometric_interpretation, ranged.bits_allocated,
                ranged.pixel_representation) == (decoded.photometric_interpretation,
                                                 decoded.bits_allocated,
                                                 decoded.pixel_representation)


@pytest.mark.parametrize(("ts", "photometric", "planar"), [
    (ExplicitVRBigEndian, "MONOCHROME2", 0),  # needs byte swapping
    (ExplicitVRLittleEndian, "YBR_FULL", 0),  # the decoder converts to RGB
    (ExplicitVRLittleEndian, "RGB", 1),  # planar: the decoder interleaves
])
def test_data_the_ranged_read_cannot_serve_goes_to_the_decoder(ts: str, photometric: str,
                                                               planar: int) -> None:
    data = _part10(ts, 8 if photometric != "MONOCHROME2" else 16, 8
                   if photometric != "MONOCHROME2" else 12, 0, photometric, 2, planar)
    fh = io.BytesIO(data)
    assert native_frame_from_file(fh, stored_pixels(fh), 1) is None
