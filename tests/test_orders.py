"""Orders over FHIR (issue 12): a ServiceRequest is a Modality Worklist item; arriving
images complete it. Real peers: findscu -W and storescu (dcmtk), httpx on /fhir; every
resource the server returns is parsed with the fhir.resources R4B models."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.servicerequest import ServiceRequest
from pydicom import Dataset, dcmread

from conftest import ServerProcess
from dicomweb_peers import store
from dimse_peers import run_dcmtk, storescu
from factories import make_instance

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
VN_CCCD = "http://fhir.ehealth.gov.vn/core/sid/national_id"
HOSPITAL = "http://fhir.ehealth.gov.vn/core/sid/patient-internal-id"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def emr(server: ServerProcess) -> Iterator[httpx.Client]:
    token = server.create_token("orders-emr", "emr")
    with httpx.Client(base_url=f"{server.http_url}/fhir", timeout=60,
                      headers={"Authorization": f"Bearer {token}", **FHIR_JSON}) as client:
        yield client


def _unique(prefix: str) -> str:
    return (prefix + uuid.uuid4().hex.upper())[:16]


def _cccd() -> str:
    # province 079 (HCMC), century/sex 0 (1900s, male), year 68, six random digits
    return "079068" + str(uuid.uuid4().int)[:6]


def service_request(accession: str | None, subject: dict[str, Any] | None, *,
                    modality: str = "CT", station: str = "CT_ROOM1",
                    when: str = "2026-12-04T09:30:00+07:00") -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "identifier": [],
        "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2",
                             "display": "CT Chest"}], "text": "CT ngực"},
        "orderDetail": [{"coding": [{"system": DCM, "code": modality}]}],
        "performer": [{"identifier": {"system": "urn:dicom:ae", "value": station}}],
        "occurrenceDateTime": when,
        "requester": {"display": "Lê Minh"},
    }
    if accession:
        body["identifier"].append({"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                                   "value": accession})
    if subject:
        body["subject"] = subject
    return body


def _resource(response: httpx.Response, status: int = 200) -> ServiceRequest:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    return ServiceRequest.model_validate(response.json())


def _outcome(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return str(OperationOutcome.model_validate(response.json()).issue[0].diagnostics)


def _searchset(response: httpx.Response) -> list[Any]:
    assert response.status_code == 200, response.text
    bundle = Bundle.model_validate(response.json())
    assert bundle.type == "searchset"
    out = []
    for entry in bundle.entry or []:
        model = {"ServiceRequest": ServiceRequest,
                 "ImagingStudy": ImagingStudy}[entry.resource.get_resource_type()]
        out.append(model.model_validate(entry.resource.model_dump(mode="json")))
    return out


def findscu_worklist(server: ServerProcess, tmp_path: Path, station: str) -> list[Dataset]:
    out = tmp_path / f"wl-{uuid.uuid4().hex[:8]}"
    out.mkdir()
    result = run_dcmtk(
        "findscu", "-W", "-aec", server.ae_title, "-X", "-od", str(out),
        "-k", "SpecificCharacterSet=ISO_IR 192", "-k", "PatientID", "-k", "PatientName",
        "-k", "IssuerOfPatientID", "-k", "AccessionNumber", "-k", "StudyInstanceUID",
        "-k", "OtherPatientIDsSequence[0].PatientID",
        "-k", "OtherPatientIDsSequence[0].IssuerOfPatientID",
        "-k", f"ScheduledProcedureStepSequence[0].ScheduledStationAETitle={station}",
        "-k", "ScheduledProcedureStepSequence[0].Modality",
        "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
        "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
        "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
        "127.0.0.1", str(server.dicom_port))
    assert result.returncode == 0, result.stdout + result.stderr
    return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


def test_order_over_fhir_reaches_findscu_then_storescu_images_complete_it(
    server: ServerProcess, emr: httpx.Client, tmp_path: Path
) -> None:
    cccd, accession, station = _cccd(), _unique("ACC"), _unique("CT")
    created = emr.post("/ServiceRequest", json=service_request(
        accession, {"identifier": {"system": VN_CCCD, "value": cccd}}, station=station))
    order = _resource(created, 201)
    assert created.headers["etag"] == 'W/"1"'
    assert created.headers["location"].endswith(f"/ServiceRequest/{order.id}/_history/1")
    assert order.status == "active"

    (item,) = findscu_worklist(server, tmp_path, station)
    assert item.AccessionNumber == accession
    assert item.PatientID == cccd and item.IssuerOfPatientID == "CCCD"
    assert item.OtherPatientIDsSequence[0].PatientID == cccd
    sps = item.ScheduledProcedureStepSequence[0]
    assert (sps.Modality, sps.ScheduledStationAETitle) == ("CT", station)
    assert (sps.ScheduledProcedureStepStartDate, sps.ScheduledProcedureStepStartTime
            ) == ("20261204", "093000")

    # The modality copies the worklist item into its images (IHE SWF), and sends them.
    files = []
    for number in range(2):
        path = tmp_path / f"img{number}.dcm"
        path.write_bytes(make_instance(
            patient_id=cccd, accession_number=accession, study_uid=item.StudyInstanceUID,
            IssuerOfPatientID="CCCD", InstanceNumber=number + 1,
            OtherPatientIDsSequence=[{"PatientID": cccd, "IssuerOfPatientID": "CCCD"}]))
        files.append(path)
    sent = storescu(server, *files)
    assert sent.returncode == 0, sent.stdout + sent.stderr

    found = _searchset(emr.get("/ImagingStudy", params={
        "patient.identifier": f"{VN_CCCD}|{cccd}"}))
    (study,) = found
    assert study.id == item.StudyInstanceUID
    assert [r.reference for r in study.basedOn] == [f"ServiceRequest/{order.id}"]
    assert study.numberOfInstances == 2
    by_order = _searchset(emr.get("/ImagingStudy", params={
        "basedon": f"ServiceRequest/{order.id}"}))
    assert [s.id for s in by_order] == [study.id]
    done = _resource(emr.get(f"/ServiceRequest/{order.id}"))
    assert done.status == "completed"
    assert done.meta.versionId == "2"
    assert findscu_worklist(server, tmp_path, station) == []  # done: no longer offered


def test_transaction_bundle_places_patient_and_orders_all_or_nothing(
    server: ServerProcess, emr: httpx.Client
) -> None:
    hospital_id, cccd = _unique("BN"), _cccd()
    patient = {"resourceType": "Patient",
               "identifier": [{"system": HOSPITAL, "value": hospital_id},
                              {"system": VN_CCCD, "value": cccd}],
               "name": [{"family": "Trần", "given": ["Thị", "Bình"]}],
               "gender": "female", "birthDate": "1968-04-12"}
    first, second = _unique("TX"), _unique("TX")

    def bundle(*accessions: str | None) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
             "resource": patient, "request": {"method": "POST", "url": "Patient"}},
            *({"fullUrl": f"urn:uuid:{uuid.uuid4()}",
               "resource": service_request(a, {
                   "reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"}),
               "request": {"method": "POST", "url": "ServiceRequest"}}
              for a in accessions)]}

    base = f"{server.http_url}/fhir"  # the FHIR base itself, no trailing slash
    refused = emr.post(base, json=bundle(first, None))
    diagnostics = _outcome(refused, 400)
    assert "entry 2" in diagnostics and "accession" in diagnostics
    assert _searchset(emr.get("/ServiceRequest", params={"identifier": first})) == []

    answer = emr.post(base, json=bundle(first, second))
    assert answer.status_code == 200, answer.text
    response = Bundle.model_validate(answer.json())
    assert response.type == "transaction-response"
    statuses = [e.response.status for e in response.entry]
    assert statuses == ["200 OK", "201 Created", "201 Created"]
    for entry in response.entry[1:]:
        order = ServiceRequest.model_validate(entry.resource.model_dump(mode="json"))
        assert order.subject.reference == f"Patient/{hospital_id}"
        assert order.subject.display == "Trần Thị Bình"
    orders = _searchset(emr.get("/ServiceRequest", params={
        "patient.identifier": f"{VN_CCCD}|{cccd}"}))
    assert {i.value for o in orders for i in o.identifier if i.type} == {first, second}
    assert {o.id for o in _searchset(emr.get("/ServiceRequest", params={
        "patient": f"Patient/{hospital_id}"}))} == {o.id for o in orders}


def test_update_needs_the_current_etag_and_revoked_cancels_the_worklist_item(
    server: ServerProcess, emr: httpx.Client, tmp_path: Path
) -> None:
    station, accession = _unique("MR"), _unique("UP")
    body = service_request(accession, {"reference": "Patient/BN2024000123.BV-2DDEMO"},
                           modality="MR", station=station)
    order = _resource(emr.post("/ServiceRequest", json=body), 201)
    body["occurrenceDateTime"] = "2026-12-05T14:00:00+07:00"
    moved = emr.put(f"/ServiceRequest/{order.id}", json={**body, "id": order.id},
                    headers={"If-Match": 'W/"1"'})
    assert _resource(moved).meta.versionId == "2" and moved.headers["etag"] == 'W/"2"'
    stale = emr.put(f"/ServiceRequest/{order.id}", json=body, headers={"If-Match": 'W/"1"'})
    assert "version 2" in _outcome(stale, 412)
    (item,) = findscu_worklist(server, tmp_path, station)
    assert item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate == "20261205"
    study_uid = next(i.value for i in order.identifier if i.system == "urn:dicom:uid")
    assert f"urn:oid:{item.StudyInstanceUID}" == study_uid  # kept across the update
    assert item.PatientName == "Nguyễn^Văn An"  # demographics from the index
    revoked = emr.put(f"/ServiceRequest/{order.id}", json={**body, "status": "revoked"},
                      headers={"If-Match": 'W/"2"'})
    assert _resource(revoked).status == "revoked"
    assert findscu_worklist(server, tmp_path, station) == []
    listed = _searchset(emr.get("/ServiceRequest", params={"identifier": accession,
                                                           "status": "revoked"}))
    assert [o.id for o in listed] == [order.id]
    assert _searchset(emr.get("/ServiceRequest", params={"identifier": accession,
                                                         "status": "active"})) == []


def test_missing_patient_or_accession_is_a_400_saying_which(emr: httpx.Client) -> None:
    no_accession = emr.post("/ServiceRequest", json=service_request(
        None, {"reference": "Patient/BN2024000123.BV-2DDEMO"}))
    assert "accession" in _outcome(no_accession, 400)
    no_patient = emr.post("/ServiceRequest", json=service_request(_unique("NP"), None))
    assert "subject" in _outcome(no_patient, 400)  # the R4B model: subject is required
    unknown_system = emr.post("/ServiceRequest", json=service_request(
        _unique("NS"), {"identifier": {"system": "urn:other", "value": "1"}}))
    assert "urn:other" in _outcome(unknown_system, 400)
    assert "not JSON" in _outcome(emr.post("/ServiceRequest", content=b"{"), 400)


def test_clinician_cannot_place_orders_and_every_change_is_audited(
    server: ServerProcess, emr: httpx.Client
) -> None:
    clinician = server.create_token("orders-clinician", "clinician")
    body = service_request(_unique("AU"), {"reference": "Patient/BN2024000123.BV-2DDEMO"})
    refused = httpx.post(f"{server.http_url}/fhir/ServiceRequest", json=body,
                         headers={"Authorization": f"Bearer {clinician}", **FHIR_JSON})
    assert "may not manage-worklist" in _outcome(refused, 403)
    order = _resource(emr.post("/ServiceRequest", json=body), 201)
    readable = httpx.get(f"{server.http_url}/fhir/ServiceRequest/{order.id}",
                         headers={"Authorization": f"Bearer {clinician}"})
    assert _resource(readable).id == order.id  # a clinician may read orders
    events = server.http.get("/admin/audit", params={"action": "order-create"}).json()
    mine = [e for e in events if order.id in e["detail"]]
    assert mine and mine[0]["actor"] == "token:orders-emr"


def test_same_accession_for_another_patient_is_flagged_never_linked(
    server: ServerProcess, emr: httpx.Client
) -> None:
    accession, patient = _unique("MM"), _unique("BN")
    order = _resource(emr.post("/ServiceRequest", json=service_request(
        accession, {"identifier": {"system": HOSPITAL, "value": patient}})), 201)
    stranger = make_instance(patient_id=_unique("OTHER"), accession_number=accession)
    store(server, stranger)
    flagged = _resource(emr.get(f"/ServiceRequest/{order.id}"))
    assert flagged.status == "active"
    assert any("needs reconciliation" in n.text and patient in n.text
               for n in flagged.note or [])
    listing = server.http.get("/admin/orders/reconciliation")
    assert listing.status_code == 200, listing.text
    assert accession in {o["accession_number"] for o in listing.json()}
    studies = _searchset(emr.get("/ImagingStudy", params={"identifier": accession}))
    assert studies and all(not s.basedOn for s in studies)


def test_search_pages_with_count_and_the_capability_statement_says_so(
    server: ServerProcess, emr: httpx.Client
) -> None:
    patient = _unique("PG")
    for _ in range(3):
        _resource(emr.post("/ServiceRequest", json=service_request(
            _unique("PG"), {"identifier": {"system": HOSPITAL, "value": patient}})), 201)
    first = emr.get("/ServiceRequest", params={"patient.identifier": patient, "_count": 2})
    bundle = Bundle.model_validate(first.json())
    assert len(bundle.entry) == 2
    nxt = next(link.url for link in bundle.link if link.relation == "next")
    rest = _searchset(httpx.get(nxt, headers=emr.headers))
    assert len(rest) == 1
    assert "_count" in _outcome(emr.get("/ServiceRequest", params={"_count": "x"}), 400)
    statement = CapabilityStatement.model_validate(
        httpx.get(f"{server.http_url}/fhir/metadata").json())
    orders = next(r for r in statement.rest[0].resource if r.type == "ServiceRequest")
    assert {i.code for i in orders.interaction} == {"read", "search-type", "create",
                                                    "update"}
    assert {"patient", "patient.identifier", "identifier", "status"} <= {
        p.name for p in orders.searchParam}
    assert [i.code for i in statement.rest[0].interaction] == ["transaction"]
