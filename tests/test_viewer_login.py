# ruff: noqa: E501  -- JavaScript snippets for the page are kept on one line each
"""The viewer in front of a server with accounts (issue #11): sign-in from an EMR link,
sign-out, refusals in the reader's language, the forced change of a one-time password,
a new sign-in over the current view after a 401, the idle lock, and no sign-in with
MINIPACS_AUTH=off.

Accounts are made as a hospital administrator makes them: `minipacs user add` on the
server's data dir and backends, while the server runs.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from backends import Backends
from conftest import ServerProcess
from firefox_bidi import Firefox, firefox_executable
from preloaded import LAUNCHER
from viewer_support import (
    ARTIFACTS,
    H,
    api_login,
    dicomweb_json_as,
    emr_link_signs_in_and_opens_the_study,
    session_cookie,
    sign_in_on_page,
    state,
    value,
    wait_for_first_image,
    wait_for_message,
    wait_for_sign_in_form,
)

RADIOLOGIST, RADIOLOGIST_PASSWORD = "bs.lan", "Xquang-Phoi-2026!"
CLINICIAN, CLINICIAN_PASSWORD = "bs.minh", "Noi-Khoa-Tim-77"


# ---- fixtures -------------------------------------------------------------------------


def add_user(server: ServerProcess, name: str, role: str, password: str | None = None) -> str:
    """`minipacs user add` as an administrator runs it, with the server's data dir and
    settings (its index and blob store); the password the user signs in with (the
    one-time password the command prints when none is given)."""
    command = ["user", "add", name, "--role", role,
               "--data-dir", str(server.data_dir), *server.extra_args]
    if password is not None:
        command.append("--password-stdin")
    result = LAUNCHER.run(command, {**os.environ, **server.env},
                          input=f"{password}\n" if password else "", timeout=120)
    assert result.returncode == 0, f"user add {name} failed: {result.stdout}{result.stderr}"
    if password is not None:
        return password
    found = re.search(r"^one-time password .*: (\S+)$", result.stdout, re.MULTILINE)
    assert found, f"no one-time password in: {result.stdout}"
    return found.group(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backends: Backends
           ) -> Iterator[ServerProcess]:
    """A server with accounts on (the default, said explicitly) and sample_dicom/."""
    proc = ServerProcess(tmp_path_factory.mktemp("login-server"),
                         ["--auth", "on", *backends.server_args()]).start()
    add_user(proc, RADIOLOGIST, "radiologist", RADIOLOGIST_PASSWORD)
    add_user(proc, CLINICIAN, "clinician", CLINICIAN_PASSWORD)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def ct_study(server: ServerProcess) -> dict[str, Any]:
    token = api_login(server, RADIOLOGIST, RADIOLOGIST_PASSWORD)
    studies = dicomweb_json_as(server, token, "studies", ModalitiesInStudy="CT",
                               includefield="all")
    assert studies, "no sample CT study"
    return studies[0]



@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh context (no cookie, empty localStorage), 1280×800, failing on JS errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.set_default_timeout(15_000)
    yield tab
    context.close()
    assert not errors, f"JavaScript errors in the viewer: {errors}"


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"login-{name}.png"))


def emr_link(server: ServerProcess, study: dict[str, Any]) -> str:
    accession = urllib.parse.quote(value(study, "00080050"))
    return f"{server.http_url}/viewer/?requestType=STUDY&accessionNumber={accession}"


def fetch_status(page: Page, path: str) -> int:
    """What the page's own fetch (with its cookies) gets for `path`."""
    return int(page.evaluate("path => fetch(path, {credentials: 'same-origin'}).then(r => r.status)", path))


# ---- sign-in, sign-out ---------------------------------------------------------------------


def test_emr_link_asks_for_sign_in_then_opens_the_same_study(
    server: ServerProcess, ct_study: dict[str, Any], page: Page
) -> None:
    refused: list[str] = []
    page.on("response", lambda r: refused.append(r.url) if "/dicom-web/" in r.url and r.status == 401 else None)
    page.goto(emr_link(server, ct_study))
    wait_for_sign_in_form(page)
    assert page.inner_text("[data-testid=login-form] h1") == "Đăng nhập"
    assert page.inner_text("[data-testid=login-form] label:first-of-type span") == "Tên đăng nhập"
    screenshot(page, "page")
    emr_link_signs_in_and_opens_the_study(server, page, RADIOLOGIST, RADIOLOGIST_PASSWORD, ct_study)
    assert page.inner_text("[data-testid=user-role]") == "Bác sĩ CĐHA"
    screenshot(page, "signed-in")
    # A first visit does not know it has no session: early.js's head start (the study
    # search and its series, never more) is refused, then asked again after the sign-in.
    assert len(refused) <= 2, refused


def test_sign_out_returns_to_the_sign_in_form_and_ends_the_session(
    server: ServerProcess, ct_study: dict[str, Any], page: Page
) -> None:
    link = emr_link(server, ct_study)
    page.goto(link)
    sign_in_on_page(page, CLINICIAN, CLINICIAN_PASSWORD)
    wait_for_first_image(page)
    with page.expect_navigation():  # sign-out reloads the page, dropping the study
        page.click("[data-testid=logout]")
    wait_for_sign_in_form(page)
    assert page.evaluate("location.href") == link
    assert page.evaluate(f"{H}.user") is None
    assert page.is_hidden("[data-testid=user-box]")
    # Signed out as far as the browser knows: opening the link again asks nothing that
    # would only be refused (early.js holds back) until someone signs in.
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/dicom-web/" in r.url else None)
    page.reload()
    wait_for_sign_in_form(page)
    assert asked == []
    assert fetch_status(page, "../dicom-web/studies") == 401
    assert fetch_status(page, "../auth/me") == 401
    screenshot(page, "signed-out")


def test_wrong_password_is_refused_in_the_readers_language(
    server: ServerProcess, page: Page
) -> None:
    page.goto(f"{server.http_url}/viewer/")
    sign_in_on_page(page, RADIOLOGIST, "not-the-password")
    wait_for_message(page, "login-error", "Sai tên đăng nhập hoặc mật khẩu.")
    screenshot(page, "wrong-password")
    page.click("[data-testid=login-language-switch]")
    wait_for_message(page, "login-error", "Wrong user name or password.")
    assert page.inner_text("[data-testid=login-form] h1") == "Sign in"
    page.fill("[data-testid=login-user]", "nobody")
    page.click("[data-testid=login-submit]")
    page.wait_for_function("() => document.querySelector('[data-testid=login-submit]').disabled === false")
    wait_for_message(page, "login-error", "Wrong user name or password.")
    assert page.is_visible("[data-testid=login-form]")
    assert state(page, "user") is None


def test_one_time_password_is_changed_before_the_study_opens(
    server: ServerProcess, ct_study: dict[str, Any], page: Page
) -> None:
    name = "ktv.hoa"
    one_time = add_user(server, name, "technologist")
    link = emr_link(server, ct_study)
    page.goto(link)
    sign_in_on_page(page, name, one_time)
    wait_for_sign_in_form(page, "password")
    # Until the password is changed every other call is refused.
    assert fetch_status(page, "../dicom-web/studies") == 403
    page.fill("[data-testid=password-new]", "ngan")
    page.fill("[data-testid=password-confirm]", "ngan")
    page.click("[data-testid=password-submit]")
    wait_for_message(page, "password-error", "Mật khẩu cần ít nhất 10 ký tự.")
    screenshot(page, "weak-password")
    # Reloaded before the change, the session still asks for it (GET /auth/me says so).
    page.reload()
    wait_for_sign_in_form(page, "password")
    page.fill("[data-testid=password-old]", "not-the-one-time-password")
    page.fill("[data-testid=password-new]", "Chup-Phim-2026")
    page.fill("[data-testid=password-confirm]", "Chup-Phim-2026")
    page.click("[data-testid=password-submit]")
    wait_for_message(page, "password-error", "Mật khẩu hiện tại không đúng.")
    page.fill("[data-testid=password-old]", one_time)
    page.fill("[data-testid=password-new]", "Chup-Phim-2026")
    page.fill("[data-testid=password-confirm]", "Chup-Phim-2026-typo")
    page.click("[data-testid=password-submit]")
    wait_for_message(page, "password-error", "Hai lần nhập mật khẩu mới không giống nhau.")
    page.fill("[data-testid=password-confirm]", "Chup-Phim-2026")
    page.click("[data-testid=password-submit]")
    wait_for_first_image(page)
    assert state(page, "studyInstanceUID") == value(ct_study, "0020000D")
    assert page.evaluate("location.href") == link
    # What the account may do is read again after the change (before it, nothing but
    # changing the password): the panels that ask, e.g. the report panel, see the role's.
    assert state(page, "user")["actions"] == ["manage-worklist", "query", "store", "view"]
    assert page.inner_text("[data-testid=user-name]") == name
    # The one-time password is spent; the new one signs in.
    assert api_login(server, name, "Chup-Phim-2026").startswith("mp_")


def test_a_refused_request_signs_in_again_over_the_current_view(
    server: ServerProcess, ct_study: dict[str, Any], page: Page
) -> None:
    page.goto(emr_link(server, ct_study))
    sign_in_on_page(page, RADIOLOGIST, RADIOLOGIST_PASSWORD)
    wait_for_first_image(page)
    # Nothing left in flight (frames, thumbnails), so that the next request is the search.
    page.wait_for_function(
        f"() => {H}.loadedFrameCount === {H}.totalFrameCount && [...document.querySelectorAll('.series-thumb img')].every(i => i.complete)"
    )
    # The session is gone as far as the server is concerned (as after its idle lock).
    page.context.clear_cookies()
    page.click("[data-testid=viewer-back]")
    wait_for_sign_in_form(page)
    assert page.inner_text("[data-testid=login-notice]") == "Phiên làm việc đã hết hạn. Vui lòng đăng nhập lại."
    # The form knows who was signed in.
    assert page.input_value("[data-testid=login-user]") == RADIOLOGIST
    screenshot(page, "expired")
    page.fill("[data-testid=login-password]", RADIOLOGIST_PASSWORD)
    page.click("[data-testid=login-submit]")
    # The refused search was asked again: the list fills in.
    page.wait_for_function(f"() => {H}.page === 'list' && {H}.resultCount > 0")
    assert page.is_hidden("[data-testid=login-view]")


def test_an_idle_viewer_locks_itself_and_ends_the_session(
    server: ServerProcess, ct_study: dict[str, Any], page: Page
) -> None:
    page.clock.install()
    page.goto(emr_link(server, ct_study))
    sign_in_on_page(page, CLINICIAN, CLINICIAN_PASSWORD)
    wait_for_first_image(page)
    page.clock.run_for("14:00")
    assert page.is_hidden("[data-testid=login-view]")
    page.clock.run_for("01:30")
    wait_for_sign_in_form(page)
    assert page.inner_text("[data-testid=login-notice]").startswith("Phiên làm việc đã bị khoá")
    assert fetch_status(page, "../dicom-web/studies") == 401
    sign_in_on_page(page, CLINICIAN, CLINICIAN_PASSWORD)
    page.wait_for_function(f"() => {H}.user !== null")
    assert state(page, "studyInstanceUID") == value(ct_study, "0020000D")


def test_a_role_without_the_right_is_told_so_by_name(
    server: ServerProcess, ct_study: dict[str, Any], page: Page
) -> None:
    name, password = "nc.hung", "Nghien-Cuu-2026"
    add_user(server, name, "research", password)
    page.goto(emr_link(server, ct_study))
    sign_in_on_page(page, name, password)
    page.wait_for_function(
        "text => { const el = document.querySelector('[data-testid=status]'); return !el.hidden && el.textContent === text; }",
        arg=f"Tài khoản {name} không có quyền làm việc này (HTTP 403).",
    )
    assert page.is_hidden("[data-testid=login-view]")
    assert page.inner_text("[data-testid=user-role]") == "Nghiên cứu"


def test_a_page_opened_with_a_session_cookie_needs_no_sign_in(
    server: ServerProcess, ct_study: dict[str, Any], page: Page
) -> None:
    # How the other viewer suites can start signed in (viewer_support.session_cookie).
    token = api_login(server, RADIOLOGIST, RADIOLOGIST_PASSWORD)
    page.context.add_cookies([session_cookie(server, token)])  # type: ignore[list-item]
    page.goto(emr_link(server, ct_study))
    wait_for_first_image(page)
    assert page.is_hidden("[data-testid=login-view]")
    assert state(page, "user")["name"] == RADIOLOGIST


# ---- auth off ------------------------------------------------------------------------


def test_with_auth_off_the_viewer_shows_no_sign_in(
    tmp_path: Path, backends: Backends, page: Page
) -> None:
    proc = ServerProcess(tmp_path / "data", ["--auth", "off", "--no-load-samples",
                                             *backends.server_args()])
    proc.data_dir.mkdir()
    proc.start()
    try:
        page.goto(f"{proc.http_url}/viewer/")
        page.wait_for_function(f"() => {H} && {H}.user !== null")
        assert state(page, "user")["kind"] == "anonymous"
        page.wait_for_function(f"() => {H}.resultCount === 0 && document.querySelector('[data-testid=result-count]').textContent !== ''")
        assert page.is_hidden("[data-testid=login-view]")
        assert page.is_hidden("[data-testid=user-box]")
    finally:
        proc.stop()


# ---- Firefox -------------------------------------------------------------------------


def test_firefox_signs_in_from_an_emr_link(
    server: ServerProcess, ct_study: dict[str, Any], tmp_path: Path
) -> None:
    executable = firefox_executable()
    if executable is None:
        pytest.fail("firefox-esr is not installed; run ./test.sh, which installs it (apt-get)")
    firefox = Firefox(executable, tmp_path / "firefox")
    try:
        tab = firefox.new_page(1280, 800)
        emr_link_signs_in_and_opens_the_study(server, tab, RADIOLOGIST, RADIOLOGIST_PASSWORD, ct_study)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(str(ARTIFACTS / "login-firefox-signed-in.png"))
        assert tab.javascript_errors() == []
    finally:
        firefox.close()


# ---- share links -----------------------------------------------------------------------


def test_share_link_with_pin_opens_the_shared_study_and_nothing_else(
    server: ServerProcess, ct_study: dict[str, Any], page: Page
) -> None:
    study_uid = value(ct_study, "0020000D")
    token = api_login(server, RADIOLOGIST, RADIOLOGIST_PASSWORD)
    created = httpx.post(f"{server.http_url}/share-links", json={"study_uid": study_uid,
                                                                 "pin": "1357"},
                         headers={"Authorization": f"Bearer {token}"})
    assert created.status_code == 201, created.text
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    page.goto(created.json()["url"])
    wait_for_sign_in_form(page, "share")
    assert page.inner_text("[data-testid=share-form] h1") == "Mở liên kết chia sẻ"
    page.fill("[data-testid=share-pin]", "0000")
    page.click("[data-testid=share-submit]")
    wait_for_message(page, "share-error", "Mã PIN không đúng.")
    screenshot(page, "share-pin")
    page.fill("[data-testid=share-pin]", "1357")
    page.click("[data-testid=share-submit]")
    wait_for_first_image(page)
    assert state(page, "studyInstanceUID") == study_uid
    assert "#share=" not in page.evaluate("location.href")
    assert not any("sh_" in url for url in asked)  # the token went in a body, never a URL
    screenshot(page, "share-opened")
    # The session is the link's: other studies stay closed, downloads too.
    others = [s for s in dicomweb_json_as(server, token, "studies")
              if value(s, "0020000D") != study_uid]
    assert fetch_status(page, f"../dicom-web/studies/{value(others[0], '0020000D')}/metadata") == 403
    assert fetch_status(page, f"../dicom-web/studies/{study_uid}") == 403
    listed = page.evaluate("fetch('../dicom-web/studies', {credentials: 'same-origin'}).then(r => r.json())")
    assert [value(s, "0020000D") for s in listed] == [study_uid]


# ---- the auditor's page ------------------------------------------------------------------


def test_auditor_page_lists_who_saw_a_patient_and_refuses_other_roles(
    server: ServerProcess, ct_study: dict[str, Any], page: Page
) -> None:
    patient = value(ct_study, "00100020")
    radiologist = api_login(server, RADIOLOGIST, RADIOLOGIST_PASSWORD)
    assert dicomweb_json_as(server, radiologist, f"studies/{value(ct_study, '0020000D')}/metadata")
    add_user(server, "kiem.toan", "auditor", "Kiem-Toan-2026!")
    page.context.add_cookies([session_cookie(server, api_login(server, "kiem.toan",
                                                               "Kiem-Toan-2026!"))])
    page.goto(f"{server.http_url}/viewer/audit.html")
    page.wait_for_function("() => !document.getElementById('audit-message').hidden")
    page.fill("[data-testid=audit-patient]", patient)
    page.fill("[data-testid=audit-action]", "view")
    page.click("[data-testid=audit-search]")
    page.wait_for_function(
        "name => [...document.querySelectorAll('#audit-rows tr')].some(r => r.textContent.includes(name))",
        arg=f"user:{RADIOLOGIST}")
    assert page.inner_text("h1") == "Nhật ký truy cập"
    assert patient in page.inner_text("#audit-rows")
    assert "format=csv" in page.get_attribute("[data-testid=audit-csv]", "href")
    screenshot(page, "audit-page")
    # A clinician's session is told the page is not for them.
    page.context.clear_cookies()
    page.context.add_cookies([session_cookie(server, api_login(server, CLINICIAN,
                                                               CLINICIAN_PASSWORD))])
    page.reload()
    wait_for_message(page, "audit-message", "Tài khoản này không có quyền đọc nhật ký (cần vai trò kiểm toán hoặc quản trị).")
