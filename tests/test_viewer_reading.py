# ruff: noqa: E501  -- JavaScript snippets for the page are kept on one line each
"""Reading in the viewer (issue #14, "Reading"), in Chromium against a real minipacs.

Priors: the patient's other studies listed, one opened beside the current study, scrolled
together by position in one frame of reference, or after "lock here" in another.

Measurements: each length names where its millimetres come from (PixelSpacing,
ImagerPixelSpacing with or without EstimatedRadiographicMagnificationFactor, an ultrasound
region's physical deltas) and an image without calibration measures in px, never mm.
The instances are made here with the calibration under test and stored over STOW-RS.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page
from pydicom.uid import generate_uid

from conftest import ServerProcess
from dicomweb_peers import store
from factories import make_instance
from viewer_support import (
    ARTIFACTS,
    H,
    reader_session,
    session_cookie,
    state,
    text_of,
    wait_for_first_image,
)

ULTRASOUND_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
# One ultrasound region: columns 20..179, rows 30..189, 0.05 cm per column, 0.04 cm per row.
US_REGION = {
    "RegionSpatialFormat": 1, "RegionDataType": 1, "RegionFlags": 0,
    "RegionLocationMinX0": 20, "RegionLocationMinY0": 30,
    "RegionLocationMaxX1": 179, "RegionLocationMaxY1": 189,
    "PhysicalUnitsXDirection": 3, "PhysicalUnitsYDirection": 3,
    "PhysicalDeltaX": 0.05, "PhysicalDeltaY": 0.04,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(Path(tmp_path_factory.mktemp("reading-server"))).start()
    yield proc
    proc.stop()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_cookies([session_cookie(server, reader_session(server))])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(15_000)
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
    context.close()
    assert not errors, f"JavaScript errors in the viewer: {errors}"


def store_one(server: ServerProcess, **attributes: Any) -> str:
    """Store one 200×200 instance in a study of its own; its Study Instance UID."""
    return store(server, make_instance(rows=200, columns=200, **attributes))[0].study


def drag_length(page: Page, start: tuple[int, int], end: tuple[int, int]) -> tuple[dict[str, Any], float, float]:
    """Draw a length from image point `start` to `end`; the result and the image-space
    deltas (columns, rows) where the whole-pixel mouse positions fell."""
    page.click("[data-testid=tool-length]")
    a = page.evaluate(f"{H}.imageToClient({start[0]}, {start[1]})")
    b = page.evaluate(f"{H}.imageToClient({end[0]}, {end[1]})")
    x0, y0, x1, y1 = (math.floor(v) for v in (a["x"], a["y"], b["x"], b["y"]))
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    page.wait_for_function(f"() => {H}.lastMeasurement !== null")
    pa = page.evaluate(f"{H}.clientToImage({x0}, {y0})")
    pb = page.evaluate(f"{H}.clientToImage({x1}, {y1})")
    return state(page, "lastMeasurement"), pb["x"] - pa["x"], pb["y"] - pa["y"]


def open_study(server: ServerProcess, page: Page, study: str) -> None:
    page.goto(f"{server.http_url}/viewer/?StudyInstanceUID={study}")
    wait_for_first_image(page)


def label(page: Page) -> str:
    return text_of(page, ".viewport.active [data-testid=measurement-label]")


def test_length_from_pixel_spacing_names_pixel_spacing(server: ServerProcess, page: Page) -> None:
    study = store_one(server, modality="CT", PixelSpacing=[0.5, 0.25])
    open_study(server, page, study)
    result, dx, dy = drag_length(page, (40, 50), (100, 130))
    assert result["calibration"] == "patient"
    assert result["unit"] == "mm"
    assert result["value"] == pytest.approx(math.hypot(dx * 0.25, dy * 0.5), rel=1e-3)
    assert "mm" in label(page) and "(PixelSpacing)" in label(page)


def test_length_from_imager_spacing_is_corrected_by_the_magnification_factor(
    server: ServerProcess, page: Page
) -> None:
    study = store_one(server, modality="DX", PixelSpacing=None, ImagerPixelSpacing=[0.2, 0.15],
                      EstimatedRadiographicMagnificationFactor=1.25)
    open_study(server, page, study)
    result, dx, dy = drag_length(page, (40, 50), (100, 130))
    assert result["calibration"] == "magnified"
    assert result["unit"] == "mm"
    assert result["value"] == pytest.approx(math.hypot(dx * 0.15 / 1.25, dy * 0.2 / 1.25), rel=1e-3)
    assert "ImagerPixelSpacing ÷ ERMF" in label(page)
    assert "ERMF" in text_of(page, ".viewport.active [data-testid=overlay-calibration]")


def test_length_from_imager_spacing_alone_says_imager_plane(server: ServerProcess, page: Page) -> None:
    study = store_one(server, modality="DX", PixelSpacing=None, ImagerPixelSpacing=[0.2, 0.15])
    open_study(server, page, study)
    result, dx, dy = drag_length(page, (40, 50), (100, 130))
    assert result["calibration"] == "imager"
    assert result["value"] == pytest.approx(math.hypot(dx * 0.15, dy * 0.2), rel=1e-3)
    assert "ImagerPixelSpacing" in label(page) and "ERMF" not in label(page)


def test_without_calibration_a_length_is_in_px_never_mm(server: ServerProcess, page: Page) -> None:
    study = store_one(server, modality="OT", PixelSpacing=None)
    open_study(server, page, study)
    result, dx, dy = drag_length(page, (40, 50), (100, 130))
    assert result["calibration"] == "none"
    assert result["unit"] == "px"
    assert result["value"] == pytest.approx(math.hypot(dx, dy), rel=1e-3)
    assert "px" in label(page) and "mm" not in label(page)
    assert "px" in text_of(page, ".viewport.active [data-testid=overlay-calibration]")


def test_ultrasound_length_uses_the_region_it_lies_in_and_px_outside(
    server: ServerProcess, page: Page
) -> None:
    study = store_one(server, modality="US", sop_class=ULTRASOUND_IMAGE, SequenceOfUltrasoundRegions=[US_REGION])
    open_study(server, page, study)
    result, dx, dy = drag_length(page, (40, 50), (100, 130))
    assert result["calibration"] == "region"
    assert result["unit"] == "mm"
    # PhysicalDelta is in cm (PhysicalUnits 3): ×10 for mm.
    assert result["value"] == pytest.approx(math.hypot(dx * 0.5, dy * 0.4), rel=1e-3)
    assert "mm" in label(page)
    # A length reaching outside the region has no calibration: px.
    result, dx, dy = drag_length(page, (5, 5), (100, 130))
    assert result["calibration"] == "none"
    assert result["unit"] == "px"
    assert result["value"] == pytest.approx(math.hypot(dx, dy), rel=1e-3)


# ---- priors side by side ----------------------------------------------------------------------


def store_ct_series(server: ServerProcess, patient_id: str, study_date: str, frame_of_reference: str,
                    z_positions: list[float]) -> str:
    """A CT study of one axial series, one slice per z (in order); its Study Instance UID."""
    study, series = generate_uid(), generate_uid()
    store(server, *(
        make_instance(modality="CT", patient_id=patient_id, study_uid=study, series_uid=series,
                      study_date=study_date, accession_number=f"A{study_date[2:]}{patient_id[-4:]}",
                      InstanceNumber=i + 1, ImagePositionPatient=[-32, -32, z],
                      FrameOfReferenceUID=frame_of_reference)
        for i, z in enumerate(z_positions)
    ))
    return study


def wheel_over(page: Page, viewport: int, steps: int) -> None:
    box = page.evaluate(f"() => {{ const r = document.querySelectorAll('[data-testid=viewport-canvas]')[{viewport}].getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }}")
    page.mouse.move(box[0], box[1])
    for _ in range(abs(steps)):
        page.mouse.wheel(0, 100 if steps > 0 else -100)


def image_indexes(page: Page) -> list[int]:
    return [vp["imageIndex"] for vp in state(page, "viewports")[:2]]


def wait_for_indexes(page: Page, expected: list[int]) -> None:
    page.wait_for_function(
        f"([a, b]) => {H}.viewports[0].imageIndex === a && {H}.viewports[1].imageIndex === b", arg=expected
    )


def open_prior(page: Page, prior: str) -> None:
    page.wait_for_function("(uid) => !!document.querySelector(`[data-testid=prior-row][data-study-uid='${uid}']`)", arg=prior)
    page.click(f"[data-testid=prior-row][data-study-uid='{prior}']")
    page.wait_for_function(
        f"(uid) => {H}.priors.open === uid && {H}.viewports[1].currentImageKind === 'pixels' && {H}.layout === '1x2'", arg=prior
    )


def test_priors_are_listed_and_scroll_by_position_in_one_frame_of_reference(
    server: ServerProcess, page: Page
) -> None:
    frame = generate_uid()
    current = store_ct_series(server, "BNPRIOR1", "20250110", frame, [float(z) for z in range(10)])
    prior = store_ct_series(server, "BNPRIOR1", "20230105", frame, [float(z) for z in range(3, 13)])
    older = store_ct_series(server, "BNPRIOR1", "20200101", generate_uid(), [0.0, 1.0])
    store_ct_series(server, "BNOTHER9", "20240101", frame, [0.0])  # another patient: not a prior
    open_study(server, page, current)
    page.wait_for_function(f"() => {H}.priors.studies.length === 2")
    # Newest first, the current study not among them, the other patient's study neither.
    assert state(page, "priors")["studies"] == [prior, older]
    open_prior(page, prior)
    assert state(page, "priors")["sync"] == "position"
    assert state(page, "viewports")[0]["seriesInstanceUID"] != state(page, "viewports")[1]["seriesInstanceUID"]
    # Current z=0 → the prior's nearest slice is its first (z=3).
    wait_for_indexes(page, [0, 0])
    wheel_over(page, 0, 5)  # current z=5 → prior z=5 (its index 2)
    wait_for_indexes(page, [5, 2])
    wheel_over(page, 1, 4)  # prior z=9 → current z=9
    wait_for_indexes(page, [9, 6])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "reading-priors-side-by-side.png"))


def test_priors_in_another_frame_of_reference_sync_after_lock_here(
    server: ServerProcess, page: Page
) -> None:
    current = store_ct_series(server, "BNPRIOR2", "20250110", generate_uid(), [float(z) for z in range(10)])
    prior = store_ct_series(server, "BNPRIOR2", "20230105", generate_uid(), [100.0 + z for z in range(10)])
    open_study(server, page, current)
    open_prior(page, prior)
    assert state(page, "priors")["sync"] == "off"
    wheel_over(page, 0, 3)
    page.wait_for_function(f"() => {H}.viewports[0].imageIndex === 3")
    wait_for_render_of_both(page)
    assert image_indexes(page) == [3, 0]  # not synchronised: the prior stays
    page.click("[data-testid=sync-lock]")
    page.wait_for_function(f"() => {H}.priors.sync === 'locked'")
    wheel_over(page, 0, 2)  # current z=5: the prior keeps its offset of 97 mm → z=102
    wait_for_indexes(page, [5, 2])
    wheel_over(page, 1, 3)  # prior z=105 → current z=8
    wait_for_indexes(page, [8, 5])


def wait_for_render_of_both(page: Page) -> None:
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


# ---- key images ------------------------------------------------------------------------------


def test_key_images_marked_in_the_viewer_are_a_kos_and_key_images_only_shows_them(
    server: ServerProcess, page: Page
) -> None:
    study = store_ct_series(server, "BNKEY002", "20250301", generate_uid(), [float(z) for z in range(5)])
    open_study(server, page, study)
    page.keyboard.press("ArrowDown")
    page.wait_for_function(f"() => {H}.imageNumber === 2")
    page.click("[data-testid=action-key-image]")  # one click
    page.wait_for_function(f"() => {H}.keyImages.saved === 1")
    sops = [page.evaluate(f"{H}.viewports[0].sopInstanceUID")]
    page.keyboard.press("End")
    page.wait_for_function(f"() => {H}.imageNumber === 5")
    page.keyboard.press("k")  # the shortcut
    page.wait_for_function(f"() => {H}.keyImages.saved === 2")
    sops.append(page.evaluate(f"{H}.viewports[0].sopInstanceUID"))
    assert state(page, "keyImages")["marked"] == sops
    # The study holds the documents, found as any DICOMweb client would.
    found = server.http.get(f"{server.dicomweb_url}/studies/{study}/series", params={"Modality": "KO"},
                            headers={"Accept": "application/dicom+json"}).json()
    assert len(found) == 2
    # The clinician's view: only the key images, in image order.
    page.goto(f"{server.http_url}/viewer/?StudyInstanceUID={study}&keyImagesOnly=true")
    page.wait_for_function(f"() => {H}.keyImages.only && {H}.viewports[0].imageCount === 2 && {H}.viewports[0].currentImageKind === 'pixels'")
    shown = [page.evaluate(f"{H}.viewports[0].sopInstanceUID")]
    page.keyboard.press("ArrowDown")
    page.wait_for_function(f"() => {H}.imageNumber === 2")
    shown.append(page.evaluate(f"{H}.viewports[0].sopInstanceUID"))
    assert shown == sops
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "reading-key-images-only.png"))
