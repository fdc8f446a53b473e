# ruff: noqa: E501  -- JavaScript snippets for the page are kept on one line each
"""The report panel in Firefox (Debian's firefox-esr over WebDriver BiDi, as
test_viewer_firefox.py): the core of test_viewer_report.py's scenario, where browsers
differ (typing Vietnamese, localStorage, keepalive saves on page hide, fetch with
If-Match): write, draft autosaved, reload at once (nothing lost), sign; the stored PDF
and SR say exactly what was typed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess
from firefox_bidi import Firefox, FirefoxPage, firefox_executable
from report_support import (
    check_signed_documents,
    ct_study_with_order,
    fhir_as,
    findings_of,
    local_draft,
    open_report_panel,
    sign_on_page,
    unique,
    wait_until_saved,
)
from viewer_support import ARTIFACTS, H, api_login, sign_in_on_page, state

PASSWORD = "Doc-Ket-Qua-2026!"
FINDINGS = "Nốt mờ tròn ở thùy dưới phổi phải, đường kính khoảng 20 mm; trung thất không có hạch to."
MORE = " Không tràn dịch màng phổi."
CONCLUSION = "Nốt đơn độc thùy dưới phổi phải. Đề nghị sinh thiết."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(Path(tmp_path_factory.mktemp("report-firefox")), ["--no-load-samples"]).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def firefox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Firefox]:
    executable = firefox_executable()
    if executable is None:
        pytest.fail("firefox-esr is not installed; run ./test.sh, which installs it (apt-get)")
    browser = Firefox(executable, tmp_path_factory.mktemp("firefox-report"))
    yield browser
    browser.close()


def test_radiologist_writes_a_draft_that_survives_a_reload_and_signs_it_in_firefox(
    server: ServerProcess, firefox: Firefox
) -> None:
    user = unique("rad.").lower()
    server.add_user(user, "radiologist", PASSWORD)
    token = api_login(server, user, PASSWORD)
    ct = ct_study_with_order(server, slices=3)
    page: FirefoxPage = firefox.new_page(1440, 900)
    page.default_timeout = 30.0
    try:
        page.goto(f"{server.http_url}/viewer/")
        sign_in_on_page(page, user, PASSWORD)
        page.wait_for_function("() => document.getElementById('login-view').hidden")
        open_report_panel(server, page, ct["study"])
        assert state(page, "report")["suggested"] == "CT ngực"
        # Typed key by key: each keystroke in localStorage at once, then autosaved.
        page.fill("[data-testid=report-findings]", FINDINGS)
        assert local_draft(page, user, ct["study"])["findings"] == FINDINGS
        page.fill("[data-testid=report-conclusion]", CONCLUSION)
        saved = wait_until_saved(page)
        with fhir_as(server, token) as fhir:
            draft = fhir.get(f"/DiagnosticReport/{saved['reportId']}").json()
        assert draft["status"] == "registered"
        assert (findings_of(draft), draft["conclusion"]) == (FINDINGS, CONCLUSION)
        # More typed, the page reloaded at once (before the 2 s autosave): nothing lost.
        page.click("[data-testid=report-findings]")
        page.evaluate("() => { const a = document.querySelector('[data-testid=report-findings]'); a.setSelectionRange(a.value.length, a.value.length); }")
        page.keyboard.type(MORE)
        page.reload()
        page.wait_for_function(f"() => {H} && {H}.page === 'viewer'")
        open_report_panel(server, page, ct["study"])
        page.wait_for_function(f"(text) => {H}.report.findings === text", arg=FINDINGS + MORE)
        saved = wait_until_saved(page)
        # Sign: final over FHIR; the PDF and SR in the study say exactly what was typed.
        sign_on_page(page)
        with fhir_as(server, token) as fhir:
            assert fhir.get(f"/DiagnosticReport/{saved['reportId']}").json()["status"] == "final"
        check_signed_documents(server, token, ct["study"], FINDINGS + MORE, CONCLUSION, [])
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(str(ARTIFACTS / "firefox-report-signed.png"))
        errors = page.javascript_errors()
    finally:
        page.close()
    assert not errors, f"JavaScript errors in the viewer (Firefox): {errors}"
