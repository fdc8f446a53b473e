"""Pixel rendering (dicom/render.py) and frame extraction (dicom/frames.py): pure code on
real datasets from the factory."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.uid import JPEGBaseline8Bit, RLELossless

from factories import make_dataset, make_instance
from minipacs.dicom.frames import DecodedFrame, decode_frame, encapsulated_frame
from minipacs.dicom.render import (
    RenderOptions,
    Viewport,
    Window,
    apply_window,
    display_pixels,
    grey_display_values,
    header_window,
    parse_quality,
    parse_viewport,
    parse_window,
    render_frame,
)
from minipacs.errors import NotFound, QueryError
from minipacs.web.multipart import MultipartError, MultipartSpooler

pytestmark = pytest.mark.door_only  # pure pixel code, no backend


def _grey(values: list[int], **attrs: object) -> tuple[DecodedFrame, Dataset]:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    for key, value in attrs.items():
        setattr(ds, key, value)
    pixels = np.array([values], dtype=np.int16)
    return DecodedFrame(pixels, str(ds.PhotometricInterpretation), 16, 1), ds


def test_linear_window_follows_ps3_3_c_11_2_1_2() -> None:
    window = Window(center=40, width=400)
    low_edge = 40 - 0.5 - (400 - 1) / 2
    out = apply_window(np.array([low_edge - 10, low_edge, 40, low_edge + 399, 1000]), window)
    assert out[0] == 0 and out[1] == 0
    assert out[2] == pytest.approx(((40 - 39.5) / 399 + 0.5) * 255)
    assert out[3] == pytest.approx(255) and out[4] == 255


def test_modality_lut_is_applied_before_the_window() -> None:
    frame, ds = _grey([0, 50, 100], RescaleSlope=2, RescaleIntercept=-100)
    # modality values -100, 0, 100; window [-50, 50] saturates both ends, and 0 maps to
    # ((0 - (0 - 0.5)) / (101 - 1) + 0.5) * 255 = 128.8
    out = display_pixels(frame, ds, Window(0, 101))
    assert out.tolist() == [[0, 129, 255]]


def test_monochrome1_is_inverted() -> None:
    frame, ds = _grey([0, 50, 100], RescaleSlope=2, RescaleIntercept=-100)
    normal = display_pixels(frame, ds, Window(0, 101))
    ds.PhotometricInterpretation = "MONOCHROME1"
    frame1 = DecodedFrame(frame.pixels, "MONOCHROME1", 16, 1)
    assert display_pixels(frame1, ds, Window(0, 101)).tolist() == (255 - normal).tolist()


def test_header_window_is_used_and_a_requested_window_overrides_it() -> None:
    frame, ds = _grey([0, 100, 200], WindowCenter=100, WindowWidth=2)
    assert display_pixels(frame, ds).tolist() == [[0, 255, 255]]
    assert display_pixels(frame, ds, Window(200, 401)).tolist() == [[0, 64, 128]]


def test_without_any_window_the_pixel_range_is_stretched() -> None:
    frame, ds = _grey([10, 20, 30])
    assert display_pixels(frame, ds).tolist() == [[0, 128, 255]]


@pytest.mark.parametrize(("dtype", "low", "high"), [
    (np.int16, -32768, 32767), (np.int16, -20000, 20000), (np.int16, -2000, 3000),
    (np.uint16, 0, 65535), (np.int8, -100, 100),
    (np.uint16, 100, 4095), (np.uint8, 0, 255), (np.int8, -128, 127), (np.int32, -5000, 5000),
])
def test_the_lookup_table_gives_the_pipeline_s_image_bit_for_bit(dtype: type, low: int,
                                                                  high: int) -> None:
    # display_pixels maps a grey frame through a table of its value range; every window
    # function, rescale and inversion must give exactly what the per-pixel pipeline gives.
    rng = np.random.default_rng(13)
    pixels = rng.integers(low, high, (37, 29), endpoint=True).astype(dtype)
    pixels.flat[:2] = (low, high)  # the extremes, so a wrapping index would show
    windows = [None, Window(40, 400), Window(0.3, 1), Window(10, 0.5, "LINEAR_EXACT"),
               Window(100, 77.7, "LINEAR_EXACT"), Window(-100, 2000, "SIGMOID")]
    rescales: list[dict[str, object]] = [
        {}, {"RescaleSlope": 1, "RescaleIntercept": -1024},
        {"RescaleSlope": -0.37, "RescaleIntercept": 12.5},
        {"WindowCenter": 35, "WindowWidth": 80, "RescaleSlope": 2.5, "RescaleIntercept": 0.1}]
    for attrs in rescales:
        for window in windows:
            for photometric in ("MONOCHROME2", "MONOCHROME1"):
                frame, ds = _grey([0], PhotometricInterpretation=photometric, **attrs)
                frame = DecodedFrame(pixels, photometric, 16, 1)
                expected = grey_display_values(pixels, ds, window or header_window(ds),
                                               photometric == "MONOCHROME1")
                got = display_pixels(frame, ds, window)
                assert got.dtype == np.uint8 and got.shape == pixels.shape
                assert np.array_equal(got, expected), (attrs, window, photometric)


def test_the_lookup_table_follows_a_modality_lut_sequence_bit_for_bit() -> None:
    # PS3.3 C.11.1: values below the first mapped one take the first entry, above the
    # last the last entry; the table of the frame's range must give the same.
    frame, ds = _grey([0])
    item = Dataset()
    item.LUTDescriptor = [200, -50, 16]
    item.add(DataElement(0x00283006, "US", [int(v) for v in np.arange(200) ** 1.5]))
    ds.ModalityLUTSequence = [item]
    pixels = np.random.default_rng(3).integers(-100, 250, (20, 30)).astype(np.int16)
    frame = DecodedFrame(pixels, "MONOCHROME2", 16, 1)
    for window in (Window(1000, 1500), Window(500, 300, "SIGMOID"), None):
        expected = grey_display_values(pixels, ds, window, False)
        assert np.array_equal(display_pixels(frame, ds, window), expected), window


def test_sigmoid_and_linear_exact_functions_parse_and_differ() -> None:
    values = np.array([0.0, 50.0, 100.0])
    exact = apply_window(values, parse_window("50,100,linear-exact"))
    sigmoid = apply_window(values, parse_window("50,100,SIGMOID"))
    assert exact.tolist() == [0.0, 127.5, 255.0]
    # PS3.3 C.11.2.1.3.1: 255 / (1 + exp(-4 (x - c) / w))
    assert sigmoid.tolist() == pytest.approx([255 / (1 + np.e**2), 127.5, 255 / (1 + np.e**-2)])


@pytest.mark.parametrize(
    ("parse", "text", "name"),
    [(parse_window, "40", "window"), (parse_window, "a,b", "window"),
     (parse_window, "40,0", "window"), (parse_window, "40,400,gamma", "window"),
     (parse_viewport, "100", "viewport"), (parse_viewport, "0,10", "viewport"),
     (parse_viewport, "10,10,0,0,-5,5", "viewport"), (parse_quality, "101", "quality")],
)
def test_bad_rendering_parameters_name_the_parameter(parse: object, text: str, name: str
                                                     ) -> None:
    with pytest.raises(QueryError, match=name):
        parse(text)  # type: ignore[operator]


def test_viewport_scales_to_fit_keeping_the_aspect_ratio() -> None:
    ds = make_dataset(modality="OT", rows=32, columns=64)
    image = render_frame(decode_frame(ds, 1), ds,
                         RenderOptions("image/png", viewport=Viewport(32, 32)))
    assert Image.open(io.BytesIO(image)).size == (32, 16)


def test_ybr_jpeg_frames_decode_to_rgb_interleaved() -> None:
    ds = make_dataset(modality="US", transfer_syntax=JPEGBaseline8Bit, frames=2)
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    frame = decode_frame(ds, 2)
    assert frame.photometric_interpretation == "RGB"
    assert frame.pixels.shape == (64, 64, 3)
    assert len(frame.little_endian_bytes()) == 64 * 64 * 3


def test_encapsulated_frames_come_out_as_stored_and_missing_frames_are_not_found() -> None:
    ds = make_dataset(transfer_syntax=RLELossless, frames=3)
    second = encapsulated_frame(ds, 2)
    assert second and second != encapsulated_frame(ds, 1)
    with pytest.raises(NotFound, match="frame 4"):
        encapsulated_frame(ds, 4)


def _multipart(parts: list[bytes], boundary: str) -> bytes:
    body = b"preamble\r\n"
    for part in parts:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part
        body += b"\r\n"
    return body + f"--{boundary}--\r\nepilogue".encode()


def test_multipart_spooler_splits_parts_fed_one_byte_at_a_time(tmp_path: Path) -> None:
    parts = [make_instance(), b"x\r\n--notquite\r\n", b""]
    spooler = MultipartSpooler("b0undary", tmp_path)
    for byte in _multipart(parts, "b0undary"):
        spooler.feed(bytes([byte]))
    spooled = spooler.finish()
    assert [p.path.read_bytes() for p in spooled] == parts
    assert spooled[0].headers["content-type"] == "application/dicom"


def test_multipart_spooler_memory_stays_bounded_for_a_large_body(tmp_path: Path) -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB
    spooler = MultipartSpooler("big", tmp_path)
    tracemalloc.start()
    try:
        spooler.feed(b"--big\r\nContent-Type: application/dicom\r\n\r\n")
        for _ in range(1024):  # 64 MiB
            spooler.feed(chunk)
        spooler.feed(b"\r\n--big--\r\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (part,) = spooler.finish()
    assert part.size == 64 * 1024 * 1024
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes while spooling 64 MiB"


def test_multipart_spooler_rejects_a_body_without_closing_boundary(tmp_path: Path) -> None:
    spooler = MultipartSpooler("b", tmp_path)
    spooler.feed(b"--b\r\n\r\npartial")
    with pytest.raises(MultipartError, match="closing boundary"):
        spooler.finish()

