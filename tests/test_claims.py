"""Insurance claims without film (issue #14) on a real server: a radiologist made with the
CLI with a practising-certificate code signs a report over FHIR DiagnosticReport on a CT
ordered with `minipacs worklist add`; the HIS then reads the claim rows (QĐ 130/QĐ-BYT
XML3/XML4) as JSON and as the XML fragments, by study and by accession number."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from backends import Backends
from conftest import ServerProcess
from dicomweb_peers import store
from factories import make_instance
from minipacs.fhir.diagnostic_report import FINDINGS_URL

# The decision's element names (QĐ 130/QĐ-BYT, Bảng 4), in its order.
XML4_NAMES = ["MA_LK", "STT", "MA_DICH_VU", "MA_CHI_SO", "TEN_CHI_SO", "GIA_TRI",
              "DON_VI_DO", "MO_TA", "KET_LUAN", "NGAY_KQ", "MA_BS_DOC_KQ", "DU_PHONG"]
FINDINGS = "Nốt mờ < 5 mm & không vôi hoá ở thùy trên phổi phải.\nTrung thất cân đối."
CONCLUSION = "Nốt phổi nhỏ thùy trên phải — theo dõi CT sau 12 tháng (\"Fleischner\")."
CERTIFICATE = "003539/HCM-CCHN"
SERVICE_CODE = "18.0072.0028"
PASSWORD = "Doc-ket-qua-2024"
VN = ZoneInfo("Asia/Ho_Chi_Minh")


def _unique(prefix: str) -> str:
    return (prefix + uuid.uuid4().hex.upper())[:16]


def _now_local() -> str:
    return datetime.now(UTC).astimezone(VN).strftime("%Y%m%d%H%M")


@pytest.fixture(scope="module")
def claims_server(tmp_path_factory: pytest.TempPathFactory, backends: Backends
                  ) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("claims"), [
        "--no-load-samples", "--claim-machine-codes", "CT01=KSK.1.79071.123456",
        *backends.server_args()])
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def signed(claims_server: ServerProcess) -> dict[str, Any]:
    """A CT ordered, stored and reported: what the claim rows must say."""
    server = claims_server
    name = _unique("bs").lower()
    added = server.cli("user", "add", name, "--role", "radiologist", "--password-stdin",
                       "--practising-certificate", CERTIFICATE, stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stdout + added.stderr
    assert CERTIFICATE in added.stdout
    accession, study_uid = _unique("ACC"), "1.2.826.0.1.3680043.8.498." + str(
        uuid.uuid4().int)[:20]
    before = _now_local()
    ordered = server.cli("worklist", "add", _unique("BN"), "--patient-name", "Lê^Thị Hoa",
                         "--accession", accession, "--study-uid", study_uid,
                         "--modality", "CT", "--station-ae", "CT_SCANNER",
                         "--procedure-code", SERVICE_CODE, "BYT", "Chụp CT ngực không tiêm")
    assert ordered.returncode == 0, ordered.stdout + ordered.stderr
    after = _now_local()
    stored = store(server, make_instance(
        study_uid=study_uid, accession_number=accession, study_date="20240315",
        StudyTime="093015", StationName="CT01"))[0]
    body = {"resourceType": "DiagnosticReport", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
            "imagingStudy": [{"reference": f"ImagingStudy/{study_uid}"}],
            "conclusion": CONCLUSION,
            "extension": [{"url": FINDINGS_URL, "valueString": FINDINGS}]}
    with httpx.Client(base_url=f"{server.http_url}/fhir", auth=(name, PASSWORD),
                      timeout=120, headers={"Accept": "application/fhir+json"}) as fhir:
        created = fhir.post("/DiagnosticReport", json=body)
    assert created.status_code == 201, created.text
    report = DiagnosticReport.model_validate_json(created.text)
    assert report.issued is not None
    return {"study": stored.study, "accession": accession, "signer": name,
            "issued": report.issued.astimezone(VN).strftime("%Y%m%d%H%M"),
            "ordered_between": (before, after)}


def test_claim_json_carries_the_signed_report_the_times_and_the_certificate(
    claims_server: ServerProcess, signed: dict[str, Any]
) -> None:
    response = claims_server.http.get(f"/claims/studies/{signed['study']}")
    assert response.status_code == 200, response.text
    claim = response.json()
    xml4, xml3 = claim["xml4"], claim["xml3"]
    assert list(xml4) == XML4_NAMES
    assert xml4["MO_TA"] == FINDINGS and xml4["KET_LUAN"] == CONCLUSION
    assert xml4["NGAY_KQ"] == signed["issued"] == xml3["NGAY_KQ"]
    assert xml4["MA_BS_DOC_KQ"] == CERTIFICATE
    assert xml4["MA_DICH_VU"] == xml3["MA_DICH_VU"] == SERVICE_CODE
    assert xml3["TEN_DICH_VU"] == "Chụp CT ngực không tiêm"
    assert xml3["NGAY_TH_YL"] == "202403150930"  # StudyDate + StudyTime, local
    low, high = signed["ordered_between"]
    assert low <= xml3["NGAY_YL"] <= high  # when the order was placed, local time
    assert xml3["MA_MAY"] == "KSK.1.79071.123456"  # StationName CT01, from the setting
    assert claim["AccessionNumber"] == signed["accession"]
    assert any("MA_LK" in note for note in claim["notes"])


def test_xml4_fragment_parses_and_keeps_the_vietnamese_text_exactly(
    claims_server: ServerProcess, signed: dict[str, Any]
) -> None:
    response = claims_server.http.get(f"/claims/studies/{signed['study']}",
                                      params={"format": "xml4", "ma_lk": "HS2024-0001"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    assert b"&lt; 5 mm &amp;" in response.content  # escaped, not dropped
    root = ET.fromstring(response.content)
    assert root.tag == "CHITIEU_CHITIET_DICHVUCANLAMSANG"
    (row,) = root.findall("./DSACH_CHI_TIET_CLS/CHI_TIET_CLS")
    assert [child.tag for child in row] == XML4_NAMES
    assert row.findtext("MO_TA") == FINDINGS and row.findtext("KET_LUAN") == CONCLUSION
    assert row.findtext("NGAY_KQ") == signed["issued"]
    assert row.findtext("MA_BS_DOC_KQ") == CERTIFICATE
    assert row.findtext("MA_LK") == "HS2024-0001" and row.findtext("STT") == "1"
    # Accept: application/xml without a format asks for the same XML4 fragment.
    by_accept = claims_server.http.get(f"/claims/studies/{signed['study']}",
                                       headers={"Accept": "application/xml"})
    assert ET.fromstring(by_accept.content).tag == "CHITIEU_CHITIET_DICHVUCANLAMSANG"


def test_xml3_fragment_and_the_accession_route(
    claims_server: ServerProcess, signed: dict[str, Any]
) -> None:
    xml3 = claims_server.http.get("/claims", params={
        "AccessionNumber": signed["accession"], "format": "xml3"})
    assert xml3.status_code == 200, xml3.text
    root = ET.fromstring(xml3.content)
    (row,) = root.findall("./DSACH_CHI_TIET_DVKT/CHI_TIET_DVKT")
    assert root.tag == "CHITIEU_CHITIET_DVKT_VTYT"
    assert row.findtext("NGAY_TH_YL") == "202403150930"
    assert row.findtext("MA_MAY") == "KSK.1.79071.123456"
    assert row.findtext("NGAY_KQ") == signed["issued"]
    listed = claims_server.http.get("/claims", params={"AccessionNumber": signed["accession"]})
    assert [s["StudyInstanceUID"] for s in listed.json()["studies"]] == [signed["study"]]
    unknown = claims_server.http.get("/claims", params={"AccessionNumber": "NO-SUCH-ACC"})
    assert unknown.status_code == 404, unknown.text


def test_a_study_without_a_signed_report_is_409_and_an_unknown_one_404(
    claims_server: ServerProcess,
) -> None:
    unsigned = store(claims_server, make_instance(accession_number=_unique("ACC")))[0]
    response = claims_server.http.get(f"/claims/studies/{unsigned.study}")
    assert response.status_code == 409, response.text
    assert "no signed report yet" in response.text and unsigned.study in response.text
    missing = claims_server.http.get("/claims/studies/1.2.826.0.1.3680043.8.498.99")
    assert missing.status_code == 404, missing.text


def test_a_role_without_view_is_refused_and_each_read_is_audited(
    claims_server: ServerProcess, signed: dict[str, Any]
) -> None:
    research = claims_server.create_token(_unique("research").lower(), "research")
    refused = httpx.get(f"{claims_server.http_url}/claims/studies/{signed['study']}",
                        headers={"Authorization": f"Bearer {research}"}, timeout=60)
    assert refused.status_code == 403, refused.text
    his = claims_server.create_token(_unique("his").lower(), "emr")
    read = httpx.get(f"{claims_server.http_url}/claims/studies/{signed['study']}",
                     headers={"Authorization": f"Bearer {his}"}, timeout=60)
    assert read.status_code == 200, read.text
    events = claims_server.http.get("/admin/audit", params={"action": "claim-read"}).json()
    mine = [e for e in events if e["study_instance_uid"] == signed["study"]
            and e["role"] == "emr"]
    assert len(mine) == 1 and mine[0]["outcome"] == "success"
    assert "report" in mine[0]["detail"]


def test_the_certificate_is_set_and_cleared_by_cli_and_admin_api_and_audited(
    claims_server: ServerProcess,
) -> None:
    name = _unique("bs").lower()
    claims_server.add_user(name, "radiologist", PASSWORD)
    done = claims_server.cli("user", "set-certificate", name, "0021030/HCM-CCHN")
    assert done.returncode == 0 and "0021030/HCM-CCHN" in done.stdout, done.stderr
    bad = claims_server.cli("user", "set-certificate", name, "A;B")
    assert bad.returncode != 0 and "';'" in bad.stdout + bad.stderr
    put = claims_server.http.put(f"/admin/users/{name}/practising-certificate",
                                 json={"practising_certificate": ""})
    assert put.status_code == 200 and put.json()["practising_certificate"] == "", put.text
    users = {u["username"]: u for u in claims_server.http.get("/admin/users").json()}
    assert users[name]["practising_certificate"] == ""
    events = claims_server.http.get("/admin/audit", params={"action": "user-certificate"}
                                    ).json()
    details = [e["detail"] for e in events if name in e["detail"]]
    assert any("(none) -> 0021030/HCM-CCHN" in d for d in details)
    assert any("0021030/HCM-CCHN -> (none)" in d for d in details)


def test_docs_name_the_claim_elements_and_the_decision() -> None:
    text = (Path(__file__).parents[1] / "docs" / "emr-integration.md").read_text()
    assert "Insurance claims (XML3/XML4)" in text and "130/QĐ-BYT" in text
    for name in ("MO_TA", "KET_LUAN", "NGAY_KQ", "MA_BS_DOC_KQ", "NGAY_YL", "MA_MAY"):
        assert name in text
