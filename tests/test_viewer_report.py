# ruff: noqa: E501  -- JavaScript snippets for the page are kept on one line each
"""Writing the report in the viewer (issue #14, "The report"), in Chromium against a real
minipacs: a radiologist made with the CLI opens a head CT (ordered over FHIR), the panel
shows the order and offers the head-CT template, the Vietnamese text typed is kept in
localStorage at once and autosaved to the server as a draft (read back over FHIR), is
there again after the page is closed (also when it never reached the server), a key image
is attached from the viewport by one click, signing stores a PDF and an SR whose text is
exactly what was typed (read back over DICOMweb), and an amendment makes a new version
while the signed one stays readable. A technologist sees the report read-only; two tabs
do not overwrite each other's saves (If-Match, 412)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from conftest import ServerProcess
from report_support import (
    check_signed_documents,
    ct_study_with_order,
    fhir_as,
    findings_of,
    local_draft,
    open_report_panel,
    reports_of_study,
    sign_on_page,
    unique,
    wait_until_saved,
)
from viewer_support import ARTIFACTS, H, api_login, session_cookie, state, text_of

FINDINGS = ("Chụp CT ngực không tiêm thuốc cản quang, lát cắt 5 mm.\n"
            "- Nốt mờ tròn bờ đều ở thùy dưới phổi phải, đường kính khoảng 20 mm, tỷ trọng mô mềm.\n"
            "- Nhu mô phổi còn lại sáng đều, khí phế quản thông thoáng.\n"
            "- Trung thất không thấy hạch to; không tràn dịch màng phổi.")
CONCLUSION = "Nốt đơn độc thùy dưới phổi phải, đường kính khoảng 20 mm. Đề nghị sinh thiết hoặc theo dõi."
AMENDED = "Nốt đơn độc thùy dưới phổi phải, đường kính 20 mm, nghi u. Đề nghị sinh thiết xuyên thành ngực."
PASSWORD = "Doc-Ket-Qua-2026!"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = Path(tmp_path_factory.mktemp("report-server"))
    proc = ServerProcess(data, ["--no-load-samples"]).start()
    yield proc
    proc.stop()


def account(server: ServerProcess, role: str) -> tuple[str, str]:
    """A user made with `minipacs user add` and a session token of theirs."""
    name = unique(f"{role[:3]}.").lower()
    server.add_user(name, role, PASSWORD)
    return name, api_login(server, name, PASSWORD)


@pytest.fixture(scope="module")
def radiologist(server: ServerProcess) -> tuple[str, str]:
    return account(server, "radiologist")


def context_of(browser: Browser, server: ServerProcess, token: str) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.add_cookies([session_cookie(server, token)])  # type: ignore[list-item]
    return context


def new_page(context: BrowserContext, errors: list[str]) -> Page:
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(30_000)
    return page


def test_radiologist_writes_drafts_signs_and_amends_the_report_beside_the_images(
    server: ServerProcess, browser: Browser, radiologist: tuple[str, str]
) -> None:
    user, token = radiologist
    ct = ct_study_with_order(server)
    fhir = fhir_as(server, token)
    errors: list[str] = []
    context = context_of(browser, server, token)
    page = new_page(context, errors)
    try:
        open_report_panel(server, page, ct["study"])
        panel = state(page, "report")
        # The order, from the study's ServiceRequest.
        assert panel["order"] == ct["order"]
        order = text_of(page, "[data-testid=report-order]")
        assert "BS. Lê Minh Đức" in order and "CT ngực không tiêm thuốc" in order and ct["accession"] in order
        # The chest-CT template is offered for a CT of BodyPartExamined CHEST, and fills the empty report.
        assert panel["suggested"] == "CT ngực"
        assert {"CT sọ não", "CT bụng", "MR sọ não", "X-quang ngực thẳng", "Siêu âm bụng"} <= set(panel["templates"])
        assert panel["findings"].startswith("Chụp CT ngực") and panel["reportId"] is None
        # Picking another template replaces its untouched text; picking back restores it.
        option = "(name) => [...document.querySelector('[data-testid=report-template]').options].find(o => o.text.startsWith(name)).value"
        page.select_option("[data-testid=report-template]", page.evaluate(option, "CT sọ não"))
        page.wait_for_function(f"() => {H}.report.findings.startsWith('Chụp CT sọ não')")
        page.select_option("[data-testid=report-template]", page.evaluate(option, "CT ngực"))
        page.wait_for_function(f"() => {H}.report.findings.startsWith('Chụp CT ngực')")

        # Vietnamese text, typed: each keystroke is in localStorage at once.
        page.fill("[data-testid=report-findings]", FINDINGS[:-10])
        page.click("[data-testid=report-findings]")
        page.keyboard.press("Control+End")
        page.keyboard.type(FINDINGS[-10:])
        assert local_draft(page, user, ct["study"])["findings"] == FINDINGS
        page.fill("[data-testid=report-conclusion]", CONCLUSION)
        # ... and autosaved to the server as a draft (FHIR status registered).
        saved = wait_until_saved(page)
        draft = fhir.get(f"/DiagnosticReport/{saved['reportId']}").json()
        assert draft["status"] == "registered"
        assert findings_of(draft) == FINDINGS and draft["conclusion"] == CONCLUSION
        assert draft["basedOn"] == [{"reference": f"ServiceRequest/{ct['order']}"}]

        # Closed and opened again: the text is back.
        page.close()
        page = new_page(context, errors)
        open_report_panel(server, page, ct["study"])
        panel = state(page, "report")
        assert (panel["findings"], panel["conclusion"], panel["reportId"]) == (FINDINGS, CONCLUSION, saved["reportId"])
        assert panel["notice"] == ""

        # Typed while the server cannot be reached, then the tab lost as a crash loses it
        # (no pagehide or visibilitychange handlers run, so no keepalive flush): the local
        # copy is newer, restored (and said so), then saved. (A closed page flushes its
        # draft with a keepalive request, which could still reach the server once back
        # online: the draft had then landed, nothing was restored, and this test failed
        # now and then.)
        context.set_offline(True)
        page.fill("[data-testid=report-conclusion]", CONCLUSION + " Tạm")
        page.wait_for_function(f"() => {H}.report.notice !== '' && {H}.report.dirty")
        page.evaluate("""() => {
            const stop = (event) => event.stopImmediatePropagation();
            window.addEventListener('pagehide', stop, true);
            document.addEventListener('visibilitychange', stop, true);
        }""")
        page.close()
        context.set_offline(False)
        page = new_page(context, errors)
        open_report_panel(server, page, ct["study"])
        assert state(page, "report")["conclusion"] == CONCLUSION + " Tạm"
        assert "khôi phục" in text_of(page, "[data-testid=report-notice]")
        wait_until_saved(page)
        assert fhir.get(f"/DiagnosticReport/{saved['reportId']}").json()["conclusion"] == CONCLUSION + " Tạm"
        page.fill("[data-testid=report-conclusion]", CONCLUSION)
        wait_until_saved(page)

        # One click attaches the image shown in the active viewport.
        page.evaluate("document.activeElement.blur()")
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowDown")
        page.wait_for_function(f"() => {H}.imageNumber === 3")
        key_image = page.evaluate(f"{H}.viewports[0].sopInstanceUID")
        page.click("[data-testid=report-attach]")
        page.wait_for_function(f"(sop) => {H}.report.keyImages.includes(sop)", arg=key_image)
        page.wait_for_function("() => document.querySelectorAll('[data-testid=report-key-image]').length === 1")
        saved = wait_until_saved(page)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)  # docs/img has copies of these
        page.screenshot(path=str(ARTIFACTS / "reading-report-panel.png"))

        # Sign: final over FHIR, the PDF and SR in the study say exactly what was typed.
        sign_on_page(page)
        final = fhir.get(f"/DiagnosticReport/{saved['reportId']}").json()
        assert final["status"] == "final" and final["resultsInterpreter"][0]["display"] == user
        assert final["presentedForm"][0]["contentType"] == "application/pdf"
        check_signed_documents(server, token, ct["study"], FINDINGS, CONCLUSION, [key_image])
        assert text_of(page, "[data-testid=report-status]").startswith("Đã ký (chính thức)")
        assert page.evaluate("document.querySelector('[data-testid=report-findings]').readOnly")
        page.screenshot(path=str(ARTIFACTS / "reading-report-signed.png"))

        # Amend: a new version (amended), the signed one stays readable.
        page.click("[data-testid=report-amend]")
        page.wait_for_function(f"() => {H}.report.mode === 'amend'")
        page.fill("[data-testid=report-conclusion]", AMENDED)
        page.click("[data-testid=report-sign]")
        page.wait_for_function(f"() => {H}.report.status === 'amended' && {H}.report.mode === 'read'")
        panel = state(page, "report")
        assert panel["reportId"] != saved["reportId"]
        assert panel["versions"] == [
            {"id": panel["reportId"], "status": "amended", "amends": saved["reportId"]},
            {"id": saved["reportId"], "status": "final", "amends": None},
        ]
        reports = reports_of_study(fhir, ct["study"])
        assert [(r["id"], r["status"], r["conclusion"]) for r in reports] == [
            (panel["reportId"], "amended", AMENDED), (saved["reportId"], "final", CONCLUSION)]
        page.click(f"[data-testid=report-version][data-report-id='{saved['reportId']}']")
        page.wait_for_function(f"(id) => {H}.report.viewing === id", arg=saved["reportId"])
        assert state(page, "report")["conclusion"] == CONCLUSION
        page.click("[data-testid=report-back]")
        page.wait_for_function(f"() => {H}.report.viewing === null && {H}.report.conclusion === {AMENDED!r}")
        assert local_draft(page, user, ct["study"]) is None  # nothing left unsent
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report-amended.png"))
    finally:
        context.close()
        fhir.close()
    assert not errors, f"JavaScript errors in the viewer: {errors}"


def test_technologist_sees_the_report_read_only_and_cannot_sign(
    server: ServerProcess, browser: Browser, radiologist: tuple[str, str]
) -> None:
    ct = ct_study_with_order(server, slices=2)
    _, reader_token = radiologist
    with fhir_as(server, reader_token) as reader:
        made = reader.post("/DiagnosticReport", json={
            "resourceType": "DiagnosticReport", "status": "preliminary",
            "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
            "imagingStudy": [{"reference": f"ImagingStudy/{ct['study']}"}],
            "conclusion": CONCLUSION})
        assert made.status_code == 201, made.text
    _, token = account(server, "technologist")
    errors: list[str] = []
    context = context_of(browser, server, token)
    page = new_page(context, errors)
    try:
        open_report_panel(server, page, ct["study"])
        panel = state(page, "report")
        assert panel["canWrite"] is False and panel["conclusion"] == CONCLUSION
        assert panel["status"] == "preliminary"
        assert page.evaluate("['report-findings', 'report-conclusion'].every(id => document.querySelector(`[data-testid=${id}]`).readOnly)")
        assert page.evaluate("['report-sign', 'report-preliminary', 'report-amend'].every(id => document.querySelector(`[data-testid=${id}]`).hidden)")
        assert page.evaluate("document.querySelector('[data-testid=report-attach]').disabled")
        assert "Kỹ thuật viên" in text_of(page, "[data-testid=report-readonly]")
        # Typing changes nothing and sends nothing.
        page.click("[data-testid=report-conclusion]")
        page.keyboard.type("sửa")
        assert state(page, "report")["conclusion"] == CONCLUSION
        # The server refuses a technologist's signature whatever the panel shows.
        with fhir_as(server, token) as technologist:
            refused = technologist.put(f"/DiagnosticReport/{made.json()['id']}", json={
                **made.json(), "status": "final"})
            assert refused.status_code == 403, refused.text
    finally:
        context.close()
    assert not errors, f"JavaScript errors in the viewer: {errors}"


def test_a_second_tab_does_not_overwrite_the_first_tabs_save(
    server: ServerProcess, browser: Browser, radiologist: tuple[str, str]
) -> None:
    _, token = radiologist
    ct = ct_study_with_order(server, slices=2)
    errors: list[str] = []
    first_context = context_of(browser, server, token)
    second_context = context_of(browser, server, token)  # its own localStorage
    try:
        first = new_page(first_context, errors)
        open_report_panel(server, first, ct["study"])
        first.fill("[data-testid=report-conclusion]", "Bản thứ nhất.")
        saved = wait_until_saved(first)
        second = new_page(second_context, errors)
        open_report_panel(server, second, ct["study"])
        assert state(second, "report")["version"] == saved["version"]
        first.fill("[data-testid=report-conclusion]", "Bản thứ nhất, sửa lại.")
        wait_until_saved(first)
        second.fill("[data-testid=report-conclusion]", "Bản thứ hai.")
        second.wait_for_function(f"() => {H}.report.conflict")
        assert not second.evaluate("document.querySelector('[data-testid=report-conflict]').hidden")
        with fhir_as(server, token) as fhir:
            assert reports_of_study(fhir, ct["study"])[0]["conclusion"] == "Bản thứ nhất, sửa lại."
            # "Overwrite with mine": knowingly, on the server's newest version.
            second.click("[data-testid=report-overwrite]")
            wait_until_saved(second)
            assert reports_of_study(fhir, ct["study"])[0]["conclusion"] == "Bản thứ hai."
    finally:
        first_context.close()
        second_context.close()
    assert not errors, f"JavaScript errors in the viewer: {errors}"
