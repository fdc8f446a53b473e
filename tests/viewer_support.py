# ruff: noqa: E501  -- JavaScript snippets for the page are kept on one line each
"""What the viewer tests share, in Chromium (Playwright) and Firefox (firefox_bidi): the
server's own DICOMweb answers to compare with, and scripts that read the viewer's state.

A `page` here is anything with Playwright's `evaluate` and `wait_for_function`.
"""

from __future__ import annotations

import json
import math
import unicodedata
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

H = "window.minipacsViewer"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "viewer"


def dicomweb_json(server: Any, path: str, **query: str) -> list[dict[str, Any]]:
    """QIDO/metadata as the tests' admin token (the server fixture's `auth`)."""
    url = f"{server.http_url}/dicom-web/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    request = urllib.request.Request(url, headers={"Accept": "application/dicom+json",
                                                   **server.auth})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body.strip() else []


def value(dataset: dict[str, Any], tag: str) -> Any:
    values = dataset.get(tag, {}).get("Value", [])
    return values[0] if values else None


def study_with_modality(server: Any, modality: str) -> dict[str, Any]:
    studies = dicomweb_json(server, "studies", ModalitiesInStudy=modality, includefield="all")
    assert studies, f"no sample study with modality {modality}"
    return studies[0]


def first_series_metadata(
    server: Any, study_uid: str, *, multiframe: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The largest image series of a study (or its first multi-frame one) and its metadata."""
    candidates = []
    for series in dicomweb_json(server, f"studies/{study_uid}/series", includefield="all"):
        series_uid = value(series, "0020000E")
        metadata = dicomweb_json(server, f"studies/{study_uid}/series/{series_uid}/metadata")
        frames = sum(int(value(m, "00280008") or 1) for m in metadata)
        if multiframe and not any(int(value(m, "00280008") or 1) > 1 for m in metadata):
            continue
        candidates.append((frames, value(series, "00200011") or 0, series, metadata))
    assert candidates, f"study {study_uid} has no {'multi-frame ' if multiframe else ''}series"
    candidates.sort(key=lambda c: (-c[0], c[1]))
    return candidates[0][2], candidates[0][3]


def wait_for_rows_of_patient(page: Any, patient_id: str, count: int) -> None:
    """Wait for the search's own answer (the list shown before it holds every study)."""
    page.wait_for_function(
        """([pid, count]) => {
            const cells = [...document.querySelectorAll('[data-testid=study-row] [data-column=patient-id]')];
            return cells.length === count && cells.every(c => c.textContent.trim() === pid);
        }""",
        arg=[patient_id, count],
    )


def fold(text: str) -> str:
    """What a user types without Vietnamese diacritics: 'Nguyễn^Văn An' → 'nguyen van an'."""
    text = text.replace("đ", "d").replace("Đ", "D").replace("^", " ")
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn").lower().strip()


def state(page: Any, name: str) -> Any:
    return page.evaluate(f"{H}.{name}")


def wait_for_first_image(page: Any) -> None:
    page.wait_for_function(
        f"() => {H}.page === 'viewer' && {H}.activeViewport.currentImageKind === 'pixels'"
    )


def wait_for_render(page: Any) -> None:
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def canvas_pixels(page: Any) -> list[int]:
    """Red channel of a 9×9 grid over the active viewport's canvas."""
    return page.evaluate(
        """() => {
          const c = document.querySelector('.viewport.active [data-testid=viewport-canvas]');
          const ctx = c.getContext('2d');
          const out = [];
          for (let i = 1; i < 10; i++) for (let j = 1; j < 10; j++) {
            out.push(ctx.getImageData(Math.floor(c.width * i / 10), Math.floor(c.height * j / 10), 1, 1).data[0]);
          }
          return out;
        }"""
    )


def viewport_centre(page: Any) -> tuple[float, float]:
    box = page.evaluate(
        "() => { const r = document.querySelector('.viewport.active [data-testid=viewport-canvas]').getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }"
    )
    return box[0], box[1]


# ---- reading scenarios, the same steps in Chromium and Firefox -----------------------------
# Each takes the server and a page with Playwright's names (goto, click, fill, press,
# mouse, keyboard, reload, evaluate, wait_for_function): a Playwright Page or a
# firefox_bidi.FirefoxPage. Mouse positions are whole CSS pixels in both.


def text_of(page: Any, selector: str) -> str:
    return str(page.evaluate("(s) => document.querySelector(s).textContent.trim()", selector))


def search_unaccented_name(server: Any, page: Any) -> None:
    ct = study_with_modality(server, "CT")
    name = value(ct, "00100010")["Alphabetic"]
    expected = dicomweb_json(server, "studies", PatientName=fold(name) + "*", fuzzymatching="true")
    page.goto(f"{server.http_url}/viewer/")
    page.fill("[data-testid=search-name]", fold(name))
    page.press("[data-testid=search-name]", "Enter")
    # Wait for the search's own answer: the list shown before it holds every study.
    page.wait_for_function(
        """([uid, count]) => {
            const rows = [...document.querySelectorAll('[data-testid=study-row]')];
            return rows.length === count && rows.some(r => r.dataset.studyUid === uid);
        }""",
        arg=[value(ct, "0020000D"), len(expected)],
    )
    names = page.evaluate(
        "() => [...document.querySelectorAll('[data-testid=study-row] td[data-column=name]')].map(c => c.innerText)"
    )
    assert names and all(fold(n) == fold(name) for n in names)
    assert name.split("^")[0] in names[0]  # shown with its diacritics


def scroll_stack(server: Any, page: Any) -> None:
    ct = study_with_modality(server, "CT")
    page.goto(f"{server.http_url}/viewer/?StudyInstanceUID={value(ct, '0020000D')}")
    wait_for_first_image(page)
    count = state(page, "imageCount")
    assert count > 3
    assert state(page, "imageNumber") == 1
    page.mouse.move(*viewport_centre(page))
    for _ in range(3):
        page.mouse.wheel(0, 100)
    page.wait_for_function(f"() => {H}.imageNumber === 4")
    page.wait_for_function(
        "() => document.querySelector('.viewport.active [data-testid=image-number]').textContent.includes('4/')"
    )
    page.keyboard.press("End")
    page.wait_for_function(f"() => {H}.imageNumber === {count}")
    page.keyboard.press("Home")
    page.wait_for_function(f"() => {H}.imageNumber === 1")


def drag_window_level(server: Any, page: Any) -> None:
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


def measure_length(server: Any, page: Any) -> None:
    ct = study_with_modality(server, "CT")
    _, metadata = first_series_metadata(server, value(ct, "0020000D"))
    row_mm, column_mm = (float(v) for v in metadata[0]["00280030"]["Value"])
    page.goto(f"{server.http_url}/viewer/?StudyInstanceUID={value(ct, '0020000D')}")
    wait_for_first_image(page)
    page.click("[data-testid=tool-length]")
    start = page.evaluate(f"{H}.imageToClient(40, 50)")
    end = page.evaluate(f"{H}.imageToClient(100, 130)")
    x0, y0, x1, y1 = (math.floor(v) for v in (start["x"], start["y"], end["x"], end["y"]))
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    page.wait_for_function(f"() => {H}.lastMeasurement !== null")
    # Read back where the whole-pixel mouse positions fell in the image.
    a = page.evaluate(f"{H}.clientToImage({x0}, {y0})")
    b = page.evaluate(f"{H}.clientToImage({x1}, {y1})")
    expected = math.hypot((b["x"] - a["x"]) * column_mm, (b["y"] - a["y"]) * row_mm)
    measurement = state(page, "lastMeasurement")
    assert measurement["unit"] == "mm"
    assert measurement["value"] == pytest.approx(expected, rel=1e-3)
    assert expected == pytest.approx(math.hypot(60 * column_mm, 80 * row_mm), rel=0.02)
    assert "mm" in text_of(page, ".viewport.active [data-testid=measurement-label]")


def play_cine(server: Any, page: Any) -> None:
    us = study_with_modality(server, "US")
    series, metadata = first_series_metadata(server, value(us, "0020000D"), multiframe=True)
    frames = int(value(metadata[0], "00280008"))
    page.goto(f"{server.http_url}/viewer/?StudyInstanceUID={value(us, '0020000D')}")
    page.wait_for_function(f"() => {H}.page === 'viewer' && {H}.imageCount > 0")
    page.click(f"[data-testid=series-thumbnail][data-series-uid='{value(series, '0020000E')}']")
    page.wait_for_function(
        f"() => {H}.imageCount === {frames} && {H}.activeViewport.currentImageKind === 'pixels'"
    )
    first = state(page, "cineFrame")
    page.click("[data-testid=action-cine]")
    page.wait_for_function(f"() => {H}.cinePlaying && {H}.cineFramesShown >= 3")
    assert state(page, "cineFrame") != first
    page.keyboard.press("c")
    page.wait_for_function(f"() => !{H}.cinePlaying")


def switch_language(server: Any, page: Any) -> None:
    page.goto(f"{server.http_url}/viewer/")
    assert state(page, "lang") == "vi"
    assert text_of(page, "[data-testid=search-submit]") == "Tìm kiếm"
    page.click("[data-testid=language-switch]")
    page.wait_for_function("() => document.documentElement.lang === 'en'")
    assert text_of(page, "[data-testid=search-submit]") == "Search"
    page.reload()
    page.wait_for_function(f"() => {H} && {H}.lang === 'en'")
    assert text_of(page, "[data-testid=search-submit]") == "Search"


# ---- sign-in (issue #11): the viewer in front of a server with accounts ----------------


def api_login(server: Any, username: str, password: str) -> str:
    """A session token from POST /auth/login, for the tests' own DICOMweb questions."""
    request = urllib.request.Request(
        f"{server.http_url}/auth/login",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["access_token"])


def dicomweb_json_as(server: Any, token: str, path: str, **query: str) -> list[dict[str, Any]]:
    """`dicomweb_json` with `Authorization: Bearer <token>`."""
    url = f"{server.http_url}/dicom-web/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    request = urllib.request.Request(
        url, headers={"Accept": "application/dicom+json", "Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body.strip() else []


def wait_for_sign_in_form(page: Any, form: str = "login") -> None:
    """The sign-in overlay shows `form` ('login' or 'password')."""
    page.wait_for_function(
        "form => !document.getElementById('login-view').hidden && document.body.dataset.signIn === form",
        arg=form,
    )


def sign_in_on_page(page: Any, username: str, password: str) -> None:
    wait_for_sign_in_form(page)
    page.fill("[data-testid=login-user]", username)
    page.fill("[data-testid=login-password]", password)
    page.click("[data-testid=login-submit]")


def wait_for_message(page: Any, testid: str, text: str) -> None:
    """An error line of the sign-in forms reads exactly `text`."""
    page.wait_for_function(
        "([id, text]) => { const el = document.querySelector(`[data-testid=${id}]`); return !el.hidden && el.textContent === text; }",
        arg=[testid, text],
    )


def emr_link_signs_in_and_opens_the_study(
    server: Any, page: Any, username: str, password: str, study: dict[str, Any]
) -> None:
    """An EMR (IID) link without a session: the sign-in form in Vietnamese, then the
    study of the link with an image, at the same address, the user named in the header."""
    accession = urllib.parse.quote(value(study, "00080050"))
    link = f"{server.http_url}/viewer/?requestType=STUDY&accessionNumber={accession}"
    page.goto(link)
    wait_for_sign_in_form(page)
    assert page.inner_text("[data-testid=login-submit]").strip() == "Đăng nhập"
    assert page.evaluate(f"{H}.user") is None
    sign_in_on_page(page, username, password)
    wait_for_first_image(page)
    assert state(page, "studyInstanceUID") == value(study, "0020000D")
    assert page.evaluate("location.href") == link
    assert page.evaluate(f"{H}.user.name") == username
    page.wait_for_function(
        "name => document.querySelector('[data-testid=user-name]').textContent === name "
        "&& !document.querySelector('[data-testid=user-box]').hidden",
        arg=username,
    )


def session_cookie(server: Any, token: str) -> dict[str, Any]:
    """The viewer's session cookie for a token from `api_login`, in the form Playwright's
    `BrowserContext.add_cookies` takes: a page opened after it is signed in."""
    return {"name": "minipacs_session", "value": token, "url": server.http_url,
            "httpOnly": True, "sameSite": "Strict"}


READER, READER_PASSWORD = "bs.doc-phim", "Doc-Phim-2026!"


def reader_session(server: Any) -> str:
    """A session of a radiologist account made once per server with `minipacs user add`,
    for the reading scenarios (the viewer signed in as a radiologist would be)."""
    token: str | None = getattr(server, "_reader_session", None)
    if token is None:
        server.add_user(READER, "radiologist", READER_PASSWORD)
        token = api_login(server, READER, READER_PASSWORD)
        server._reader_session = token
    return token


def sign_in_reader(server: Any, page: Any) -> None:
    """Open the viewer and sign in through its form as the reading radiologist."""
    reader_session(server)
    page.goto(f"{server.http_url}/viewer/")
    sign_in_on_page(page, READER, READER_PASSWORD)
    page.wait_for_function("() => document.getElementById('login-view').hidden")
