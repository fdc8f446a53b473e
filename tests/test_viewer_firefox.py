# ruff: noqa: E501  -- JavaScript snippets for the page are kept on one line each
"""The web viewer in Firefox (Debian's firefox-esr, headless, over WebDriver BiDi).

The Chromium suite (test_viewer.py) covers everything; this one repeats what a reader
does with the mouse and keyboard, the parts where browsers differ most: pointer and wheel
events, canvas pixels, ES modules, localStorage.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import ServerProcess
from firefox_bidi import Firefox, FirefoxPage, firefox_executable
from viewer_support import (
    ARTIFACTS,
    H,
    canvas_pixels,
    dicomweb_json,
    first_series_metadata,
    fold,
    state,
    study_with_modality,
    value,
    viewport_centre,
    wait_for_first_image,
    wait_for_render,
)


@pytest.fixture(scope="module")
def server(viewer_server: ServerProcess) -> ServerProcess:
    return viewer_server


@pytest.fixture(scope="module")
def firefox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Firefox]:
    executable = firefox_executable()
    if executable is None:
        pytest.fail("firefox-esr is not installed; run ./test.sh, which installs it (apt-get)")
    browser = Firefox(executable, tmp_path_factory.mktemp("firefox"))
    yield browser
    browser.close()


@pytest.fixture
def page(firefox: Firefox, request: pytest.FixtureRequest) -> Iterator[FirefoxPage]:
    """A fresh tab in its own user context, 1280×800, failing on uncaught JS errors.

    The last screen is saved to test-artifacts/viewer/firefox-<test>.png to look at."""
    tab = firefox.new_page(1280, 800)
    yield tab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(str(ARTIFACTS / f"firefox-{request.node.name}.png"))
    errors = tab.javascript_errors()
    tab.close()
    assert not errors, f"JavaScript errors in the viewer (Firefox): {errors}"


def test_search_by_unaccented_name_finds_the_vietnamese_patient(
    server: Any, page: FirefoxPage
) -> None:
    ct = study_with_modality(server, "CT")
    name = value(ct, "00100010")["Alphabetic"]
    expected = dicomweb_json(server, "studies", PatientName=fold(name) + "*", fuzzymatching="true")
    page.goto(f"{server.http_url}/viewer/")
    page.fill("[data-testid=search-name]", fold(name))
    page.keyboard.press("Enter")
    page.wait_for_function(
        """([uid, count]) => {
            const rows = [...document.querySelectorAll('[data-testid=study-row]')];
            return rows.length === count && rows.some(r => r.dataset.studyUid === uid);
        }""",
        [value(ct, "0020000D"), len(expected)],
    )
    names = page.evaluate(
        "() => [...document.querySelectorAll('[data-testid=study-row] td[data-column=name]')].map(c => c.innerText)"
    )
    assert names and all(fold(n) == fold(name) for n in names)
    assert name.split("^")[0] in names[0]  # shown with its diacritics


def test_iid_link_opens_the_study_and_each_modality_draws(server: Any, page: FirefoxPage) -> None:
    # A radiologist reads a CT, an X-ray (MONOCHROME1) and an ultrasound (RGB): each must
    # reach real pixels (not the server-rendered fallback) and draw more than one grey.
    for modality in ("CT", "DX", "US"):
        study = study_with_modality(server, modality)
        accession = value(study, "00080050")
        page.goto(f"{server.http_url}/viewer/?requestType=STUDY&accessionNumber={accession}")
        page.wait_for_function(
            f"{H}.page === 'viewer' && {H}.studyInstanceUID === '{value(study, '0020000D')}'"
        )
        wait_for_first_image(page)
        wait_for_render(page)
        assert len(set(canvas_pixels(page))) > 1, f"{modality}: the canvas is one flat colour"


def test_wheel_and_keys_scroll_the_stack(server: Any, page: FirefoxPage) -> None:
    ct = study_with_modality(server, "CT")
    page.goto(f"{server.http_url}/viewer/?StudyInstanceUID={value(ct, '0020000D')}")
    wait_for_first_image(page)
    count = state(page, "imageCount")
    assert count > 3 and state(page, "imageNumber") == 1
    page.mouse.move(*viewport_centre(page))
    for _ in range(3):
        page.mouse.wheel(0, 100)
    page.wait_for_function(f"{H}.imageNumber === 4")
    page.keyboard.press("End")
    page.wait_for_function(f"{H}.imageNumber === {count}")
    page.keyboard.press("Home")
    page.wait_for_function(f"{H}.imageNumber === 1")


def test_window_level_drag_changes_window_and_canvas_pixels(
    server: Any, page: FirefoxPage
) -> None:
    ct = study_with_modality(server, "CT")
    page.goto(f"{server.http_url}/viewer/?StudyInstanceUID={value(ct, '0020000D')}")
    wait_for_first_image(page)
    wait_for_render(page)
    centre, width = state(page, "windowCenter"), state(page, "windowWidth")
    before = canvas_pixels(page)
    x, y = viewport_centre(page)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 60, y + 90, steps=6)
    page.mouse.up()
    wait_for_render(page)
    assert state(page, "windowCenter") > centre
    assert state(page, "windowWidth") > width
    assert canvas_pixels(page) != before


def test_length_measurement_is_in_mm_from_pixel_spacing(server: Any, page: FirefoxPage) -> None:
    ct = study_with_modality(server, "CT")
    _, metadata = first_series_metadata(server, value(ct, "0020000D"))
    row_mm, column_mm = (float(v) for v in metadata[0]["00280030"]["Value"])
    page.goto(f"{server.http_url}/viewer/?StudyInstanceUID={value(ct, '0020000D')}")
    wait_for_first_image(page)
    page.click("[data-testid=tool-length]")
    start = page.evaluate(f"{H}.imageToClient(40, 50)")
    end = page.evaluate(f"{H}.imageToClient(100, 130)")
    page.mouse.move(start["x"], start["y"])
    page.mouse.down()
    page.mouse.move(end["x"], end["y"], steps=5)
    page.mouse.up()
    page.wait_for_function(f"{H}.lastMeasurement !== null")
    # The driver moves to whole CSS pixels: read back where the ends fell in the image.
    a = page.evaluate(f"{H}.clientToImage({math.floor(start['x'])}, {math.floor(start['y'])})")
    b = page.evaluate(f"{H}.clientToImage({math.floor(end['x'])}, {math.floor(end['y'])})")
    expected = math.hypot((b["x"] - a["x"]) * column_mm, (b["y"] - a["y"]) * row_mm)
    measurement = state(page, "lastMeasurement")
    assert measurement["unit"] == "mm"
    assert measurement["value"] == pytest.approx(expected, rel=1e-3)
    assert expected == pytest.approx(math.hypot(60 * column_mm, 80 * row_mm), rel=0.02)


def test_multiframe_cine_advances_frames(server: Any, page: FirefoxPage) -> None:
    us = study_with_modality(server, "US")
    series, metadata = first_series_metadata(server, value(us, "0020000D"), multiframe=True)
    frames = int(value(metadata[0], "00280008"))
    page.goto(f"{server.http_url}/viewer/?StudyInstanceUID={value(us, '0020000D')}")
    page.wait_for_function(f"{H}.page === 'viewer' && {H}.imageCount > 0")
    page.click(f"[data-testid=series-thumbnail][data-series-uid='{value(series, '0020000E')}']")
    page.wait_for_function(
        f"{H}.imageCount === {frames} && {H}.activeViewport.currentImageKind === 'pixels'"
    )
    first = state(page, "cineFrame")
    page.click("[data-testid=action-cine]")
    page.wait_for_function(f"{H}.cinePlaying && {H}.cineFramesShown >= 3")
    assert state(page, "cineFrame") != first
    page.keyboard.press("c")
    page.wait_for_function(f"!{H}.cinePlaying")


def test_language_switch_is_remembered(server: Any, page: FirefoxPage) -> None:
    page.goto(f"{server.http_url}/viewer/")
    assert state(page, "lang") == "vi"
    assert page.inner_text("[data-testid=search-submit]") == "Tìm kiếm"
    page.click("[data-testid=language-switch]")
    page.wait_for_function("document.documentElement.lang === 'en'")
    assert page.inner_text("[data-testid=search-submit]") == "Search"
    page.reload()
    page.wait_for_function(f"{H} && {H}.lang === 'en'")
    assert page.inner_text("[data-testid=search-submit]") == "Search"
