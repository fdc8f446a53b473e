# ruff: noqa: E501  -- JavaScript snippets for the page are kept on one line each
"""Issue 14's "done when", end to end with real peers: a radiologist (made with the CLI)
opens a chest CT ordered over FHIR in headless Chromium, opens the patient's prior beside
it, writes the report in the panel and signs it → the hospital's FHIR server (the real
FHIR peer, fed by the FHIR push) receives the final DiagnosticReport with the typed
conclusion, and the PDF its presentedForm names is fetched back; the HIS's MLLP listener
receives the ORU^R01 with the same text → a clinician opening the
EMR's link (IHE Invoke Image Display) sees that signed report first, then opens the
images. The screenshots it leaves in test-artifacts/viewer/ are docs/reading.md's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser
from pydicom.uid import generate_uid

from backends import Backends
from conftest import ServerProcess
from dicomweb_peers import store
from factories import make_instance
from fhir_peer import FhirPeer
from report_support import (
    ct_study_with_order,
    open_report_panel,
    phantom_ct_slice,
    sign_on_page,
    unique,
    wait_until_saved,
)
from test_fhir_push import STABLE_SECONDS, eventually, fhir_peer  # noqa: F401
from test_oru_sender import MllpPeer
from test_viewer_reading import open_prior
from viewer_support import ARTIFACTS, H, api_login, session_cookie, state, wait_for_first_image

pytestmark = pytest.mark.door_only  # a browser test: the embedded pass runs it

FINDINGS = ("So với phim chụp ngày 05/01/2023: nốt mờ tròn thùy dưới phổi phải không thay đổi, đường kính khoảng 10 mm.\n"
            "Nhu mô phổi còn lại sáng đều. Trung thất không thấy hạch to.")
CONCLUSION = "Nốt đơn độc thùy dưới phổi phải 10 mm, ổn định so với phim trước. Theo dõi sau 12 tháng."
PASSWORD = "Doc-Ket-Qua-2026!"


@pytest.fixture
def his() -> Iterator[MllpPeer]:
    """The hospital information system's MLLP listener, which takes ORU^R01 reports."""
    listener = MllpPeer()
    yield listener
    listener.stop()


@pytest.fixture
def hospital(tmp_path: Path, backends: Backends, fhir_peer: FhirPeer,  # noqa: F811
             his: MllpPeer) -> Iterator[ServerProcess]:
    """minipacs pushing to the EMR's FHIR server and sending reports to the HIS."""
    (tmp_path / "pacs").mkdir()
    server = ServerProcess(tmp_path / "pacs", [
        "--no-load-samples", *backends.server_args(),
        "--fhir-push-url", fhir_peer.base_url, "--fhir-push-token", fhir_peer.token,
        "--fhir-push-stable-seconds", str(STABLE_SECONDS), "--fhir-push-interval-seconds", "0.2",
        "--public-url", "https://pacs.example.org",
    ], env={"MINIPACS_HL7_REPORT_PEER": f"127.0.0.1:{his.port}",
            "MINIPACS_HL7_REPORT_INTERVAL_SECONDS": "0.2"}).start()
    yield server
    server.stop()


def _prior_ct(server: ServerProcess, patient: str) -> str:
    """The same patient's chest CT of 2023 (the same phantom slices); its Study UID."""
    study, series = generate_uid(), generate_uid()
    store(server, *(
        make_instance(modality="CT", patient_id=patient, patient_name="Phạm^Thị Hương",
                      study_uid=study, series_uid=series, study_date="20230105",
                      accession_number=unique("AC"), rows=256, columns=256, InstanceNumber=i + 1,
                      BodyPartExamined="CHEST", PixelData=phantom_ct_slice(16 + i),
                      PixelSpacing=[0.7, 0.7], SliceThickness=5.0,
                      ImagePositionPatient=[-89.6, -89.6, -5.0 * (16 + i)], PixelPaddingValue=-2000,
                      WindowCenter=-600, WindowWidth=1500, StudyDescription="CT ngực",
                      SeriesDescription="Phổi 5 mm")
        for i in range(5)))
    return study


def _signed_in(browser: Browser, server: ServerProcess, role: str) -> tuple[str, object]:
    name = unique(f"{role[:4]}.").lower()
    server.add_user(name, role, PASSWORD)
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.add_cookies([session_cookie(server, api_login(server, name, PASSWORD))])  # type: ignore[list-item]
    return name, context


def test_radiologist_reads_with_the_prior_signs_and_the_emr_and_the_clinician_get_the_report(
    hospital: ServerProcess, fhir_peer: FhirPeer, his: MllpPeer, browser: Browser,  # noqa: F811
) -> None:
    server = hospital
    ct = ct_study_with_order(server, slices=5)
    prior = _prior_ct(server, ct["patient"])
    errors: list[str] = []

    # 1. The radiologist: the CT, its prior beside it, the report written and signed.
    radiologist, context = _signed_in(browser, server, "radiologist")
    page = context.new_page()  # type: ignore[attr-defined]
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(30_000)
    open_report_panel(server, page, ct["study"])
    open_prior(page, prior)
    assert state(page, "priors")["studies"] == [prior]
    page.fill("[data-testid=report-findings]", FINDINGS)
    page.fill("[data-testid=report-conclusion]", CONCLUSION)
    saved = wait_until_saved(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "reading-flow-radiologist.png"))
    sign_on_page(page)
    context.close()  # type: ignore[attr-defined]

    # 2. The EMR's FHIR server has the signed report, and the PDF it names can be fetched.
    pushed = eventually(lambda: fhir_peer.search(
        "DiagnosticReport", identifier=f"urn:minipacs:report|{saved['reportId']}"), "report pushed")
    assert pushed[0]["status"] == "final" and pushed[0]["conclusion"] == CONCLUSION
    assert pushed[0]["resultsInterpreter"][0]["display"] == radiologist
    pdf_url = urlsplit(pushed[0]["presentedForm"][0]["url"])
    assert pdf_url.netloc == "pacs.example.org"  # MINIPACS_PUBLIC_URL
    pdf = server.http.get(pdf_url.path, headers={"Accept": "application/pdf"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-"), pdf.text[:200]

    # ... and the HIS has the ORU^R01: status F, the conclusion as typed.
    eventually(lambda: his.messages, "ORU^R01 delivered")
    oru = his.messages[0]
    assert str(oru.segment("OBR")[25]) == "F"
    texts = [str(oru.unescape(str(obx[5]))) for obx in oru.segments("OBX")]
    assert CONCLUSION in texts, texts

    # 3. The clinician follows the EMR's link: the signed report first, then the images.
    _, context = _signed_in(browser, server, "clinician")
    page = context.new_page()  # type: ignore[attr-defined]
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(30_000)
    try:
        page.goto(f"{server.http_url}/viewer/?requestType=STUDY&studyUID={ct['study']}")
        page.wait_for_function(f"() => {H}.page === 'report' && {H}.reportView.state === 'shown'")
        shown = state(page, "reportView")
        assert shown["conclusion"] == CONCLUSION and shown["status"] == "final"
        page.screenshot(path=str(ARTIFACTS / "reading-flow-clinician.png"))
        page.click("[data-testid=rv-open-study]")
        wait_for_first_image(page)
        assert state(page, "studyInstanceUID") == ct["study"] and state(page, "page") == "viewer"
    finally:
        context.close()  # type: ignore[attr-defined]
    assert not errors, f"JavaScript errors in the viewer: {errors}"
