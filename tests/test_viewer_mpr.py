# ruff: noqa: E501  -- JavaScript snippets for the page are kept on one line each
"""MPR and reference lines in the viewer (issue #14, "Reading"), in Chromium against a
real minipacs: the MPR button shows the server's axial, coronal and sagittal reslices in
three viewports (window/level and scrolling on each), and each viewport carries the line
where the others' current slices cut it, moving as they scroll.

The CT: 48 axial slices 96x96, 2.5 mm apart, 1 mm pixels, with a bright ball in soft
tissue; the geometry below predicts where every line must be.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Browser, Page
from pydicom.uid import generate_uid

from conftest import ServerProcess
from dicomweb_peers import store
from factories import make_instance
from viewer_support import ARTIFACTS, H, reader_session, session_cookie, state, wait_for_first_image

SIZE = 96
SLICES = 48
GAP = 2.5
Z0 = -60.0
Z_TOP = Z0 + GAP * (SLICES - 1)


def _ct_volume() -> tuple[str, list[bytes]]:
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    i, j = np.mgrid[0:SIZE, 0:SIZE]
    slices = []
    for k in range(SLICES):
        z = Z0 + GAP * k
        body = ((i - 48) ** 2 / 40**2 + (j - 48) ** 2 / 44**2) < 1
        ball = (i - 40) ** 2 + (j - 56) ** 2 + (z - 0) ** 2 < 22**2
        hu = np.where(body, 40, -1000) + np.where(ball, 400, 0)
        slices.append(make_instance(
            modality="CT", patient_id="BNMPR001", study_uid=study, series_uid=series,
            rows=SIZE, columns=SIZE, InstanceNumber=SLICES - k, SeriesDescription="CT bụng",
            ImagePositionPatient=[-48, -48, z], ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            PixelSpacing=[1, 1], FrameOfReferenceUID=frame, WindowCenter=40, WindowWidth=400,
            PixelData=(hu + 1024).astype(np.int16).tobytes()))
    return study, slices


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(Path(tmp_path_factory.mktemp("mpr-viewer"))).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def ct(server: ServerProcess) -> str:
    study, slices = _ct_volume()
    store(server, *slices)
    return study


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies([session_cookie(server, reader_session(server))])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(20_000)
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
    context.close()
    assert not errors, f"JavaScript errors in the viewer: {errors}"


def open_mpr(server: ServerProcess, page: Page, study: str) -> None:
    page.goto(f"{server.http_url}/viewer/?StudyInstanceUID={study}")
    wait_for_first_image(page)
    page.click("[data-testid=action-mpr]")
    page.wait_for_function(
        f"() => {H}.layout === '2x2' && ['axial', 'coronal', 'sagittal'].every((p, i) => ({H}.viewports[i].seriesInstanceUID || '').endsWith('|mpr|' + p) && {H}.viewports[i].currentImageKind === 'pixels') && {H}.viewports[3].currentImageKind === 'pixels'"
    )


def line_from(page: Page, viewport: int, source: int) -> list[float] | None:
    """Image coordinates x1,y1,x2,y2 of the line `source`'s slice draws on `viewport`."""
    found = page.evaluate(
        "([v, s]) => document.querySelectorAll('[data-testid=viewport]')[v].querySelector(`[data-testid=reference-line][data-source-viewport='${s}']`)?.getAttribute('data-image-line') ?? null",
        [viewport, source],
    )
    return [float(v) for v in found.split(",")] if found else None


def wait_for_line_at_row(page: Page, viewport: int, source: int, row: float) -> list[float]:
    page.wait_for_function(
        "([v, s, row]) => { const l = document.querySelectorAll('[data-testid=viewport]')[v].querySelector(`[data-testid=reference-line][data-source-viewport='${s}']`); if (!l) return false; const c = l.getAttribute('data-image-line').split(',').map(Number); return Math.abs(c[1] - row) < 0.01 && Math.abs(c[3] - row) < 0.01; }",
        arg=[viewport, source, row],
    )
    line = line_from(page, viewport, source)
    assert line is not None
    return line


def axial_height(page: Page) -> float:
    """z of the slice the MPR axial viewport shows (its frames run head to feet)."""
    return Z_TOP - GAP * state(page, "viewports")[0]["imageIndex"]


def wheel_over(page: Page, viewport: int, steps: int) -> None:
    box = page.evaluate(f"() => {{ const r = document.querySelectorAll('[data-testid=viewport-canvas]')[{viewport}].getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }}")
    page.mouse.move(box[0], box[1])
    for _ in range(abs(steps)):
        page.mouse.wheel(0, 100 if steps > 0 else -100)


def test_mpr_shows_three_planes_and_reference_lines_follow_the_axial_slice(
    server: ServerProcess, ct: str, page: Page
) -> None:
    open_mpr(server, page, ct)
    viewports = state(page, "viewports")
    assert [vp["imageCount"] for vp in viewports[:3]] == [SLICES, SIZE, SIZE]
    # Coronal rows run head to feet on a 1 mm grid (the column spacing): row r is z = top - r,
    # its pixel centre at image y = r + 0.5.
    z = axial_height(page)
    line = wait_for_line_at_row(page, 1, 0, Z_TOP - z + 0.5)
    assert line[0] == pytest.approx(0) and line[2] == pytest.approx(SIZE)  # across the whole image
    wait_for_line_at_row(page, 2, 0, Z_TOP - z + 0.5)  # the sagittal view too
    # On the axial view, the coronal and sagittal slices are a horizontal and a vertical line.
    coronal_on_axial = line_from(page, 0, 1)
    sagittal_on_axial = line_from(page, 0, 2)
    assert coronal_on_axial is not None and sagittal_on_axial is not None
    assert coronal_on_axial[1] == pytest.approx(viewports[1]["imageIndex"] + 0.5)
    assert sagittal_on_axial[0] == pytest.approx(viewports[2]["imageIndex"] + 0.5)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "reading-mpr.png"))

    before = state(page, "viewports")[0]["imageIndex"]
    wheel_over(page, 0, 4)  # the axial viewport scrolls 4 slices towards the feet
    page.wait_for_function(f"(i) => {H}.viewports[0].imageIndex === i", arg=before + 4)
    moved = wait_for_line_at_row(page, 1, 0, Z_TOP - axial_height(page) + 0.5)
    assert moved[1] == pytest.approx(line[1] + 4 * GAP)
    # The original axial series (viewport 4) draws the same line on the coronal view.
    assert line_from(page, 1, 3) is not None


def test_window_level_and_scrolling_work_on_each_mpr_viewport(
    server: ServerProcess, ct: str, page: Page
) -> None:
    open_mpr(server, page, ct)
    for index in (1, 2):
        start = state(page, "viewports")[index]["imageIndex"]
        wheel_over(page, index, 3)
        page.wait_for_function(
            f"([v, i]) => {H}.viewports[v].imageIndex === i && {H}.viewports[v].currentImageKind === 'pixels'",
            arg=[index, start + 3],
        )
        page.click(f"[data-testid=viewport][data-index='{index}']")
        page.keyboard.press("6")  # bone preset on the active viewport
        page.wait_for_function(f"(v) => {H}.viewports[v].windowWidth !== 400", arg=index)
        assert state(page, "viewports")[0]["windowWidth"] == 400  # the others keep theirs


def test_a_series_that_cannot_be_resliced_says_why(server: ServerProcess, page: Page) -> None:
    (one,) = store(server, make_instance(modality="CT", patient_id="BNMPR002"))
    page.goto(f"{server.http_url}/viewer/?StudyInstanceUID={one.study}")
    wait_for_first_image(page)
    page.click("[data-testid=action-mpr]")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('at least 2')")
    assert state(page, "layout") == "1x1"


def test_reference_line_geometry_is_the_plane_intersection_clipped_to_the_image(
    server: ServerProcess, page: Page
) -> None:
    """reflines.js's pure functions, imported in the page: planes as DICOM JSON."""
    page.goto(f"{server.http_url}/viewer/")
    lines = page.evaluate(
        """async () => {
          const { imagePlane, referenceLine } = await import('./js/reflines.js');
          const plane = (ipp, iop, frame = '1.2.3') => imagePlane({
            '00200032': { vr: 'DS', Value: ipp }, '00200037': { vr: 'DS', Value: iop },
            '00280030': { vr: 'DS', Value: [1, 1] }, '00280010': { vr: 'US', Value: [100] },
            '00280011': { vr: 'US', Value: [100] }, '00200052': { vr: 'UI', Value: [frame] } });
          const axial = plane([0, 0, 0], [1, 0, 0, 0, 1, 0]);
          const s = Math.SQRT1_2;
          return {
            coronal: referenceLine(axial, plane([0, 30.5, 50], [1, 0, 0, 0, 0, -1])),
            oblique: referenceLine(axial, plane([50, 0, 0], [-s, s, 0, 0, 0, -1])),
            parallel: referenceLine(axial, plane([0, 0, 7], [1, 0, 0, 0, 1, 0])),
            outside: referenceLine(axial, plane([0, 500, 0], [1, 0, 0, 0, 0, -1])),
            otherFrame: referenceLine(axial, plane([0, 30.5, 50], [1, 0, 0, 0, 0, -1], '9.9')),
          };
        }"""
    )
    # Pixel centres are at +0.5: the plane y = 30.5 mm passes through row 30's centre.
    assert lines["coronal"] == {"a": {"x": 0, "y": 31}, "b": {"x": 100, "y": 31}}
    # x + y = 50 mm is x + y = 51 in image coordinates: from the left edge to the top edge.
    ends = sorted((round(p["x"], 6), round(p["y"], 6)) for p in lines["oblique"].values())
    assert ends == [(0, 51), (51, 0)]
    assert lines["parallel"] is None and lines["outside"] is None and lines["otherFrame"] is None
