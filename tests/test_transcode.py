"""Transcoding stored instances for peers that need uncompressed data."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import (
    JPEG2000,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
)

from factories import make_instance
from minipacs.dicom.transcode import transcode
from minipacs.errors import NotAcceptable

pytestmark = pytest.mark.door_only  # pure pixel code, no backend

LOSSLESS = [RLELossless, JPEG2000Lossless, JPEGLosslessSV1, ExplicitVRBigEndian,
            ImplicitVRLittleEndian]


@pytest.mark.parametrize("source", LOSSLESS, ids=lambda ts: ts.name)
@pytest.mark.parametrize("target", [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
                         ids=lambda ts: ts.name)
def test_lossless_sources_decompress_to_identical_pixels(source: str, target: str) -> None:
    original = make_instance(transfer_syntax=source, frames=2)
    reference = dcmread(io.BytesIO(make_instance(transfer_syntax=ExplicitVRLittleEndian,
                                                 frames=2))).pixel_array
    converted = transcode(original, target)
    assert converted[128:132] == b"DICM"
    out = dcmread(io.BytesIO(converted))
    assert out.file_meta.TransferSyntaxUID == target
    assert np.array_equal(out.pixel_array.astype(reference.dtype), reference)


@pytest.mark.parametrize("source", [JPEGBaseline8Bit, JPEG2000], ids=lambda ts: ts.name)
def test_lossy_sources_decompress(source: str) -> None:
    out = dcmread(io.BytesIO(transcode(make_instance(transfer_syntax=source),
                                       ExplicitVRLittleEndian)))
    assert out.pixel_array.shape == (64, 64)


def test_same_syntax_returns_the_bytes_unchanged() -> None:
    data = make_instance(transfer_syntax=RLELossless)
    assert transcode(data, RLELossless) is data


def test_compressing_is_not_offered() -> None:
    with pytest.raises(NotAcceptable, match="only decompression"):
        transcode(make_instance(), JPEG2000Lossless)
