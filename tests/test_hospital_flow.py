"""Issue 12's hospital flow, end to end with real peers: one order placed by the EMR over
FHIR and another by the hospital information system over HL7 v2 (an MLLP socket) →
`findscu -W` (dcmtk) at the modality sees both → `storescu` sends images with those
accession numbers → a FHIR search by the patient's CCCD returns the ImagingStudy with its
series, instances, endpoints and `basedOn` → the change feed lists the new study → the
viewer link of the ImagingStudy's IID endpoint opens it in headless Chromium."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.servicerequest import ServiceRequest

from backends import Backends
from conftest import ServerProcess
from dimse_peers import storescu
from factories import make_instance
from test_hl7 import ack_code, msh, send
from test_orders import VN_CCCD, findscu_worklist, service_request
from viewer_support import api_login, session_cookie, state, wait_for_first_image

FHIR_JSON = {"Content-Type": "application/fhir+json"}
CLINICIAN, CLINICIAN_PASSWORD = "bs.lam-sang", "Lam-Sang-2026!"


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory, backends: Backends
             ) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("hospital"),
                         ["--no-load-samples", *backends.server_args()],
                         env={"MINIPACS_HL7_PORT": "0", "MINIPACS_HL7_HOST": "127.0.0.1",
                              "MINIPACS_HL7_ALLOWED_SENDERS": "HIS^BVCR"}).start()
    yield proc
    proc.stop()


def _cccd() -> str:
    return "079068" + str(uuid.uuid4().int)[:6]  # HCMC, a man born in 1968


def _send_images(server: ServerProcess, folder: Path, item: Any, count: int) -> None:
    """What the modality does: copy the worklist item into its images (IHE SWF) and
    send them with storescu."""
    paths = []
    series = f"2.25.{uuid.uuid4().int}"
    for number in range(1, count + 1):
        path = folder / f"{item.AccessionNumber}-{number}.dcm"
        path.write_bytes(make_instance(
            patient_id=item.PatientID, patient_name=str(item.PatientName),
            accession_number=item.AccessionNumber, study_uid=item.StudyInstanceUID,
            series_uid=series, IssuerOfPatientID=item.IssuerOfPatientID,
            InstanceNumber=number,
            OtherPatientIDsSequence=[{"PatientID": o.PatientID,
                                      "IssuerOfPatientID": o.IssuerOfPatientID}
                                     for o in item.get("OtherPatientIDsSequence", [])]))
        paths.append(path)
    result = storescu(server, *paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_orders_over_fhir_and_hl7_become_images_the_emr_finds_and_opens(
    hospital: ServerProcess, tmp_path: Path, browser: Any
) -> None:
    cccd, station = _cccd(), f"CT{uuid.uuid4().hex[:8].upper()}"
    fhir_accession = f"F{uuid.uuid4().hex[:12].upper()}"
    hl7_accession = f"H{uuid.uuid4().hex[:12].upper()}"
    hospital_id = f"BN{uuid.uuid4().hex[:8].upper()}"
    token = hospital.create_token("his-fhir", "emr")
    emr = httpx.Client(base_url=f"{hospital.http_url}/fhir", timeout=60,
                       headers={"Authorization": f"Bearer {token}", **FHIR_JSON})

    # 1. The EMR orders a CT over FHIR for the patient it knows by CCCD ...
    placed = emr.post("/ServiceRequest", json=service_request(
        fhir_accession, {"identifier": {"system": VN_CCCD, "value": cccd}}, station=station))
    assert placed.status_code == 201, placed.text
    fhir_order = ServiceRequest.model_validate(placed.json())

    # ... and the HIS another one over HL7 v2, for the same patient (hospital ID + CCCD).
    orm = "\r".join([
        msh("ORM^O01", f"ORM{uuid.uuid4().hex[:12]}"),
        f"PID|1||{hospital_id}^^^BVCR^MR~{cccd}^^^BCA^NI||Nguyễn^Văn An||19680412|M",
        "PV1|1|O||||||DR001^Trần^Văn Bình",
        f"ORC|NW|P{hl7_accession}|F{hl7_accession}||SC||^^^20261204100000",
        f"OBR|1|P{hl7_accession}|F{hl7_accession}|CT-HEAD^CT sọ não^99BVCR||||||||||||||"
        f"{hl7_accession}|RP{hl7_accession}|||||CT",
    ])
    with ThreadPoolExecutor(1) as thread:  # Playwright's loop runs in this thread
        assert ack_code(thread.submit(send, hospital, orm).result(timeout=60)) == "AA"

    # 2. The modality's worklist query sees both orders (the HL7 one for any station).
    by_accession = {d.AccessionNumber: d for d in findscu_worklist(hospital, tmp_path, station)}
    assert fhir_accession in by_accession
    (hl7_item,) = [d for d in findscu_worklist(hospital, tmp_path, "")
                   if d.AccessionNumber == hl7_accession]
    assert str(hl7_item.PatientName) == "Nguyễn^Văn An" and hl7_item.PatientID == hospital_id
    assert [o.PatientID for o in hl7_item.OtherPatientIDsSequence] == [cccd]

    # 3. The images arrive with those accession numbers.
    _send_images(hospital, tmp_path, by_accession[fhir_accession], 2)
    _send_images(hospital, tmp_path, hl7_item, 3)

    # 4. The EMR finds the patient's studies by CCCD, with what it needs to show them.
    found = emr.get("/ImagingStudy", params={
        "subject:Patient.identifier": f"{VN_CCCD}|{cccd}"})
    assert found.status_code == 200, found.text
    bundle = Bundle.model_validate(found.json())
    studies = [ImagingStudy.model_validate(e.resource.model_dump(mode="json"))
               for e in bundle.entry or []]
    by_study_accession = {
        next(i.value for i in s.identifier or [] if i.type is not None): s for s in studies}
    assert set(by_study_accession) == {fhir_accession, hl7_accession}, by_study_accession
    fhir_study = by_study_accession[fhir_accession]
    assert (fhir_study.numberOfSeries, fhir_study.numberOfInstances) == (1, 2)
    assert by_study_accession[hl7_accession].numberOfInstances == 3
    series = (fhir_study.series or [])[0]
    assert series.modality.code == "CT" and len(series.instance or []) == 2
    assert [r.reference for r in fhir_study.basedOn or []] == [
        f"ServiceRequest/{fhir_order.id}"]
    assert by_study_accession[hl7_accession].basedOn, "the HL7 order is the study's basis"
    refreshed = ServiceRequest.model_validate(emr.get(f"/ServiceRequest/{fhir_order.id}").json())
    assert refreshed.status == "completed"
    endpoint_refs = {e.reference for e in fhir_study.endpoint or []}
    endpoints = {ref: emr.get(f"/{ref}").json() for ref in endpoint_refs}
    kinds = {e["connectionType"]["code"]: e["address"] for e in endpoints.values()}
    assert kinds["dicom-wado-rs"].endswith("/dicom-web"), kinds
    viewer_link = kinds["ihe-iid"]

    # 5. The change feed tells a polling EMR about the new studies.
    feed = httpx.get(f"{hospital.http_url}/changes", params={"since": 0, "limit": 1000},
                     headers={"Authorization": f"Bearer {token}"}, timeout=60).json()
    created = {c["study_instance_uid"] for c in feed["changes"]
               if c["kind"] == "created" and c["level"] == "study"}
    study_uid = fhir_study.identifier[0].value.removeprefix("urn:oid:")
    assert study_uid in created

    # 6. The clinician opens the EMR's viewer link and sees the study.
    hospital.add_user(CLINICIAN, "clinician", CLINICIAN_PASSWORD)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_cookies([session_cookie(hospital, api_login(hospital, CLINICIAN,
                                                            CLINICIAN_PASSWORD))])
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        page.goto(f"{viewer_link}?requestType=STUDY&studyUID={study_uid}")
        wait_for_first_image(page)
        assert state(page, "studyInstanceUID") == study_uid
    finally:
        context.close()
