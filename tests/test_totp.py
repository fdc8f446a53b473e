# ruff: noqa: E501  -- JavaScript snippets for the page are kept on one line each
"""A TOTP second factor for administrators (issue #11, RFC 6238), against a real server:
accounts made and enrolled with the CLI as an operator does, codes computed here with
pyotp from the secret the CLI prints once.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyotp
import pytest
from playwright.sync_api import Browser

from backends import Backends
from conftest import ServerProcess
from viewer_support import H, sign_in_on_page, wait_for_message

ADMIN, PASSWORD = "qtv.an", "Quan-Tri-Vien-2026!"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backends: Backends
           ) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("totp"),
                         ["--auth", "on", *backends.server_args()]).start()
    yield proc
    proc.stop()


def enroll(server: ServerProcess, name: str) -> str:
    """`minipacs user totp NAME`: the base32 secret it prints once (checked against the
    otpauth:// URI it prints too)."""
    done = server.cli("user", "totp", name)
    assert done.returncode == 0, done.stdout + done.stderr
    secret = re.search(r"^secret \(base32\): ([A-Z2-7]+)$", done.stdout, re.MULTILINE)
    uri = re.search(r"^otpauth URI: (otpauth://totp/\S+)$", done.stdout, re.MULTILINE)
    assert secret and uri, done.stdout
    assert pyotp.parse_uri(uri.group(1)).secret == secret.group(1)
    assert "issuer=minipacs" in uri.group(1) and name in uri.group(1)
    return secret.group(1)


def login(server: ServerProcess, name: str, password: str, code: str | None = None
          ) -> httpx.Response:
    body = {"username": name, "password": password}
    if code is not None:
        body["totp"] = code
    return httpx.post(f"{server.http_url}/auth/login", json=body, timeout=30)


def fresh_code(secret: str) -> str:
    """A code for the current step, not within 2 s of the step's end (so the server,
    one request later, still sees a step inside its ±1 window)."""
    deadline = time.monotonic() + 5
    while time.time() % 30 > 28 and time.monotonic() < deadline:
        time.sleep(0.2)  # bounded: at most the 2 s left in the step
    return pyotp.TOTP(secret).now()


def wrong_code(secret: str) -> str:
    totp, now = pyotp.TOTP(secret), time.time()
    near = {totp.at(now + d) for d in (-60, -30, 0, 30, 60)}
    return next(c for c in (f"{n:06d}" for n in range(0, 1_000_000, 7919)) if c not in near)


def audit(server: ServerProcess, action: str) -> list[dict[str, object]]:
    response = server.http.get("/admin/audit", params={"action": action})
    assert response.status_code == 200, response.text
    return list(response.json())


def test_enrolled_admin_needs_a_fresh_code_and_basic_is_refused(server: ServerProcess) -> None:
    server.add_user(ADMIN, "admin", PASSWORD)
    assert login(server, ADMIN, PASSWORD).status_code == 200  # no factor yet: optional
    secret = enroll(server, ADMIN)
    listed = server.cli("user", "list")
    assert re.search(rf"^{re.escape(ADMIN)} .*\(second factor\)", listed.stdout, re.MULTILINE)

    missing = login(server, ADMIN, PASSWORD)
    assert missing.status_code == 401, missing.text
    assert "a one-time code from the authenticator app is required" in missing.text

    wrong = login(server, ADMIN, PASSWORD, wrong_code(secret))
    assert wrong.status_code == 401 and "is wrong or expired" in wrong.text, wrong.text
    failures = [e for e in audit(server, "login") if e["actor"] == f"user:{ADMIN}"
                and e["outcome"] == "failure"]
    assert "wrong one-time code (1 in a row)" in str(failures[0]["detail"])  # lockout counts it

    # A wrong password with the right code is still a wrong password.
    code = fresh_code(secret)
    assert login(server, ADMIN, "Not-The-Password-1", code).status_code == 401

    right = login(server, ADMIN, PASSWORD, code)
    assert right.status_code == 200, right.text
    token = right.json()["access_token"]
    me = httpx.get(f"{server.http_url}/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["name"] == ADMIN and me.json()["must_enroll_totp"] is False
    assert "query" in me.json()["actions"]

    replay = login(server, ADMIN, PASSWORD, code)
    assert replay.status_code == 401 and "already used" in replay.text, replay.text

    basic = base64.b64encode(f"{ADMIN}:{PASSWORD}".encode()).decode()
    refused = httpx.get(f"{server.http_url}/dicom-web/studies",
                        headers={"Authorization": f"Basic {basic}"}, timeout=30)
    assert refused.status_code == 401
    assert "HTTP Basic cannot carry the second factor" in refused.text

    enabled = audit(server, "totp-enable")
    assert any(e["detail"] == f"user {ADMIN}" and str(e["actor"]).startswith("system:cli-")
               for e in enabled), enabled

    disabled = server.cli("user", "totp", ADMIN, "--disable")
    assert disabled.returncode == 0, disabled.stdout + disabled.stderr
    assert login(server, ADMIN, PASSWORD).status_code == 200
    assert httpx.get(f"{server.http_url}/dicom-web/studies", timeout=30,
                     headers={"Authorization": f"Basic {basic}"}).status_code == 200
    assert any(e["detail"] == f"user {ADMIN}" for e in audit(server, "totp-disable"))
    again = server.cli("user", "totp", ADMIN, "--disable")
    assert again.returncode != 0 and "has no second factor" in again.stdout + again.stderr


def test_required_forces_an_admin_without_a_factor_to_enrol(tmp_path: Path,
                                                             backends: Backends) -> None:
    proc = ServerProcess(tmp_path, ["--auth", "on", "--auth-admin-totp", "required",
                                    *backends.server_args()]).start()
    try:
        name, password = "qtv.binh", "Bat-Buoc-Hai-Lop-9"
        proc.add_user(name, "admin", password)
        proc.add_user("bs.chi", "radiologist", "Chi-Doc-Phim-2026")
        # Other roles are not concerned.
        assert login(proc, "bs.chi", "Chi-Doc-Phim-2026").json()["must_enroll_totp"] is False

        first = login(proc, name, password)
        assert first.status_code == 200, first.text
        assert first.json()["must_enroll_totp"] is True
        auth = {"Authorization": f"Bearer {first.json()['access_token']}"}
        with httpx.Client(base_url=proc.http_url, headers=auth, timeout=30) as http:
            blocked = http.get("/dicom-web/studies")
            assert blocked.status_code == 403 and "must enrol a second factor" in blocked.text
            assert http.get("/admin/users").status_code == 403
            assert http.post("/auth/totp/confirm", json={"code": "123456"}).status_code == 400
            started = http.post("/auth/totp/enroll")
            assert started.status_code == 200, started.text
            secret = started.json()["secret"]
            assert pyotp.parse_uri(started.json()["otpauth_uri"]).secret == secret
            bad = http.post("/auth/totp/confirm", json={"code": wrong_code(secret)})
            assert bad.status_code == 400 and "does not match" in bad.text
            code = fresh_code(secret)
            assert http.post("/auth/totp/confirm", json={"code": code}).status_code == 204
            assert http.post("/auth/totp/enroll").status_code == 409
            # Enrolled: the same session may now do what an admin does.
            assert http.get("/auth/me").json()["must_enroll_totp"] is False
            assert http.get("/dicom-web/studies").status_code == 200
        # The code that confirmed cannot log in again; without a code, none either.
        replay = login(proc, name, password, code)
        assert replay.status_code == 401 and "already used" in replay.text
        assert "is required" in login(proc, name, password).text
        events = proc.http.get("/admin/audit", params={"action": "totp-enable"}).json()
        assert any(e["actor"] == f"user:{name}" for e in events), events
    finally:
        proc.stop()


def test_viewer_asks_for_the_code_and_signs_in_with_it(server: ServerProcess,
                                                       browser: Browser) -> None:
    name, password = "qtv.dung", "Vien-Xem-Phim-2026!"
    server.add_user(name, "admin", password)
    secret = enroll(server, name)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(15_000)
    try:
        page.goto(f"{server.http_url}/viewer/")
        assert not page.is_visible("[data-testid=login-totp]")
        sign_in_on_page(page, name, password)
        wait_for_message(page, "login-error", "Tài khoản này cần mã xác thực 6 chữ số từ ứng dụng xác thực trên điện thoại.")
        assert page.is_visible("[data-testid=login-totp]")
        assert page.evaluate(f"{H}.user") is None
        page.fill("[data-testid=login-totp]", wrong_code(secret))
        page.click("[data-testid=login-submit]")
        wait_for_message(page, "login-error", "Mã xác thực không đúng hoặc đã hết hạn.")
        page.fill("[data-testid=login-totp]", fresh_code(secret))
        page.click("[data-testid=login-submit]")
        page.wait_for_function(f"() => {H}.user !== null && {H}.user.name === '{name}'")
        assert page.is_hidden("[data-testid=login-view]")
    finally:
        context.close()
    assert not errors, f"JavaScript errors in the viewer: {errors}"
