"""annotation=patient,technique (PS3.18 §8.3.5.1.1): text burned into rendered images,
in the pure rendering code and through WADO-RS rendered resources on a real server."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageFont

from conftest import ServerProcess
from dicomweb_peers import Stored, store
from factories import make_dataset, make_instance
from minipacs.dicom.annotation import (
    annotate,
    annotation_font,
    drawable,
    parse_annotation,
    patient_lines,
    technique_lines,
)
from minipacs.dicom.frames import decode_frame
from minipacs.dicom.render import RenderOptions, Viewport, Window, render_frame
from minipacs.errors import QueryError

pytestmark = pytest.mark.door_only  # the rendering code

NAME = "Nguyễn^Thị Đức Hạnh"


def _pixels(data: bytes) -> NDArray[np.uint8]:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_annotation_keywords_parse_in_a_fixed_order() -> None:
    assert parse_annotation("technique,patient") == ("patient", "technique")
    assert parse_annotation(" Patient ") == ("patient",)
    with pytest.raises(QueryError, match="annotation='patient,age'.*'age'"):
        parse_annotation("patient,age")
    with pytest.raises(QueryError, match="annotation"):
        parse_annotation("")


def test_patient_and_technique_lines_say_what_the_header_holds() -> None:
    ds = make_dataset(patient_name=NAME, patient_id="BN-77", PatientBirthDate="19851231",
                      PatientSex="F", KVP="120", XRayTubeCurrent="250", SliceThickness="5",
                      SeriesNumber=4, InstanceNumber=12)
    assert patient_lines(ds) == ["Nguyễn Thị Đức Hạnh", "ID: BN-77  Sex: F", "DOB: 1985-12-31"]
    lines = technique_lines(ds, 1, (40.0, 400.0))
    assert lines[0] == "CT 2024-03-15"
    assert "Se: 4 Im: 12" in lines and "120 kV 250 mA" in lines
    assert "5 mm slice" in lines and lines[-1] == "C: 40 W: 400"
    multi = make_dataset(frames=3)
    assert any("Fr: 2/3" in line for line in technique_lines(multi, 2, None))


def test_the_built_in_font_writes_vietnamese_without_diacritics_never_boxes() -> None:
    builtin = ImageFont.load_default(14)  # Pillow's own font: no Vietnamese glyphs
    assert drawable("Nguyễn Thị Đức Hạnh", builtin) == "Nguyen Thi Duc Hanh"
    assert drawable("患者", builtin) == "??"
    # A font path that cannot be read falls back to the built-in font.
    fallback = annotation_font(14, "/nonexistent/font.ttf")
    assert drawable("ễ", fallback) == "e"


def test_annotation_works_with_the_built_in_font_alone() -> None:
    # What a host without fonts-dejavu gets: readable text, no boxes, still burned in.
    ds = make_dataset(patient_name=NAME)
    image = Image.new("L", (300, 200), 0)
    builtin = np.asarray(annotate(image, ds, ("patient",), font_file="/nonexistent.ttf"))
    expected = Image.new("L", (300, 200), 0)
    draw_font = annotation_font(max(9, 200 // 28), "/nonexistent.ttf")
    assert drawable(patient_lines(ds)[0], draw_font) == "Nguyen Thi Duc Hanh"
    assert builtin[:40, :150].any() and not builtin[100:].any()
    assert not np.array_equal(builtin, np.asarray(expected))


def test_the_chosen_font_draws_every_character_it_is_given() -> None:
    font = annotation_font(14)
    probe = bytes(font.getmask("\U0010fffd"))
    text = drawable("Nguyễn Thị Đức Hạnh ươ", font)
    assert len(text) == len("Nguyễn Thị Đức Hạnh ươ")
    assert all(c.isspace() or bytes(font.getmask(c)) != probe for c in text)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_annotate_marks_the_corners_only_and_is_deterministic(mode: str) -> None:
    ds = make_dataset(patient_name=NAME, KVP="80")
    image = Image.new(mode, (400, 300), 60 if mode == "L" else (60, 60, 60))
    base = np.asarray(image)
    patient = np.asarray(annotate(image, ds, ("patient",)))
    both = np.asarray(annotate(image, ds, ("patient", "technique"), window=(40, 400)))
    assert np.array_equal(both, np.asarray(annotate(image, ds, ("patient", "technique"),
                                                    window=(40, 400))))
    left, right = np.s_[:50, :150], np.s_[:50, 250:]
    assert not np.array_equal(patient[left], base[left])
    assert np.array_equal(patient[right], base[right])
    assert not np.array_equal(both[right], base[right])
    assert np.array_equal(both[150:], base[150:])  # the lower half keeps the image
    assert np.array_equal(np.asarray(image), base)  # the input is not drawn on
    assert annotate(image, ds, ()) is image


def test_a_tiny_image_can_still_be_annotated() -> None:
    ds = make_dataset(rows=8, columns=8)
    data = render_frame(decode_frame(ds, 1), ds,
                        RenderOptions("image/png", annotation=("patient", "technique")))
    assert _pixels(data).shape == (8, 8)


def test_render_frame_annotates_after_the_viewport_with_the_window_used() -> None:
    ds = make_dataset(rows=64, columns=64, WindowCenter="100", WindowWidth="800")
    frame = decode_frame(ds, 1)
    viewport = Viewport(256, 256)
    plain = Image.open(io.BytesIO(render_frame(frame, ds, RenderOptions(
        "image/png", viewport=viewport))))
    annotated = _pixels(render_frame(frame, ds, RenderOptions(
        "image/png", viewport=viewport, annotation=("technique",))))
    # The header's window was applied, so the header's window is what the text says; and
    # the text is drawn on the scaled image (256 px), not scaled with it.
    assert np.array_equal(annotated, np.asarray(annotate(plain, ds, ("technique",),
                                                         window=(100, 800))))
    requested = _pixels(render_frame(frame, ds, RenderOptions(
        "image/png", window=Window(0, 4000), viewport=viewport, annotation=("technique",))))
    plain_requested = Image.open(io.BytesIO(render_frame(frame, ds, RenderOptions(
        "image/png", window=Window(0, 4000), viewport=viewport))))
    assert np.array_equal(requested, np.asarray(annotate(plain_requested, ds, ("technique",),
                                                         window=(0, 4000))))


def test_the_cache_token_names_the_annotation_and_region() -> None:
    tokens = {RenderOptions().cache_token(), RenderOptions(annotation=("patient",)).cache_token(),
              RenderOptions(annotation=("patient", "technique")).cache_token(),
              RenderOptions(region=(0, 0, 0.5, 0.5)).cache_token()}
    assert len(tokens) == 4


# ---------------------------------------------------------------------- over HTTP
@pytest.fixture(scope="module")
def ct(server: ServerProcess) -> Stored:
    return store(server, make_instance(rows=128, columns=128, frames=2, patient_name=NAME,
                                       patient_id="ANN-1", PatientBirthDate="19600101",
                                       KVP="120"))[0]


def _rendered(server: ServerProcess, path: str, **params: str) -> httpx.Response:
    return httpx.get(f"{server.dicomweb_url}{path}", timeout=60,
                     params={"accept": "image/png", "viewport": "512,512", **params},
                         headers=server.auth)


def test_rendered_instance_and_frames_honour_annotation(server: ServerProcess,
                                                        ct: Stored) -> None:
    for path in (ct.path + "/rendered", ct.path + "/frames/2/rendered"):
        plain = _pixels(_rendered(server, path).content)
        annotated_response = _rendered(server, path, annotation="patient,technique")
        assert annotated_response.status_code == 200
        annotated = _pixels(annotated_response.content)
        assert annotated.shape == plain.shape == (512, 512)
        corners = (np.s_[:80, :200], np.s_[:80, 312:])
        for corner in corners:
            assert not np.array_equal(annotated[corner], plain[corner]), path
        assert np.array_equal(annotated[300:], plain[300:])
        # Deterministic, and the cache keeps annotated and plain images apart.
        assert np.array_equal(_pixels(_rendered(server, path,
                                                annotation="patient,technique").content),
                              annotated)
        assert np.array_equal(_pixels(_rendered(server, path).content), plain)


def test_rendered_series_honours_annotation(server: ServerProcess, ct: Stored) -> None:
    path = f"/studies/{ct.study}/series/{ct.series}/rendered"
    plain = httpx.get(f"{server.dicomweb_url}{path}", timeout=60, headers=server.auth)
    annotated = httpx.get(f"{server.dicomweb_url}{path}", params={"annotation": "patient"},
                          timeout=60, headers=server.auth)
    assert annotated.status_code == 200 and annotated.content != plain.content


def test_a_bad_annotation_is_400_naming_it(server: ServerProcess, ct: Stored) -> None:
    response = _rendered(server, ct.path + "/rendered", annotation="weather")
    assert response.status_code == 400
    assert "annotation" in response.text and "patient" in response.text
