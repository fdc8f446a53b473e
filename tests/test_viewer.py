# ruff: noqa: E501  -- JavaScript snippets for the page are kept on one line each
"""The web viewer in a real browser against a real minipacs with the sample studies.

Expected values come from the server's own DICOMweb answers (QIDO, metadata), never
from numbers copied out of sample_dicom, so the tests follow the samples if they change.
"""

from __future__ import annotations

import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from conftest import ServerProcess
from viewer_support import (
    ARTIFACTS,
    H,
    dicomweb_json,
    drag_window_level,
    fold,
    measure_length,
    play_cine,
    reader_session,
    scroll_stack,
    search_unaccented_name,
    session_cookie,
    state,
    study_with_modality,
    switch_language,
    value,
    wait_for_first_image,
    wait_for_rows_of_patient,
)

# ---- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(viewer_server: ServerProcess) -> ServerProcess:
    return viewer_server



@pytest.fixture
def browser_page(browser: Browser, request: pytest.FixtureRequest, server: ServerProcess
                 ) -> Iterator[Page]:
    """A fresh page in its own context (empty localStorage), 1280×800, failing on JS errors.

    Each test's last screen is saved to test-artifacts/viewer/<test>.png to look at."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    # Signed in as a radiologist (the account made with the CLI, its session cookie).
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


# ---- study list -------------------------------------------------------------------------------


def test_search_by_unaccented_name_finds_the_vietnamese_patient(
    server: Any, browser_page: Page
) -> None:
    search_unaccented_name(server, browser_page)


def test_search_by_patient_id_lists_studies_newest_first(server: Any, browser_page: Page) -> None:
    ct = study_with_modality(server, "CT")
    page = browser_page
    page.goto(f"{server.http_url}/viewer/")
    page.fill("[data-testid=search-patient-id]", value(ct, "00100020"))
    page.press("[data-testid=search-patient-id]", "Enter")
    expected = dicomweb_json(server, "studies", PatientID=value(ct, "00100020"))
    wait_for_rows_of_patient(page, value(ct, "00100020"), len(expected))
    uids = page.eval_on_selector_all(
        "[data-testid=study-row]", "rows => rows.map(r => r.dataset.studyUid)"
    )
    expected.sort(
        key=lambda s: (value(s, "00080020") or "") + (value(s, "00080030") or ""), reverse=True
    )
    assert uids == [value(s, "0020000D") for s in expected]


def test_search_by_national_id_cccd_finds_the_patients_studies(
    server: Any, browser_page: Page
) -> None:
    ct = dicomweb_json(server, "studies", ModalitiesInStudy="CT", includefield="00101002")[0]
    items = ct["00101002"]["Value"]
    cccd = next(i["00100020"]["Value"][0] for i in items
                if i.get("00100021", {}).get("Value") == ["CCCD"])
    page = browser_page
    page.goto(f"{server.http_url}/viewer/")
    page.fill("[data-testid=search-patient-id]", cccd)
    page.press("[data-testid=search-patient-id]", "Enter")
    expected = dicomweb_json(server, "studies", PatientID=value(ct, "00100020"))
    wait_for_rows_of_patient(page, value(ct, "00100020"), len(expected))
    uids = page.eval_on_selector_all(
        "[data-testid=study-row]", "rows => rows.map(r => r.dataset.studyUid)"
    )
    assert value(ct, "0020000D") in uids
    assert sorted(uids) == sorted(value(s, "0020000D") for s in expected)


def test_clicking_a_study_opens_the_viewer_and_back_returns_to_the_list(
    server: Any, browser_page: Page
) -> None:
    ct = study_with_modality(server, "CT")
    page = browser_page
    page.goto(f"{server.http_url}/viewer/")
    page.click(f"[data-testid=study-row][data-study-uid='{value(ct, '0020000D')}']")
    wait_for_first_image(page)
    assert state(page, "studyInstanceUID") == value(ct, "0020000D")
    assert f"StudyInstanceUID={value(ct, '0020000D')}" in page.url
    page.go_back()
    page.wait_for_function(f"() => {H}.page === 'list'")
    assert page.locator("[data-testid=study-row]").count() > 0


# ---- EMR links ------------------------------------------------------------------------------------


def test_deep_link_by_study_instance_uid_opens_the_study(server: Any, browser_page: Page) -> None:
    mr = study_with_modality(server, "MR")
    page = browser_page
    page.goto(f"{server.http_url}/viewer/?StudyInstanceUID={value(mr, '0020000D')}")
    wait_for_first_image(page)
    assert state(page, "studyInstanceUID") == value(mr, "0020000D")
    assert fold(value(mr, "00100010")["Alphabetic"]) == fold(
        page.inner_text(".viewport.active [data-testid=overlay-patient-name]")
    )


def test_iid_study_link_by_accession_number_opens_the_study(
    server: Any, browser_page: Page
) -> None:
    ct = study_with_modality(server, "CT")
    accession = urllib.parse.quote(value(ct, "00080050"))
    page = browser_page
    page.goto(f"{server.http_url}/viewer/?requestType=STUDY&accessionNumber={accession}")
    wait_for_first_image(page)
    assert state(page, "studyInstanceUID") == value(ct, "0020000D")


@pytest.mark.parametrize("early_js_delay", [0.0, 0.6], ids=["early-first", "viewer-first"])
def test_emr_link_asks_for_each_thing_once_and_thumbnails_after_the_image(
    server: Any, browser_page: Page, early_js_delay: float
) -> None:
    # early.js starts the link's requests before the rest of the viewer has loaded; the
    # viewer must take those answers, not ask again, and leave the server-rendered
    # thumbnails until the first image is in. The two modules may run in either order
    # (a slow machine once ran main.js first and the study search went out twice), so
    # the second case holds early.js back until the viewer has started asking.
    ct = study_with_modality(server, "CT")
    accession = urllib.parse.quote(value(ct, "00080050"))
    events: list[tuple[str, str]] = []
    page = browser_page
    if early_js_delay:

        def hold_back(route: Any) -> None:
            time.sleep(early_js_delay)
            route.continue_()

        page.route("**/js/early.js", hold_back)
    page.on("request", lambda r: events.append(("asked", r.url)))
    page.on("requestfinished", lambda r: events.append(("done", r.url)))
    page.goto(f"{server.http_url}/viewer/?requestType=STUDY&accessionNumber={accession}")
    wait_for_first_image(page)
    page.wait_for_selector(".series-thumb img")
    asked = [urllib.parse.unquote(url) for kind, url in events if kind == "asked"]
    study = value(ct, "0020000D")

    def count(fragment: str) -> int:
        return sum(fragment in url for url in asked)

    assert count(f"AccessionNumber={value(ct, '00080050')}") == 1
    assert count(f"StudyInstanceUID={study}") == 1
    assert count(f"/studies/{study}/series?") == 1
    assert count("/metadata") == 1
    first_frame_done = next(
        i for i, (kind, url) in enumerate(events) if kind == "done" and "/frames/" in url
    )
    first_thumbnail = next(i for i, (_, url) in enumerate(events) if url.endswith("/thumbnail"))
    assert first_frame_done < first_thumbnail


def test_iid_study_link_with_two_accession_numbers_lists_both(
    server: Any, browser_page: Page
) -> None:
    ct = study_with_modality(server, "CT")
    mr = study_with_modality(server, "MR")
    accessions = ",".join(urllib.parse.quote(value(s, "00080050")) for s in (ct, mr))
    page = browser_page
    page.goto(f"{server.http_url}/viewer/?requestType=STUDY&accessionNumber={accessions}")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=study-row]').length === 2")
    uids = set(
        page.eval_on_selector_all(
            "[data-testid=study-row]", "rows => rows.map(r => r.dataset.studyUid)"
        )
    )
    assert uids == {value(ct, "0020000D"), value(mr, "0020000D")}


def test_iid_patient_link_lists_only_that_patients_studies(server: Any, browser_page: Page) -> None:
    ct = study_with_modality(server, "CT")
    patient_id = value(ct, "00100020")
    page = browser_page
    page.goto(
        f"{server.http_url}/viewer/?requestType=PATIENT&patientID={urllib.parse.quote(patient_id)}"
    )
    page.wait_for_function("() => document.querySelectorAll('[data-testid=study-row]').length > 0")
    ids = page.locator("[data-testid=study-row] td[data-column=patient-id]").all_inner_texts()
    assert set(ids) == {patient_id}
    assert len(ids) == len(dicomweb_json(server, "studies", PatientID=patient_id))


# ---- image display and tools ------------------------------------------------------------------------


def test_wheel_scroll_changes_the_image_number(server: Any, browser_page: Page) -> None:
    scroll_stack(server, browser_page)


def test_window_level_drag_changes_window_and_canvas_pixels(
    server: Any, browser_page: Page
) -> None:
    drag_window_level(server, browser_page)


def test_length_measurement_is_in_mm_from_pixel_spacing(server: Any, browser_page: Page) -> None:
    measure_length(server, browser_page)


def test_multiframe_cine_advances_frames(server: Any, browser_page: Page) -> None:
    play_cine(server, browser_page)


def test_language_switch_changes_text_and_is_remembered(server: Any, browser_page: Page) -> None:
    switch_language(server, browser_page)


# ---- pure modules, run in the browser that loads them ------------------------------------------


def test_voi_linear_window_follows_the_ps33_formula(server: Any, browser_page: Page) -> None:
    page = browser_page
    page.goto(f"{server.http_url}/viewer/")
    values = page.evaluate(
        """async () => {
          const { voiValue } = await import('./js/lut.js');
          // PS3.3 §C.11.2.1.2.1 with c = 40, w = 80: below c - 0.5 - (w-1)/2 = 0 is black,
          // above c - 0.5 + (w-1)/2 = 79 is white, linear in between.
          return [voiValue(0, 40, 80), voiValue(79.5, 40, 80), voiValue(39.5, 40, 80)];
        }"""
    )
    assert values[0] == 0
    assert values[1] == 255
    assert values[2] == pytest.approx(127.5)


def test_multipart_parser_keeps_binary_bodies_intact(server: Any, browser_page: Page) -> None:
    page = browser_page
    page.goto(f"{server.http_url}/viewer/")
    bodies = page.evaluate(
        """async () => {
          const { parseMultipart } = await import('./js/multipart.js');
          const enc = new TextEncoder();
          // The first body contains CR LF "--" bytes that are not a boundary.
          const body = new Uint8Array([
            ...enc.encode('--b1\\r\\nContent-Type: application/octet-stream\\r\\n\\r\\n'), 0, 13, 10, 45, 45, 255,
            ...enc.encode('\\r\\n--b1\\r\\nContent-Type: application/octet-stream\\r\\n\\r\\n'), 7,
            ...enc.encode('\\r\\n--b1--\\r\\n'),
          ]);
          return parseMultipart(body, 'b1').map((part) => Array.from(part.body));
        }"""
    )
    assert bodies == [[0, 13, 10, 45, 45, 255], [7]]


def test_multipart_parser_trusts_a_part_length_only_where_the_delimiter_is(
    server: Any, browser_page: Page
) -> None:
    page = browser_page
    page.goto(f"{server.http_url}/viewer/")
    bodies = page.evaluate(
        """async () => {
          const { parseMultipart } = await import('./js/multipart.js');
          const enc = new TextEncoder();
          const part = (length, bytes) => [
            ...enc.encode(`--b1\\r\\nContent-Length: ${length}\\r\\n\\r\\n`), ...bytes, ...enc.encode('\\r\\n')];
          // Right length: the body is taken whole, even bytes that look like a delimiter.
          const right = new Uint8Array([...part(8, enc.encode('a\\r\\n--b1z')), ...enc.encode('--b1--')]);
          // Wrong length (no delimiter there): the parser scans instead of trusting it.
          const wrong = new Uint8Array([...part(2, [1, 2, 3, 4]), ...enc.encode('--b1--')]);
          return [right, wrong].map((b) => parseMultipart(b, 'b1').map((p) => Array.from(p.body)));
        }"""
    )
    assert bodies == [[list(b"a\r\n--b1z")], [[1, 2, 3, 4]]]


def test_zip_writer_output_opens_with_python_zipfile(server: Any, browser_page: Page) -> None:
    import base64
    import io
    import zipfile

    page = browser_page
    page.goto(f"{server.http_url}/viewer/")
    encoded = page.evaluate(
        """async () => {
          const { buildZip } = await import('./js/zip.js');
          const blob = buildZip([
            { name: 'S001_CT/IM00001.dcm', data: new TextEncoder().encode('DICM-ish bytes') },
            { name: 'Nguyễn/ảnh.txt', data: new Uint8Array(1000).fill(7) },
          ]);
          const bytes = new Uint8Array(await blob.arrayBuffer());
          let binary = '';
          for (const b of bytes) binary += String.fromCharCode(b);
          return btoa(binary);
        }"""
    )
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(encoded)))
    assert archive.testzip() is None  # CRC-32 of every entry checks out
    assert archive.namelist() == ["S001_CT/IM00001.dcm", "Nguyễn/ảnh.txt"]
    assert archive.read("Nguyễn/ảnh.txt") == bytes([7]) * 1000


def test_download_zip_holds_every_instance_of_the_study(server: Any, browser_page: Page) -> None:
    import zipfile

    ct = study_with_modality(server, "CT")
    page = browser_page
    page.goto(f"{server.http_url}/viewer/?StudyInstanceUID={value(ct, '0020000D')}")
    page.wait_for_function(f"() => {H}.page === 'viewer' && {H}.imageCount > 0")
    with page.expect_download() as download:
        page.click("[data-testid=action-download]")
    path = download.value.path()
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert len(archive.namelist()) == int(value(ct, "00201208"))
        assert all(name.endswith(".dcm") for name in archive.namelist())
