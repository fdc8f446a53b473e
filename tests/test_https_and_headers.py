"""Transport and hardening of the HTTP door: HTTPS from a certificate and key, HSTS, the
security headers on every answer (API, viewer, errors), the viewer working under its
Content-Security-Policy, and CORS never carrying credentials."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ServerProcess
from test_access_and_tls import _certificate
from viewer_support import (
    READER,
    READER_PASSWORD,
    canvas_pixels,
    wait_for_first_image,
    wait_for_render,
)

pytestmark = pytest.mark.door_only  # runs in the embedded pass only (conftest.py)


class HttpsServer(ServerProcess):
    """A server whose HTTP port speaks only HTTPS with the test's own certificate."""

    ca: str = ""

    @property
    def http_url(self) -> str:
        return f"https://127.0.0.1:{self.http_port}"

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(base_url=self.http_url, headers=self.auth, timeout=60,
                                      verify=ssl.create_default_context(cafile=self.ca))
        return self._http


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServer]:
    tmp = tmp_path_factory.mktemp("https")
    cert, key = _certificate(tmp)
    proc = HttpsServer(tmp / "data", ["--http-tls-cert", str(cert), "--http-tls-key", str(key)])
    proc.ca = str(cert)
    proc.data_dir.mkdir()
    proc.start()
    yield proc
    proc.stop()


def _has_common_headers(response: httpx.Response, frame_options: str | None = "DENY") -> None:
    assert response.headers["x-content-type-options"] == "nosniff", response.url
    assert response.headers["referrer-policy"] == "no-referrer", response.url
    assert response.headers.get("x-frame-options") == frame_options, response.url
    assert "frame-ancestors" in response.headers["content-security-policy"], response.url


def test_https_port_serves_tls_only_with_hsts(https_server: HttpsServer) -> None:
    ready = json.loads((https_server.data_dir / "ready.json").read_text())
    assert ready["url"].startswith("https://127.0.0.1:"), ready
    assert f"Viewer  https://127.0.0.1:{https_server.http_port}/viewer/" in https_server.log()

    response = https_server.http.get("/healthz")
    assert response.status_code == 200, response.text
    assert response.headers["strict-transport-security"] == "max-age=31536000"
    _has_common_headers(response)
    missing = https_server.http.get("/no/such/thing")
    assert missing.status_code == 404
    assert missing.headers["strict-transport-security"] == "max-age=31536000"

    # Without the CA the certificate is not trusted; plain HTTP on the port gets no answer.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{https_server.http_url}/healthz", timeout=10)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{https_server.http_port}/healthz", timeout=10)
    # RFC 8996: TLS 1.0 and 1.1 are refused even when the client offers only them.
    # (This client does negotiate TLS 1.1 with a server that allows it.)
    old = ssl.create_default_context(cafile=https_server.ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # naming TLS 1.0/1.1 warns
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{https_server.http_url}/healthz", verify=old, timeout=10)


def test_session_cookie_is_secure_over_https(https_server: HttpsServer) -> None:
    https_server.add_user("https-reader", "radiologist", "Tls-Doc-Phim-2026!")
    login = https_server.http.post("/auth/login", json={"username": "https-reader",
                                                        "password": "Tls-Doc-Phim-2026!"})
    assert login.status_code == 200, login.text
    cookie = login.headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie


def test_viewer_paints_an_image_over_https_under_its_csp(
    https_server: HttpsServer, browser: Any
) -> None:
    https_server.add_user(READER, "radiologist", READER_PASSWORD)
    login = https_server.http.post("/auth/login", json={"username": READER,
                                                        "password": READER_PASSWORD})
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    page_answer = https_server.http.get("/viewer/")
    csp = page_answer.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "default-src 'none'" in csp
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    studies = https_server.http.get("/dicom-web/studies", params={"ModalitiesInStudy": "CT"})
    assert studies.status_code == 200, studies.text
    study = studies.json()[0]["0020000D"]["Value"][0]

    context = browser.new_context(viewport={"width": 1280, "height": 800},
                                  ignore_https_errors=True)
    context.add_cookies([{"name": "minipacs_session", "value": token,
                          "url": https_server.http_url, "httpOnly": True,
                          "sameSite": "Strict", "secure": True}])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text)
            if "Content Security Policy" in message.text else None)
    page.on("requestfailed", lambda request: errors.append(f"failed: {request.url}"))
    page.set_default_timeout(20_000)
    try:
        page.goto(f"{https_server.http_url}/viewer/?requestType=STUDY&studyUID={study}")
        wait_for_first_image(page)
        wait_for_render(page)
        assert len(set(canvas_pixels(page))) > 1, "the viewport is blank"
    finally:
        context.close()
    assert not errors, f"errors in the viewer under its CSP: {errors}"


def test_headers_on_api_viewer_and_error_answers(server: ServerProcess) -> None:
    anonymous = httpx.Client(base_url=server.http_url, timeout=30)
    answers = {
        "api": server.http.get("/healthz"),
        "viewer": anonymous.get("/viewer/"),
        "viewer module": anonymous.get("/viewer/js/main.js"),
        "not found": server.http.get("/no/such/thing"),
        "unauthenticated": anonymous.get("/dicom-web/studies"),
        "bad request": server.http.get("/dicom-web/studies", params={"limit": "many"}),
    }
    anonymous.close()
    assert [a.status_code for a in answers.values()] == [200, 200, 200, 404, 401, 400]
    for name, answer in answers.items():
        _has_common_headers(answer)
        assert "strict-transport-security" not in answer.headers, name  # plain HTTP
    for name in ("api", "not found", "unauthenticated", "bad request"):
        assert answers[name].headers["content-security-policy"] == "frame-ancestors 'none'"
    for name in ("viewer", "viewer module"):
        csp = answers[name].headers["content-security-policy"]
        assert "script-src 'self';" in csp and "connect-src 'self';" in csp, csp
        assert csp.endswith("frame-ancestors 'none'"), csp


def test_framing_origins_public_https_url_and_cors_without_credentials(
    tmp_path: Path
) -> None:
    proc = ServerProcess(tmp_path / "data", [
        "--no-load-samples", "--frame-ancestors", "https://emr.example.org",
        "--public-url", "https://pacs.example.org",
        "--viewer-connect-origins", "https://pacs2.example.org/",
        "--cors-origins", "*"])
    proc.data_dir.mkdir()
    proc.start()
    try:
        page = httpx.get(f"{proc.http_url}/viewer/", timeout=30)
        _has_common_headers(page, frame_options=None)  # XFO cannot name an origin
        csp = page.headers["content-security-policy"]
        assert "connect-src 'self' https://pacs2.example.org;" in csp, csp
        assert csp.endswith("frame-ancestors https://emr.example.org"), csp
        # Behind a TLS proxy (PUBLIC_URL https), HSTS is sent though we speak HTTP.
        assert page.headers["strict-transport-security"] == "max-age=31536000"

        origin = {"Origin": "https://elsewhere.example.org"}
        preflight = httpx.options(f"{proc.http_url}/dicom-web/studies", timeout=30, headers={
            **origin, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in preflight.headers
        answer = proc.http.get("/dicom-web/studies", headers=origin)
        assert answer.status_code == 200, answer.text
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in answer.headers
    finally:
        proc.stop()


@pytest.mark.parametrize("given", ["--http-tls-cert", "--http-tls-key"])
def test_half_configured_https_is_a_startup_error(tmp_path: Path, given: str) -> None:
    cert, _ = _certificate(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "minipacs", "serve", "--data-dir", str(tmp_path / "data"),
         "--http-port", "0", "--dicom-port", "0", "--no-load-samples", given, str(cert)],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "MINIPACS_HTTP_TLS_CERT and MINIPACS_HTTP_TLS_KEY" in done.stderr, done.stderr
