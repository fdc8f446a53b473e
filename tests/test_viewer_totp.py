# ruff: noqa: E501  -- JavaScript snippets for the page are kept on one line each
"""The viewer's security page (viewer/security.html): a user enrols a TOTP second factor
by its QR code and secret, signs in with codes from then on, and removes it with a code;
an administrator who must enrol (MINIPACS_AUTH_ADMIN_TOTP=required) is sent there after
signing in. Codes are computed as an authenticator app does, with pyotp (RFC 6238).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pyotp
import pytest
from playwright.sync_api import Browser, Page

from backends import Backends
from conftest import ServerProcess
from viewer_support import ARTIFACTS, H, sign_in_on_page, wait_for_sign_in_form

READER, READER_PASSWORD = "bs.thu", "Xquang-Thu-2026!"
ADMIN, ADMIN_PASSWORD = "qt.hung", "Quan-Tri-Hung-2026!"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backends: Backends
           ) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("totp-viewer"), [
        "--auth", "on", "--auth-admin-totp", "required", *backends.server_args()]).start()
    yield proc
    proc.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.set_default_timeout(15_000)
    yield tab
    context.close()
    assert not errors, f"JavaScript errors in the viewer: {errors}"


def code(secret: str, steps_from_now: int) -> str:
    """The app's code `steps_from_now` 30-second steps away (the server accepts one step
    either side, and each step once), away from a step boundary."""
    deadline = time.monotonic() + 3
    while time.time() % 30 > 29 and time.monotonic() < deadline:
        time.sleep(0.1)  # bounded: at most the last second of the step
    return pyotp.TOTP(secret).at(time.time() + 30 * steps_from_now)


def audit(server: ServerProcess, action: str, actor: str) -> list[dict[str, Any]]:
    response = server.http.get("/admin/audit", params={"action": action, "actor": actor})
    assert response.status_code == 200, response.text
    return list(response.json())


def wait_for_state(page: Page, state: str) -> None:
    page.wait_for_function("s => document.body.dataset.totp === s", arg=state)


def enrol_on_the_page(page: Page) -> str:
    """Turn the second factor on from the security page; the secret it showed."""
    page.click("[data-testid=totp-start]")
    wait_for_state(page, "pending")
    # The QR code is an image the page can draw (an SVG made by the server).
    page.wait_for_function("() => document.querySelector('[data-testid=totp-qr]').complete && document.querySelector('[data-testid=totp-qr]').naturalWidth > 100")
    assert page.get_attribute("[data-testid=totp-qr]", "src").startswith("data:image/svg+xml")
    secret = page.inner_text("[data-testid=totp-secret]").strip()
    assert len(secret) == 32
    page.fill("[data-testid=totp-code]", code(secret, -1))
    page.click("[data-testid=totp-confirm]")
    wait_for_state(page, "enabled")
    return secret


def test_user_enrols_signs_in_with_a_code_and_turns_it_off(
    server: ServerProcess, page: Page
) -> None:
    server.add_user(READER, "radiologist", READER_PASSWORD)
    page.goto(f"{server.http_url}/viewer/")
    sign_in_on_page(page, READER, READER_PASSWORD)
    page.wait_for_function("() => document.getElementById('login-view').hidden")
    page.click("[data-testid=security-link]")
    page.wait_for_url("**/viewer/security.html")
    wait_for_state(page, "off")
    assert page.inner_text("[data-testid=security-status]") == "Chưa bật xác thực hai lớp."
    page.click("[data-testid=totp-start]")
    wait_for_state(page, "pending")
    # A wrong code: refused in the reader's language, nothing enabled.
    secret = page.inner_text("[data-testid=totp-secret]").strip()
    wrong = next(c for c in ("000000", "111111", "222222")
                 if c not in {pyotp.TOTP(secret).at(time.time() + 30 * d) for d in (-1, 0, 1)})
    page.fill("[data-testid=totp-code]", wrong)
    page.click("[data-testid=totp-confirm]")
    page.wait_for_function("() => !document.querySelector('[data-testid=security-error]').hidden")
    assert page.inner_text("[data-testid=security-error]").startswith("Mã không đúng")
    page.wait_for_function("() => document.querySelector('[data-testid=totp-qr]').naturalWidth > 100")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "security-enrol.png"))
    page.fill("[data-testid=totp-code]", code(secret, -1))
    page.click("[data-testid=totp-confirm]")
    wait_for_state(page, "enabled")
    assert page.is_visible("[data-testid=security-continue]")
    page.click("[data-testid=language-switch]")
    page.wait_for_function("() => document.querySelector('[data-testid=security-status]').textContent.startsWith('Two-step sign-in is on')")
    assert [e["outcome"] for e in audit(server, "totp-enable", f"user:{READER}")] == ["success"]

    # Sign out, sign in again: the password alone no longer does.
    page.click("[data-testid=security-continue]")
    page.wait_for_function(f"() => {H} && {H}.user && {H}.user.name === '{READER}'")
    with page.expect_navigation():
        page.click("[data-testid=logout]")
    wait_for_sign_in_form(page)
    sign_in_on_page(page, READER, READER_PASSWORD)
    page.wait_for_selector("[data-testid=login-totp-field]:not([hidden])")
    page.fill("[data-testid=login-totp]", code(secret, 0))
    page.click("[data-testid=login-submit]")
    page.wait_for_function(f"() => {H}.user && {H}.user.name === '{READER}' && document.getElementById('login-view').hidden")
    logins = audit(server, "login", f"user:{READER}")
    assert logins[0]["outcome"] == "success"
    assert logins[0]["detail"] == "session with one-time code"

    # Turn it off with a current code; the password alone works again.
    page.goto(f"{server.http_url}/viewer/security.html")
    wait_for_state(page, "enabled")
    page.fill("[data-testid=totp-disable-code]", code(secret, 1))
    page.click("[data-testid=totp-disable]")
    wait_for_state(page, "off")
    assert httpx.post(f"{server.http_url}/auth/login", timeout=30, json={
        "username": READER, "password": READER_PASSWORD}).status_code == 200
    disabled = audit(server, "totp-disable", f"user:{READER}")
    assert [e["outcome"] for e in disabled] == ["success"]


def test_admin_who_must_enrol_is_sent_to_the_security_page_then_works(
    server: ServerProcess, page: Page
) -> None:
    server.add_user(ADMIN, "admin", ADMIN_PASSWORD)
    page.goto(f"{server.http_url}/viewer/")
    sign_in_on_page(page, ADMIN, ADMIN_PASSWORD)
    page.wait_for_url("**/viewer/security.html")
    wait_for_state(page, "off")
    assert page.inner_text("[data-testid=security-status]").startswith(
        "Tài khoản quản trị phải bật xác thực hai lớp")
    studies = "fetch('../dicom-web/studies', {credentials: 'same-origin'}).then(r => r.status)"
    assert page.evaluate(studies) == 403  # nothing else until enrolled
    secret = enrol_on_the_page(page)
    assert page.evaluate(studies) == 200
    # The policy keeps an administrator's factor on.
    page.fill("[data-testid=totp-disable-code]", code(secret, 1))
    page.click("[data-testid=totp-disable]")
    page.wait_for_function("() => !document.querySelector('[data-testid=security-error]').hidden")
    assert page.inner_text("[data-testid=security-error]") == \
        "Tài khoản quản trị phải giữ xác thực hai lớp trên máy chủ này."
    page.click("[data-testid=security-continue]")
    page.wait_for_function(f"() => {H} && {H}.user && {H}.user.name === '{ADMIN}' && document.getElementById('login-view').hidden")
