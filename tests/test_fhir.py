"""The FHIR R4 door (/fhir) and IHE IID, on a live server with the sample studies, as the
hospital's EMR calls it: an API token of role `emr`. Every resource the server returns
is parsed with the fhir.resources R4B models, which validate it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from pydicom.uid import generate_uid

from conftest import ServerProcess
from dicomweb_peers import store
from factories import make_instance
from minipacs.fhir.ids import patient_id_of, patient_key_of
from minipacs.patient_identity import bhyt_problem, cccd_problem

VN_CCCD = "http://fhir.ehealth.gov.vn/core/sid/national_id"
VN_BHYT = "http://fhir.ehealth.gov.vn/core/sid/insurance_number"
HL7VN_CCCD = "http://fhir.hl7.org.vn/core/sid/cccd"
HOSPITAL = "http://fhir.ehealth.gov.vn/core/sid/patient-internal-id"
AN_CCCD, AN_BHYT, AN_ID = "079068012345", "DN4790123456789", "BN2024000123"
AN_ACCESSIONS = {"CT2403150012", "DX2501200045"}
SEARCH_VALUES = {  # a value each listed search parameter accepts
    "_id": "1.2.3", "_lastUpdated": "ge2000-01-01", "identifier": AN_ID,
    "patient": "Patient/BN2024000123.BV-2DDEMO", "subject": "Patient/BN2024000123.BV-2DDEMO",
    "patient.identifier": AN_ID, "subject:Patient.identifier": AN_ID,
    "started": "ge2024", "modality": "CT", "status": "available",
    "basedon": "ServiceRequest/x", "name": "nguyen", "family": "nguyen", "given": "an",
    "birthdate": "1968-04-12", "gender": "male", "_count": "5", "_getpagesoffset": "0",
}


@pytest.fixture(scope="module")
def emr(server: ServerProcess) -> Iterator[httpx.Client]:
    token = server.create_token("fhir-emr", "emr")
    with httpx.Client(base_url=f"{server.http_url}/fhir", timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def _bundle(response: httpx.Response) -> Bundle:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate(response.json())
    assert bundle.type == "searchset"
    for entry in bundle.entry or []:
        kind = entry.resource.get_resource_type()
        model = {"ImagingStudy": ImagingStudy, "Patient": Patient}[kind]
        model.model_validate(entry.resource.model_dump(mode="json"))
    return bundle


def _studies(bundle: Bundle) -> list[ImagingStudy]:
    return [e.resource for e in bundle.entry or []]


def _accessions(bundle: Bundle) -> set[str]:
    return {i.value for s in _studies(bundle) for i in s.identifier
            if i.type is not None and i.type.coding[0].code == "ACSN"}


def _outcome(response: httpx.Response, status: int) -> OperationOutcome:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    return OperationOutcome.model_validate(response.json())


def test_capability_statement_is_public_and_every_listed_search_parameter_works(
    server: ServerProcess, emr: httpx.Client
) -> None:
    response = httpx.get(f"{server.http_url}/fhir/metadata")
    assert response.status_code == 200
    statement = CapabilityStatement.model_validate(response.json())
    resources = {r.type: r for r in statement.rest[0].resource}
    assert set(resources) == {"ImagingStudy", "Patient", "Endpoint", "ServiceRequest",
                              "DiagnosticReport"}
    for kind in ("ImagingStudy", "Patient"):
        names = [p.name for p in resources[kind].searchParam]
        for name in names:
            reply = emr.get(f"/{kind}", params={name: SEARCH_VALUES[name]},
                            headers={"Prefer": "handling=strict"})
            _bundle(reply)  # strict: a parameter the server did not know would be a 400
        refused = emr.get(f"/{kind}", params={"not-a-param": "1"},
                          headers={"Prefer": "handling=strict"})
        assert "not-a-param" in _outcome(refused, 400).issue[0].diagnostics
        lenient = _bundle(emr.get(f"/{kind}", params={"not-a-param": "1"}))
        assert lenient.total >= 1  # ignored without Prefer: handling=strict...
        assert "not-a-param" not in lenient.link[0].url  # ...and left out of the self link
    # A modifier or chain we do not support is refused, never ignored: ignoring it would
    # return more than the EMR asked for.
    for name in ("name:exact", "patient.name", "identifier:of-type"):
        kind = "ImagingStudy" if name == "patient.name" else "Patient"
        assert name in _outcome(emr.get(f"/{kind}", params={name: "x"}), 400
                                ).issue[0].diagnostics


def test_imaging_study_search_by_cccd_in_either_system_uri_finds_the_patients_studies(
    emr: httpx.Client,
) -> None:
    for param in ("patient.identifier", "subject:Patient.identifier"):
        for system in (VN_CCCD, HL7VN_CCCD):
            bundle = _bundle(emr.get("/ImagingStudy", params={param: f"{system}|{AN_CCCD}"}))
            assert bundle.total == 2 and _accessions(bundle) == AN_ACCESSIONS
    # The CCCD is not a BHYT number: the system decides which identifier is matched.
    assert _bundle(emr.get("/ImagingStudy", params={
        "patient.identifier": f"{VN_BHYT}|{AN_CCCD}"})).total == 0
    assert _accessions(_bundle(emr.get("/ImagingStudy", params={
        "patient.identifier": f"{VN_BHYT}|{AN_BHYT}"}))) == AN_ACCESSIONS
    assert _bundle(emr.get("/ImagingStudy", params={
        "patient.identifier": f"urn:unknown|{AN_CCCD}"})).total == 0
    an = f"Patient/{patient_id_of(AN_ID, 'BV-DEMO')}"
    for param in ("patient", "subject", "subject:Patient"):
        assert _accessions(_bundle(emr.get("/ImagingStudy", params={param: an}))) == \
            AN_ACCESSIONS
    assert _bundle(emr.get("/ImagingStudy", params={"patient": f"Patient/{AN_ID}"})
                   ).total == 0  # same PatientID without its issuer: another patient key


def test_imaging_study_resource_follows_the_dicom_mapping(emr: httpx.Client) -> None:
    bundle = _bundle(emr.get("/ImagingStudy", params={"identifier": "CT2403150012"}))
    assert bundle.total == 1
    study = _studies(bundle)[0]
    assert study.status == "available"
    assert study.identifier[0].system == "urn:dicom:uid"
    assert study.identifier[0].value == f"urn:oid:{study.id}"
    assert study.subject.reference == f"Patient/{patient_id_of(AN_ID, 'BV-DEMO')}"
    assert study.started.isoformat() == "2024-03-15T09:15:12+07:00"
    assert [m.code for m in study.modality] == ["CT"]
    assert study.referrer.display == "Lê Minh Tuấn"
    assert study.numberOfSeries == len(study.series) == 2
    assert study.numberOfInstances == sum(len(s.instance) for s in study.series)
    first = study.series[0]
    assert first.modality.code == "CT" and first.bodySite.code == "CHEST"
    assert first.instance[0].sopClass.code.startswith("urn:oid:1.2.840.10008.5.1.4.1.1.")
    assert {e.reference for e in study.endpoint} == {"Endpoint/dicom-wado-rs",
                                                     "Endpoint/ihe-iid"}
    by_uid = _bundle(emr.get("/ImagingStudy", params={
        "identifier": f"urn:dicom:uid|urn:oid:{study.id}"}))
    assert [s.id for s in _studies(by_uid)] == [study.id]
    read = emr.get(f"/ImagingStudy/{study.id}")
    assert read.status_code == 200
    assert ImagingStudy.model_validate(read.json()).id == study.id
    for endpoint_id, path in (("dicom-wado-rs", "/dicom-web"),
                              ("ihe-iid", "/IHEInvokeImageDisplay")):
        endpoint = Endpoint.model_validate(emr.get(f"/Endpoint/{endpoint_id}").json())
        assert endpoint.connectionType.code == endpoint_id
        assert endpoint.address.endswith(path)


def test_started_range_modality_and_paging(emr: httpx.Client) -> None:
    ranged = _bundle(emr.get("/ImagingStudy", params=[
        ("started", "ge2024-09-01"), ("started", "lt2025-02-01"),
        ("patient.identifier", AN_ID)]))
    assert _accessions(ranged) == {"DX2501200045"}
    assert _accessions(_bundle(emr.get("/ImagingStudy", params={
        "started": "2024-03", "modality": "CT", "patient.identifier": AN_ID}))) == \
        {"CT2403150012"}
    assert _bundle(emr.get("/ImagingStudy", params={
        "modality": "MR", "patient.identifier": AN_ID})).total == 0
    seen: list[str] = []
    url: str | None = "/ImagingStudy?_count=1&patient.identifier=" + AN_ID
    for _ in range(5):  # bounded: 2 pages expected
        if url is None:
            break
        page = _bundle(emr.get(url))
        assert page.total == 2 and len(page.entry) == 1
        seen += [s.id for s in _studies(page)]
        nxt = [link.url for link in page.link if link.relation == "next"]
        url = None
        if nxt:
            parts = urlsplit(nxt[0])
            url = "/ImagingStudy?" + parts.query
            assert dict(parse_qsl(parts.query))["_getpagesoffset"] == "1"
    assert len(seen) == 2 and len(set(seen)) == 2
    bad = emr.get("/ImagingStudy", params={"started": "2024-13-01"})
    assert "started" in _outcome(bad, 400).issue[0].diagnostics


def test_last_updated_finds_studies_changed_since(emr: httpx.Client, server: ServerProcess
                                                  ) -> None:
    patient = f"P-FHIR-{generate_uid()[-8:]}"
    store(server, make_instance(patient_id=patient, accession_number="FHIR-LU-1"))
    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    found = _bundle(emr.get("/ImagingStudy", params={"_lastUpdated": f"ge{since}",
                                                     "patient.identifier": patient}))
    assert found.total == 1 and _studies(found)[0].meta.lastUpdated is not None
    assert _bundle(emr.get("/ImagingStudy", params={"_lastUpdated": "lt2001-01-01",
                                                    "patient.identifier": patient})).total == 0


def test_patient_search_by_accent_free_name_and_identifiers(emr: httpx.Client) -> None:
    bundle = _bundle(emr.get("/Patient", params={"name": "nguyen van an"}))
    patients = {p.id: p for p in (e.resource for e in bundle.entry)}
    an = patients[patient_id_of(AN_ID, "BV-DEMO")]
    assert an.name[0].family == "Nguyễn" and an.name[0].given == ["Văn", "An"]
    assert an.gender == "male" and an.birthDate.isoformat() == "1968-04-12"
    systems = {i.system: i for i in an.identifier}
    assert systems[HOSPITAL].value == AN_ID
    assert systems[HOSPITAL].type.coding[0].code == "MR"
    assert systems[HOSPITAL].assigner.display
    assert systems[VN_CCCD].value == AN_CCCD and systems[VN_CCCD].type.coding[0].code == "NI"
    assert systems[VN_BHYT].value == AN_BHYT and systems[VN_BHYT].type.coding[0].code == "HC"
    assert not any(i.extension for i in an.identifier)  # valid values: nothing flagged
    for query in ({"identifier": f"{HL7VN_CCCD}|{AN_CCCD}"}, {"identifier": AN_BHYT},
                  {"identifier": f"{HOSPITAL}|{AN_ID}"}, {"family": "Nguyen", "given": "an",
                                                         "birthdate": "1968",
                                                         "gender": "male"}):
        found = _bundle(emr.get("/Patient", params=query))
        assert an.id in {e.resource.id for e in found.entry}, query
    assert _bundle(emr.get("/Patient", params={"identifier": AN_ID,
                                               "gender": "female"})).total == 0
    read = emr.get(f"/Patient/{an.id}")
    assert Patient.model_validate(read.json()).identifier == an.identifier


def test_invalid_identifiers_are_kept_as_sent_and_flagged(
    emr: httpx.Client, server: ServerProcess
) -> None:
    patient = f"P-BAD-{generate_uid()[-8:]}"
    store(server, make_instance(
        patient_id=patient, PatientBirthDate="19900101", PatientSex="F",
        OtherPatientIDsSequence=[
            {"PatientID": "07909001234", "IssuerOfPatientID": "CCCD"},  # 11 digits
            {"PatientID": "XX9", "IssuerOfPatientID": "BHYT"}]))
    found = _bundle(emr.get("/Patient", params={"identifier": f"{VN_CCCD}|07909001234"}))
    assert found.total == 1
    identifiers = {i.system: i for i in found.entry[0].resource.identifier}
    assert identifiers[VN_CCCD].value == "07909001234"
    assert "12 digits" in identifiers[VN_CCCD].extension[0].valueString
    assert identifiers[VN_BHYT].value == "XX9" and identifiers[VN_BHYT].extension


def test_errors_are_operation_outcomes(server: ServerProcess, emr: httpx.Client) -> None:
    _outcome(emr.get("/ImagingStudy/1.2.826.0.1.3680043.8.498.999"), 404)
    _outcome(emr.get("/ImagingStudy/not-a-uid"), 404)
    _outcome(emr.get("/Patient/NOBODY"), 404)
    _outcome(emr.get("/Endpoint/nothing"), 404)
    assert "Observation" in _outcome(emr.get("/Observation"), 404).issue[0].diagnostics
    _outcome(emr.get("/Observation/1"), 404)
    assert "not supported" in _outcome(emr.get("/Patient/x/_history/1"), 404).issue[0].diagnostics
    _outcome(emr.post("/Patient", json={"resourceType": "Patient"}), 405)
    anonymous = httpx.get(f"{server.http_url}/fhir/ImagingStudy")
    assert _outcome(anonymous, 401).issue[0].code == "login"
    research = server.create_token("fhir-research", "research")
    refused = httpx.get(f"{server.http_url}/fhir/Patient",
                        headers={"Authorization": f"Bearer {research}"})
    assert _outcome(refused, 403).issue[0].code == "forbidden"
    _outcome(emr.get("/Patient", params={"gender": "unknown"}), 400)


def test_iid_redirects_to_the_viewer_link(server: ServerProcess) -> None:
    response = httpx.get(f"{server.http_url}/IHEInvokeImageDisplay", params={
        "requestType": "STUDY", "accessionNumber": "CT2403150012", "keyImagesOnly": "true"})
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert location.path == "/viewer/"
    assert dict(parse_qsl(location.query)) == {
        "requestType": "STUDY", "accessionNumber": "CT2403150012", "keyImagesOnly": "true"}
    patient = httpx.get(f"{server.http_url}/IHEInvokeImageDisplay", params={
        "requestType": "PATIENT", "patientID": AN_CCCD, "mostRecentResults": "3"})
    assert patient.status_code == 303
    assert httpx.get(f"{server.http_url}/IHEInvokeImageDisplay",
                     params={"requestType": "STUDY"}).status_code == 400


@pytest.mark.parametrize("value,problem", [
    ("079068012345", None), ("07906801234", "12 digits"), ("999068012345", "province"),
    ("079168012345", "sex"), ("079070012345", "birth year"),
])
def test_cccd_format(value: str, problem: str | None) -> None:
    found = cccd_problem(value, "19680412", "M")
    assert found is None if problem is None else problem in (found or "")


def test_bhyt_accepts_card_social_insurance_number_and_cccd() -> None:
    assert bhyt_problem("DN4790123456789") is None
    assert bhyt_problem("7901234567") is None
    assert bhyt_problem("079068012345") is None
    assert bhyt_problem("DN9790123456789") is not None  # benefit level 9 does not exist
    assert bhyt_problem("ABC") is not None


@pytest.mark.parametrize("key", [("BN2024000123", "BV-DEMO"), ("BN1", ""),
                                 ("id with space.and-dot", "Bệnh viện")])
def test_patient_ids_are_fhir_ids_and_decode_to_the_key(key: tuple[str, str]) -> None:
    logical = patient_id_of(*key)
    assert logical is not None and patient_key_of(logical) == key


def test_searches_and_reads_are_audited_as_the_emr_with_the_patients_found(
    server: ServerProcess,
) -> None:
    token = server.create_token("fhir-audited", "emr")
    headers = {"Authorization": f"Bearer {token}"}
    search = httpx.get(f"{server.http_url}/fhir/ImagingStudy", headers=headers,
                       params={"patient.identifier": f"{VN_CCCD}|{AN_CCCD}", "_count": "0"})
    summary = _bundle(search)
    assert summary.total == 2 and not summary.entry  # _count=0: the total only
    found = httpx.get(f"{server.http_url}/fhir/ImagingStudy", headers=headers,
                      params={"patient.identifier": AN_CCCD})
    assert _bundle(found).total == 2
    read = httpx.get(f"{server.http_url}/fhir/Patient/{patient_id_of(AN_ID, 'BV-DEMO')}",
                     headers=headers)
    assert read.status_code == 200
    events = server.http.get("/admin/audit", params={"actor": "token:fhir-audited"}).json()
    # Newest first. A count-only search names no patient: its criteria say whom it was on.
    assert [(e["action"], e["patient_id"]) for e in events] == [
        ("view", AN_ID), ("query", AN_ID), ("query", "")]
    assert AN_CCCD in events[2]["detail"] and "2 matches" in events[2]["detail"]
