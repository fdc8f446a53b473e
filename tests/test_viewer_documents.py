# ruff: noqa: E501  -- JavaScript snippets for the page are kept on one line each
"""The clinician's view and what other systems send (issue #14), in Chromium.

A CT study gets a report signed over FHIR DiagnosticReport by a radiologist made with the
CLI (the server's report service stores its Encapsulated PDF and Basic Text SR in the
study). A clinician opening the EMR link sees that report first (Vietnamese conclusion as
signed, key image, status, signer) and "Open full study" opens the images; a radiologist
opening the same link lands in the images. The SR shows as text, the PDF in the page
(a blob: holding %PDF), an MPEG-4 AVC/H.264 video object (an MP4 encoded here with
PyAV's libx264) plays in a <video>; the server sends that video's stream over WADO-RS
bulk data as video/mp4.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, Page
from pydicom.uid import MPEG4HP41

from conftest import ServerProcess
from dicomweb_peers import multipart_parts, store
from factories import make_instance
from firefox_bidi import Firefox, firefox_executable
from minipacs.fhir.diagnostic_report import FINDINGS_URL
from viewer_support import ARTIFACTS, H, sign_in_on_page, state, wait_for_first_image

FINDINGS = "Nhu mô phổi hai bên sáng đều. Không thấy tổn thương khu trú."
CONCLUSION = "Không thấy bất thường trên phim CT ngực — chẩn đoán: bình thường."
AMENDED = "Đính chính: nốt mờ 4 mm thùy trên phổi phải, theo dõi sau 12 tháng."
VIDEO_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
PASSWORD = "Doc-Ket-Qua-2026!"


def _unique(prefix: str) -> str:
    return (prefix + uuid.uuid4().hex)[:16]


def tiny_mp4(frames: int = 12, size: int = 64, fps: int = 10) -> bytes:
    """An H.264 (High profile, yuv420p) MP4 of a moving bar, made with PyAV's libx264."""
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        for i in range(frames):
            image = np.zeros((size, size, 3), dtype=np.uint8)
            image[:, (i * 5) % size:(i * 5) % size + 8] = (255, 200, 40)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def video_instance(study_uid: str, patient_id: str, mp4: bytes) -> bytes:
    """A Video Endoscopic Image (PS3.3 A.32.7) holding the MP4 in its Pixel Data, stored
    in MPEG-4 AVC/H.264 High Profile / Level 4.1 (PS3.5 §8.2.7: an MP4 container)."""
    return make_instance(
        modality="ES", sop_class=VIDEO_ENDOSCOPIC, transfer_syntax=MPEG4HP41,
        study_uid=study_uid, patient_id=patient_id, patient_name="Lê^Thị Hoa",
        rows=64, columns=64, encapsulated_frames=[mp4], SeriesNumber=3,
        SeriesDescription="Nội soi", SamplesPerPixel=3,
        PhotometricInterpretation="YBR_PARTIAL_420", PlanarConfiguration=0,
        BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0,
        NumberOfFrames=12, FrameTime="100", CineRate=10,
        FrameIncrementPointer=0x00181063,
    )


@pytest.fixture(scope="module")
def users(server: ServerProcess) -> dict[str, str]:
    names = {"radiologist": _unique("bs.cdha."), "clinician": _unique("bs.ls.")}
    for role, name in names.items():
        server.add_user(name, role, PASSWORD)
    return names


@pytest.fixture(scope="module")
def reported_study(server: ServerProcess, users: dict[str, str]) -> dict[str, Any]:
    """A CT study (two images, the second a key image) with a report signed over FHIR,
    and an endoscopy video in the same study."""
    patient_id = _unique("BN")
    study_uid = f"2.25.{uuid.uuid4().int}"
    series_uid = f"2.25.{uuid.uuid4().int}"
    images = [make_instance(modality="CT", study_uid=study_uid, series_uid=series_uid,
                            patient_id=patient_id, patient_name="Lê^Thị Hoa",
                            accession_number=_unique("ACC"), InstanceNumber=n,
                            StudyDescription="CT ngực", SeriesDescription="Phổi")
              for n in (1, 2)]
    stored = store(server, *images)
    key_sop = stored[1].sop
    mp4 = tiny_mp4()
    video = store(server, video_instance(study_uid, patient_id, mp4))[0]
    body = {
        "resourceType": "DiagnosticReport", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
        "imagingStudy": [{"reference": f"ImagingStudy/{study_uid}"}],
        "conclusion": CONCLUSION,
        "extension": [{"url": FINDINGS_URL, "valueString": FINDINGS}],
        "media": [{"link": {"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{key_sop}"}}}],
    }
    signed = httpx.post(f"{server.http_url}/fhir/DiagnosticReport", json=body, timeout=60,
                        auth=(users["radiologist"], PASSWORD),
                        headers={"Accept": "application/fhir+json"})
    assert signed.status_code == 201, signed.text
    assert signed.json()["status"] == "final"
    return {"study": study_uid, "key_sop": key_sop, "video": video, "mp4": mp4,
            "report": signed.json()}


@pytest.fixture
def page_as(browser: Browser, server: ServerProcess, users: dict[str, str],
            request: pytest.FixtureRequest) -> Iterator[Any]:
    """page_as(role, url): a fresh context signed in through the viewer's form as that
    role's user, at `url`. The last screen goes to test-artifacts/viewer/."""
    contexts = []
    pages: list[Page] = []

    def open_as(role: str, url: str) -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.errors = errors  # type: ignore[attr-defined]
        page.goto(url)
        sign_in_on_page(page, users[role], PASSWORD)
        page.wait_for_function("() => document.getElementById('login-view').hidden")
        pages.append(page)
        return page

    yield open_as
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for index, page in enumerate(pages):
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-{index}.png"))
    for context in contexts:
        context.close()
    for page in pages:
        assert not page.errors, f"JavaScript errors in the viewer: {page.errors}"  # type: ignore[attr-defined]


def wait_for_report(page: Any) -> dict[str, Any]:
    page.wait_for_function(f"() => {H}.page === 'report' && {H}.reportView.state === 'shown' && {H}.reportView.keyImages.length > 0 && {H}.reportView.keyImages.every(k => k.loaded)")
    return dict(state(page, "reportView"))


def clinician_reads_the_report_first(server: ServerProcess, page: Any, study: dict[str, Any]) -> None:
    """The same steps in Chromium and Firefox, once the clinician's page is at the link."""
    report = wait_for_report(page)
    assert report["conclusion"] == CONCLUSION
    assert report["status"] == "final"
    assert [k["sop"] for k in report["keyImages"]] == [study["key_sop"]]
    status = page.evaluate("() => document.querySelector('[data-testid=rv-status]').textContent")
    assert study["report"]["resultsInterpreter"][0]["display"] in status
    findings = page.evaluate("() => document.querySelector('[data-testid=rv-findings]').textContent")
    assert findings == FINDINGS
    page.click("[data-testid=rv-open-study]")
    wait_for_first_image(page)
    assert state(page, "studyInstanceUID") == study["study"]
    assert "view=images" in page.evaluate("() => location.search")


def test_clinician_from_the_emr_link_sees_the_signed_report_then_opens_the_study(
    server: ServerProcess, reported_study: dict[str, Any], page_as: Any
) -> None:
    page = page_as("clinician", f"{server.http_url}/viewer/?requestType=STUDY&studyUID={reported_study['study']}")
    wait_for_report(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "reading-clinician-report.png"))  # docs/reading.md
    clinician_reads_the_report_first(server, page, reported_study)
    # Back returns to the report, as the EMR opened it.
    page.go_back()
    page.wait_for_function(f"() => {H}.page === 'report' && {H}.reportView.state === 'shown'")
    # The printable PDF, in the page.
    page.click("[data-testid=rv-pdf]")
    page.wait_for_function(f"() => {H}.reportView.pdfUrl !== null")
    shown = state(page, "reportView")
    assert shown["pdfUrl"].startswith("blob:") and shown["pdfHead"] == "%PDF-"


def test_amended_report_is_marked_and_the_earlier_version_stays_readable(
    server: ServerProcess, users: dict[str, str], page_as: Any
) -> None:
    patient_id = _unique("BN")
    study = store(server, make_instance(modality="CT", patient_id=patient_id,
                                        patient_name="Phạm^Văn Đức"))[0]
    fhir = httpx.Client(base_url=f"{server.http_url}/fhir", timeout=60,
                        auth=(users["radiologist"], PASSWORD),
                        headers={"Accept": "application/fhir+json"})
    # No key images in the report: the study's newest Key Object Selection gives them.
    marked = httpx.post(f"{server.dicomweb_url}/studies/{study.study}/key-images",
                        json={"instances": [study.sop]}, timeout=60,
                        auth=(users["radiologist"], PASSWORD))
    assert marked.status_code in (200, 201), marked.text
    with fhir:
        body = {"resourceType": "DiagnosticReport", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
                "imagingStudy": [{"reference": f"ImagingStudy/{study.study}"}],
                "conclusion": CONCLUSION}
        first = fhir.post("/DiagnosticReport", json=body)
        assert first.status_code == 201, first.text
        amended = fhir.put(f"/DiagnosticReport/{first.json()['id']}",
                           json={**body, "status": "amended", "conclusion": AMENDED})
        assert amended.status_code == 201, amended.text
    page = page_as("clinician", f"{server.http_url}/viewer/?StudyInstanceUID={study.study}")
    shown = wait_for_report(page)
    assert (shown["id"], shown["status"], shown["conclusion"]) == (amended.json()["id"], "amended", AMENDED)
    assert [k["sop"] for k in shown["keyImages"]] == [study.sop]
    assert page.inner_text("[data-testid=rv-status] strong") == "ĐÃ ĐÍNH CHÍNH – thay thế kết quả trước"
    page.click("[data-testid=rv-earlier]")
    page.wait_for_function(f"(id) => {H}.reportView.id === id", arg=first.json()["id"])
    earlier = state(page, "reportView")
    assert (earlier["status"], earlier["conclusion"]) == ("final", CONCLUSION)
    # The earlier version says it was amended and leads back to the current one.
    page.click("[data-testid=rv-current]")
    page.wait_for_function(f"(id) => {H}.reportView.id === id", arg=amended.json()["id"])
    # In English too, the same report.
    page.click("[data-testid=language-switch]")
    page.wait_for_function("() => document.querySelector('.rv-title')?.textContent === 'IMAGING REPORT'")
    assert page.inner_text("[data-testid=rv-status] strong") == "AMENDED – replaces the earlier report"
    assert state(page, "reportView")["conclusion"] == AMENDED


def test_radiologist_opening_the_same_link_lands_in_the_images(
    server: ServerProcess, reported_study: dict[str, Any], page_as: Any
) -> None:
    page = page_as("radiologist", f"{server.http_url}/viewer/?StudyInstanceUID={reported_study['study']}")
    wait_for_first_image(page)
    assert state(page, "reportView")["state"] == "idle"


def test_clinician_link_to_a_study_without_report_says_so_and_shows_the_images(
    server: ServerProcess, page_as: Any
) -> None:
    study = store(server, make_instance(modality="CT", patient_id=_unique("BN")))[0]
    page = page_as("clinician", f"{server.http_url}/viewer/?StudyInstanceUID={study.study}")
    wait_for_first_image(page)
    assert state(page, "reportView")["state"] == "none"
    page.wait_for_function("() => !document.querySelector('[data-testid=rv-notice]').hidden")
    assert page.inner_text("[data-testid=rv-notice]") == "Chưa có kết quả đọc"


def open_series_of_kind(page: Any, kind: str) -> None:
    page.wait_for_function("(kind) => document.querySelector(`[data-document-kind=${kind}]`)", arg=kind)
    page.click(f"[data-document-kind={kind}]")
    page.wait_for_function(f"(kind) => {H}.document.shown && {H}.document.kind === kind", arg=kind)


def test_sr_shows_as_text_and_pdf_in_the_page(
    server: ServerProcess, reported_study: dict[str, Any], page_as: Any
) -> None:
    page = page_as("radiologist", f"{server.http_url}/viewer/?StudyInstanceUID={reported_study['study']}")
    wait_for_first_image(page)
    open_series_of_kind(page, "sr")
    page.wait_for_function(f"() => {H}.document.text.includes('Impression')")
    text = state(page, "document")["text"]
    assert f"Finding: {FINDINGS}" in text
    assert f"Impression: {CONCLUSION}" in text
    assert "VERIFIED" in text
    assert reported_study["key_sop"] in text  # the IMAGE item names the key image
    page.screenshot(path=str(ARTIFACTS / "reading-sr-as-text.png"))  # docs/reading.md
    # The IMAGE item's button shows that image in the viewport.
    page.click(".sr-open-image")
    page.wait_for_function(f"(sop) => !{H}.document.shown && {H}.activeViewport.sopInstanceUID === sop && {H}.activeViewport.currentImageKind === 'pixels'", arg=reported_study["key_sop"])
    open_series_of_kind(page, "sr")
    open_series_of_kind(page, "pdf")
    page.wait_for_function(f"() => {H}.document.pdfUrl !== null")
    shown = state(page, "document")
    assert shown["pdfUrl"].startswith("blob:") and shown["pdfHead"] == "%PDF-"
    assert page.inner_text("[data-document-kind=pdf] .series-description") == "Tài liệu PDF"
    page.click("[data-testid=language-switch]")
    page.wait_for_function("() => document.querySelector('[data-document-kind=pdf] .series-description').textContent === 'PDF document'")
    # Back to images: the viewports show again.
    page.click("[data-testid=series-thumbnail]:not([data-document-kind])")
    page.wait_for_function(f"() => !{H}.document.shown && {H}.activeViewport.currentImageKind === 'pixels'")


def test_video_object_plays_in_a_video_element(
    server: ServerProcess, reported_study: dict[str, Any], page_as: Any
) -> None:
    video = reported_study["video"]
    # Over WADO-RS bulk data: the stored MP4, byte for byte, as video/mp4.
    response = httpx.get(f"{server.dicomweb_url}/studies/{video.study}/series/{video.series}/instances/{video.sop}/bulkdata/7FE00010",
                         headers={"Accept": "video/mp4", **server.auth}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    assert response.content == reported_study["mp4"]
    refused = httpx.get(f"{server.dicomweb_url}/studies/{video.study}/series/{video.series}/instances/{video.sop}/bulkdata/7FE00010",
                        headers={"Accept": "image/jpeg", **server.auth}, timeout=60)
    assert refused.status_code == 406 and "video/mp4" in refused.text
    base = f"{server.dicomweb_url}/studies/{video.study}/series/{video.series}/instances/{video.sop}"
    parts = multipart_parts(httpx.get(f"{base}/bulkdata/7FE00010", timeout=60, headers={
        "Accept": 'multipart/related; type="video/mp4"', **server.auth}))
    assert [(h["content-type"], body) for h, body in parts] == [
        (f"video/mp4; transfer-syntax={MPEG4HP41}", reported_study["mp4"])]
    # minipacs decodes no video: frames and rendered images of it are refused, not faked.
    for path in ("frames/1", "rendered"):
        answer = httpx.get(f"{base}/{path}", headers=server.auth, timeout=60)
        assert answer.status_code in (404, 406), (path, answer.status_code, answer.text)
    page = page_as("radiologist", f"{server.http_url}/viewer/?StudyInstanceUID={video.study}")
    wait_for_first_image(page)
    open_series_of_kind(page, "video")
    page.wait_for_function(f"() => {H}.document.video && ({H}.document.video.readyState >= 2 || {H}.document.video.error)")
    played = state(page, "document")["video"]
    assert played["error"] == 0, played
    assert played["readyState"] >= 2 and played["duration"] > 0
    page.screenshot(path=str(ARTIFACTS / "reading-video.png"))  # docs/reading.md


@pytest.fixture(scope="module")
def firefox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Firefox]:
    executable = firefox_executable()
    if executable is None:
        pytest.fail("firefox-esr is not installed; run ./test.sh, which installs it (apt-get)")
    browser = Firefox(executable, tmp_path_factory.mktemp("firefox"))
    yield browser
    browser.close()


def test_clinician_sees_the_report_first_in_firefox(
    server: ServerProcess, reported_study: dict[str, Any], users: dict[str, str], firefox: Firefox
) -> None:
    tab = firefox.new_page(1280, 900)
    try:
        tab.goto(f"{server.http_url}/viewer/?StudyInstanceUID={reported_study['study']}")
        sign_in_on_page(tab, users["clinician"], PASSWORD)
        clinician_reads_the_report_first(server, tab, reported_study)
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(str(ARTIFACTS / "firefox-clinician-report.png"))
        errors = tab.javascript_errors()
        tab.close()
    assert not errors, f"JavaScript errors in the viewer (Firefox): {errors}"
