# ruff: noqa: E501  -- JavaScript snippets for the page are kept on one line each
"""The web viewer in Firefox (Debian's firefox-esr, headless, over WebDriver BiDi).

The Chromium suite (test_viewer.py) covers everything; this one repeats what a reader
does with the mouse and keyboard, the parts where browsers differ most: pointer and wheel
events, canvas pixels, ES modules, localStorage. Both run the same scenarios
(viewer_support.py), so the two browsers are held to the same steps and assertions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conftest import ServerProcess
from firefox_bidi import Firefox, FirefoxPage, firefox_executable
from viewer_support import (
    ARTIFACTS,
    H,
    canvas_pixels,
    drag_window_level,
    measure_length,
    play_cine,
    scroll_stack,
    search_unaccented_name,
    sign_in_reader,
    study_with_modality,
    switch_language,
    value,
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
def page(firefox: Firefox, request: pytest.FixtureRequest, server: ServerProcess
         ) -> Iterator[FirefoxPage]:
    """A fresh tab in its own user context, 1280×800, failing on uncaught JS errors.

    The last screen is saved to test-artifacts/viewer/firefox-<test>.png to look at."""
    tab = firefox.new_page(1280, 800)
    sign_in_reader(server, tab)  # its own user context: sign in through the form
    yield tab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(str(ARTIFACTS / f"firefox-{request.node.name}.png"))
    errors = tab.javascript_errors()
    tab.close()
    assert not errors, f"JavaScript errors in the viewer (Firefox): {errors}"


def test_search_by_unaccented_name_finds_the_vietnamese_patient(
    server: Any, page: FirefoxPage
) -> None:
    search_unaccented_name(server, page)


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
    scroll_stack(server, page)


def test_window_level_drag_changes_window_and_canvas_pixels(
    server: Any, page: FirefoxPage
) -> None:
    drag_window_level(server, page)


def test_length_measurement_is_in_mm_from_pixel_spacing(server: Any, page: FirefoxPage) -> None:
    measure_length(server, page)


def test_multiframe_cine_advances_frames(server: Any, page: FirefoxPage) -> None:
    play_cine(server, page)


def test_language_switch_is_remembered(server: Any, page: FirefoxPage) -> None:
    switch_language(server, page)
