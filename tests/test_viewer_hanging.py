# ruff: noqa: E501  -- JavaScript snippets for the page are kept on one line each
"""Hanging protocols and the keyboard (issue #14, "Reading"), against a real minipacs in
Chromium (Playwright) and Firefox (WebDriver BiDi).

A CT chest study of two series (lung and mediastinum) opens with the shipped "CT chest"
protocol: 1×2, the lung series in a lung window left, the mediastinal series in a
mediastinum window right. A radiologist saves their own layout and gets it back on
reopening, while another user still gets the default; administrators edit defaults over
HTTP, other roles are refused. The keys move through images and series and set windows,
and '?' lists every shortcut.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page
from pydicom.uid import generate_uid

from conftest import ServerProcess
from dicomweb_peers import store
from factories import make_instance
from firefox_bidi import Firefox, firefox_executable
from minipacs.viewer_settings.hanging_protocols import checked_protocol
from minipacs.viewer_settings.shipped_protocols import SHIPPED
from viewer_support import (
    ARTIFACTS,
    H,
    api_login,
    reader_session,
    session_cookie,
    sign_in_reader,
    state,
)

LUNG, MEDIASTINUM, BONE = (-600, 1500), (50, 350), (300, 1500)
PROTOCOLS = "/viewer-settings/hanging-protocols"
SHORTCUT_KEYS = {"ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "PageUp", "PageDown",
                 "Home", "End", "Escape", "Backspace", "Delete", "? F1",
                 *(str(n) for n in range(10)), *"wzpslarRifthvck"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(Path(tmp_path_factory.mktemp("hanging-server"))).start()
    yield proc
    proc.stop()


def store_chest_ct(server: ServerProcess, patient_id: str) -> dict[str, str]:
    """A CT chest study: series 1 'Lung 1.0' and series 2 'Mediastinum 5.0', 6 axial
    slices each (the shipped CT protocols hang volumes of 5 images or more). Its study UID and the two series UIDs."""
    study = generate_uid()
    uids = {"study": study, "lung": generate_uid(), "mediastinum": generate_uid()}
    instances = []
    for number, (name, description) in enumerate((("lung", "Lung 1.0"),
                                                  ("mediastinum", "Mediastinum 5.0")), 1):
        for i in range(6):
            instances.append(make_instance(
                modality="CT", patient_id=patient_id, study_uid=study, series_uid=uids[name],
                rows=96, columns=96, SeriesNumber=number, SeriesDescription=description,
                BodyPartExamined="CHEST", StudyDescription="CT NGỰC không tiêm",
                InstanceNumber=i + 1, ImagePositionPatient=[-48, -48, 5.0 * i]))
    store(server, *instances)
    return uids


@pytest.fixture(scope="module")
def chest(server: ServerProcess) -> dict[str, str]:
    return store_chest_ct(server, "HP0001")


def new_page(browser: Browser, server: ServerProcess, token: str) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_cookies([session_cookie(server, token)])
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page._js_errors = errors  # type: ignore[attr-defined]
    return page


def close_page(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    errors = page._js_errors  # type: ignore[attr-defined]
    page.context.close()
    assert not errors, f"JavaScript errors in the viewer: {errors}"


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[Page]:
    page = new_page(browser, server, reader_session(server))
    yield page
    close_page(page, request.node.name)


def open_study(server: Any, page: Any, study: str) -> None:
    """Open the study; wait until a protocol (or none) has laid it out and images drew."""
    page.goto(f"{server.http_url}/viewer/?StudyInstanceUID={study}")
    page.wait_for_function(
        f"(uid) => {H}.studyInstanceUID === uid && {H}.hangingProtocol !== null && {H}.viewports.slice(0, {H}.layout === '1x1' ? 1 : {H}.layout === '1x2' ? 2 : 4).every(v => v.currentImageKind === 'pixels')",
        arg=study,
    )


def windows(page: Any) -> list[tuple[float, float]]:
    return [(v["windowCenter"], v["windowWidth"]) for v in state(page, "viewports")]


def opens_with_the_ct_chest_default(server: Any, page: Any, chest: dict[str, str]) -> None:
    open_study(server, page, chest["study"])
    assert state(page, "hangingProtocol") == {"name": "CT chest", "scope": "default", "layout": "1x2"}
    assert state(page, "layout") == "1x2"
    shown = [v["seriesInstanceUID"] for v in state(page, "viewports")[:2]]
    assert shown == [chest["lung"], chest["mediastinum"]]
    assert windows(page)[:2] == [LUNG, MEDIASTINUM]
    assert page.evaluate("document.querySelector('[data-testid=hanging-protocol]').dataset.applied") == "default:CT chest"


def keys_move_images_series_and_windows(server: Any, page: Any, chest: dict[str, str]) -> None:
    open_study(server, page, chest["study"])
    assert state(page, "activeViewportIndex") == 0
    page.keyboard.press("?")
    page.wait_for_function("() => document.getElementById('help-dialog').open")
    keys = set(page.evaluate("() => [...document.querySelectorAll('[data-testid=help-shortcut]')].map(r => r.dataset.keys)"))
    assert keys == SHORTCUT_KEYS
    # In Vietnamese (the default language), from the same table.
    assert "Ảnh sau" in page.evaluate("() => document.getElementById('help-keys').textContent")
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.getElementById('help-dialog').open")
    page.keyboard.press("ArrowDown")
    page.wait_for_function(f"() => {H}.imageNumber === 2")
    page.keyboard.press("End")
    page.wait_for_function(f"() => {H}.imageNumber === 6")
    page.keyboard.press("ArrowUp")
    page.wait_for_function(f"() => {H}.imageNumber === 5")
    page.keyboard.press("6")
    page.wait_for_function(f"([c, w]) => {H}.windowCenter === c && {H}.windowWidth === w", arg=list(BONE))
    page.keyboard.press("4")
    page.wait_for_function(f"([c, w]) => {H}.windowCenter === c && {H}.windowWidth === w", arg=list(MEDIASTINUM))
    page.keyboard.press("ArrowRight")  # the next series, in the active viewport
    page.wait_for_function(f"(uid) => {H}.activeViewport.seriesInstanceUID === uid", arg=chest["mediastinum"])
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"(uid) => {H}.activeViewport.seriesInstanceUID === uid", arg=chest["lung"])


def test_ct_chest_opens_with_the_default_protocol(server: ServerProcess, page: Page,
                                                  chest: dict[str, str]) -> None:
    opens_with_the_ct_chest_default(server, page, chest)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "reading-hanging-protocol.png"))  # docs/reading.md


def test_keys_move_images_and_series_set_windows_and_list_themselves(
    server: ServerProcess, page: Page, chest: dict[str, str]
) -> None:
    keys_move_images_series_and_windows(server, page, chest)
    page.click("[data-testid=language-switch]")
    page.keyboard.press("F1")
    page.wait_for_function("() => document.getElementById('help-dialog').open && document.getElementById('help-keys').textContent.includes('Next image')")


def test_a_users_own_protocol_wins_over_the_default_and_stays_theirs(
    server: ServerProcess, browser: Browser, page: Page, chest: dict[str, str]
) -> None:
    server.add_user("bs.rieng", "radiologist", "Bo-Cuc-Rieng-2026!")
    own = new_page(browser, server, api_login(server, "bs.rieng", "Bo-Cuc-Rieng-2026!"))
    try:
        open_study(server, own, chest["study"])
        own.click("[data-testid=layout-1x1]")
        own.keyboard.press("6")  # bone window
        own.wait_for_function(f"([c, w]) => {H}.windowCenter === c && {H}.windowWidth === w", arg=list(BONE))
        own.click("[data-testid=hanging-save]")
        own.wait_for_function("() => document.querySelector('[data-testid=hanging-save-dialog]').open")
        assert own.input_value("[data-testid=hanging-save-name]") == "CT CHEST"
        own.fill("[data-testid=hanging-save-name]", "CT ngực của tôi")
        own.click("[data-testid=hanging-save-submit]")
        own.wait_for_function(f"() => {H}.hangingProtocol.scope === 'own'")
        own.reload()
        open_study(server, own, chest["study"])
        assert state(own, "hangingProtocol") == {"name": "CT ngực của tôi", "scope": "own", "layout": "1x1"}
        assert state(own, "viewports")[0]["seriesInstanceUID"] == chest["lung"]
        assert windows(own)[0] == BONE
        # Another study of the same kind (other patient, other UIDs) hangs the same way.
        other = store_chest_ct(server, "HP0002")
        open_study(server, own, other["study"])
        assert state(own, "hangingProtocol")["scope"] == "own"
        assert state(own, "viewports")[0]["seriesInstanceUID"] == other["lung"]
        assert windows(own)[0] == BONE
    finally:
        close_page(own, "own-protocol")
    # The reader has no protocol of their own: still the default.
    opens_with_the_ct_chest_default(server, page, chest)
    token = api_login(server, "bs.rieng", "Bo-Cuc-Rieng-2026!")
    mine = httpx.get(f"{server.http_url}{PROTOCOLS}", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()["protocols"]
    saved = next(p for p in mine if p["scope"] == "own")
    assert saved["layout"] == "1x1" and saved["modality"] == "CT" and saved["bodyPart"] == "CHEST"
    assert saved["viewports"] == [{"window": "bone", "series": [
        {"study": "current", "modality": "CT", "description": r"^Lung 1\.0$", "orientation": "axial"},
        {"study": "current"}]}]
    trail = server.http.get("/admin/audit", params={"action": "configure"}).json()
    assert any(e["actor"] == "user:bs.rieng" and "CT ngực của tôi" in e["detail"] for e in trail)


def test_admin_edits_a_default_and_other_roles_are_refused(
    server: ServerProcess, page: Page, chest: dict[str, str]
) -> None:
    url = f"{PROTOCOLS}/defaults/{urllib.parse.quote('CT chest')}"
    edited = {"modality": "CT", "bodyPart": "CHEST", "layout": "1x2", "viewports": [
        {"window": "bone", "series": [{"description": "medi"}]},
        {"window": {"center": 40, "width": 400}, "series": [{"description": "lung"}]}]}
    radiologist = {"Authorization": f"Bearer {server.create_token('hp-radiologist', 'radiologist')}"}
    refused = httpx.put(f"{server.http_url}{url}", json=edited, headers=radiologist, timeout=30)
    assert refused.status_code == 403
    wrong = server.http.put(url, json={**edited, "layout": "3x3"})
    assert wrong.status_code == 400 and "3x3" in wrong.json()["error"]
    bad_regex = server.http.put(url, json={**edited, "bodyPart": "(CHEST"})
    assert bad_regex.status_code == 400 and "(CHEST" in bad_regex.json()["error"]
    assert server.http.put(url, json=edited).status_code == 200
    try:
        listed = httpx.get(f"{server.http_url}{PROTOCOLS}", headers=radiologist, timeout=30).json()["protocols"]
        default = next(p for p in listed if p["name"] == "CT chest")
        assert default["edited"] is True and default["viewports"][0]["window"] == "bone"
        open_study(server, page, chest["study"])
        assert [v["seriesInstanceUID"] for v in state(page, "viewports")[:2]] == [chest["mediastinum"], chest["lung"]]
        assert windows(page)[:2] == [BONE, (40, 400)]
        assert httpx.delete(f"{server.http_url}{url}", headers=radiologist, timeout=30).status_code == 403
    finally:
        assert server.http.delete(url).status_code == 204
    listed = server.http.get(PROTOCOLS).json()["protocols"]
    assert next(p for p in listed if p["name"] == "CT chest")["edited"] is False
    assert server.http.delete(url).status_code == 404  # a shipped default is not deletable
    trail = server.http.get("/admin/audit", params={"action": "configure"}).json()
    assert sum("default hanging protocol 'CT chest'" in e["detail"] for e in trail) == 2


def test_one_series_hangs_twice_in_two_windows_and_scrolls_as_one(server: ServerProcess, page: Page) -> None:
    study, series = generate_uid(), generate_uid()
    store(server, *(make_instance(modality="CT", patient_id="HP0004", study_uid=study, series_uid=series,
                                  rows=96, columns=96, BodyPartExamined="CHEST", InstanceNumber=i + 1,
                                  ImagePositionPatient=[-48, -48, 5.0 * i]) for i in range(6)))
    open_study(server, page, study)
    assert [v["seriesInstanceUID"] for v in state(page, "viewports")[:2]] == [series, series]
    assert windows(page)[:2] == [LUNG, MEDIASTINUM]
    page.keyboard.press("End")
    page.wait_for_function(f"() => {H}.viewports[0].imageIndex === 5 && {H}.viewports[1].imageIndex === 5")


def test_shipped_defaults_pass_the_servers_own_check() -> None:
    for protocol in SHIPPED:
        assert checked_protocol(protocol["name"], protocol) == {**protocol}


def test_chest_xray_hangs_beside_its_newest_xray_prior(server: ServerProcess, page: Page) -> None:
    patient = "HP0003"

    def xray(study_date: str) -> tuple[str, str]:
        study, series = generate_uid(), generate_uid()
        store(server, make_instance(modality="DX", patient_id=patient, study_uid=study, series_uid=series,
                                    study_date=study_date, accession_number=f"X{study_date}",
                                    BodyPartExamined="CHEST", StudyDescription="X-quang ngực thẳng"))
        return study, series

    older, _ = xray("20230105")
    prior, prior_series = xray("20240110")
    # A newer CT of the patient is no prior for a chest X-ray.
    store(server, make_instance(modality="CT", patient_id=patient, study_date="20250101", accession_number="C2025"))
    current, current_series = xray("20260201")
    open_study(server, page, current)
    assert state(page, "hangingProtocol") == {"name": "CR/DX chest with prior", "scope": "default", "layout": "1x2"}
    assert [v["seriesInstanceUID"] for v in state(page, "viewports")[:2]] == [current_series, prior_series]
    assert state(page, "priors")["open"] == prior
    assert older != prior


# ---- the same reading in Firefox ----------------------------------------------------------------


@pytest.fixture(scope="module")
def firefox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Firefox]:
    executable = firefox_executable()
    if executable is None:
        pytest.fail("firefox-esr is not installed; run ./test.sh, which installs it (apt-get)")
    browser = Firefox(executable, tmp_path_factory.mktemp("firefox-hanging"))
    yield browser
    browser.close()


def test_firefox_applies_the_protocol_and_follows_the_keys(
    server: ServerProcess, firefox: Firefox, chest: dict[str, str]
) -> None:
    tab = firefox.new_page(1280, 800)
    try:
        sign_in_reader(server, tab)
        opens_with_the_ct_chest_default(server, tab, chest)
        keys_move_images_series_and_windows(server, tab, chest)
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(str(ARTIFACTS / "firefox-hanging.png"))
        errors = tab.javascript_errors()
        tab.close()
    assert not errors, f"JavaScript errors in the viewer (Firefox): {errors}"
