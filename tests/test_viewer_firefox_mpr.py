"""MPR and reference lines in Firefox (firefox-esr over WebDriver BiDi): the same steps as
the Chromium test (test_viewer_mpr.py), where browsers differ most: wheel events over
several viewports, SVG drawn over canvases, dynamic module loading."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess
from dicomweb_peers import store
from firefox_bidi import Firefox, FirefoxPage, firefox_executable
from test_viewer_mpr import (
    GAP,
    Z_TOP,
    _ct_volume,
    axial_height,
    open_mpr,
    wait_for_line_at_row,
    wheel_over,
)
from viewer_support import ARTIFACTS, H, sign_in_reader, state


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(Path(tmp_path_factory.mktemp("mpr-firefox"))).start()
    yield proc
    proc.stop()


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
    tab = firefox.new_page(1280, 900)
    sign_in_reader(server, tab)
    yield tab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(str(ARTIFACTS / f"firefox-{request.node.name}.png"))
    errors = tab.javascript_errors()
    tab.close()
    assert not errors, f"JavaScript errors in the viewer (Firefox): {errors}"


def test_mpr_planes_and_reference_lines_follow_scrolling_in_firefox(
    server: ServerProcess, page: FirefoxPage
) -> None:
    study, slices = _ct_volume()
    store(server, *slices)
    open_mpr(server, page, study)  # type: ignore[arg-type]
    line = wait_for_line_at_row(page, 1, 0, Z_TOP - axial_height(page) + 0.5)  # type: ignore[arg-type]
    before = state(page, "viewports")[0]["imageIndex"]
    wheel_over(page, 0, 2)  # type: ignore[arg-type]
    page.wait_for_function(f"(i) => {H}.viewports[0].imageIndex === i", arg=before + 2)
    moved = wait_for_line_at_row(page, 1, 0, Z_TOP - axial_height(page) + 0.5)  # type: ignore[arg-type]
    assert moved[1] == pytest.approx(line[1] + 2 * GAP)
