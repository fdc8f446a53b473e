"""Patient reconciliation (docs/emr-integration.md "Reconciliation"): studies stored under a
wrong patient ID are merged, demographics corrected, through the CLI and the admin API;
then every door (findscu, QIDO-RS, WADO-RS metadata and retrieve, WADO-URI, C-GET,
C-MOVE, FHIR) shows the corrected patient, the stored blobs unchanged, and the changes
are in the audit trail and the patient's history."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.patient import Patient as FhirPatient
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)

from backends import Backends
from conftest import ServerProcess, open_test_archive
from dimse_peers import dataset_bytes, run_dcmtk, storescu
from factories import make_instance
from minipacs.access.principal import Principal
from minipacs.access.roles import Role
from minipacs.archive import Archive
from minipacs.config import Settings
from minipacs.errors import Forbidden, InvalidRequest, NotFound
from minipacs.fhir.ids import patient_id_of
from retrieve_peers import register_ae, start_store_scp


@pytest.fixture(scope="module")
def recon(tmp_path_factory: pytest.TempPathFactory, backends: Backends
          ) -> Iterator[tuple[ServerProcess, Settings]]:
    """A server of this module's own, and the settings of its index and blob store (to
    check, in process, that the stored blobs were never rewritten)."""
    data_dir = tmp_path_factory.mktemp("recon") / "data"
    values = backends.settings()
    settings = Settings(data_dir=data_dir, load_samples=False, **values)
    data_dir.mkdir()
    proc = ServerProcess(data_dir, ["--no-load-samples", *backends.server_args(values)])
    proc.start()
    yield proc, settings
    proc.stop()


@pytest.fixture(scope="module")
def server(recon: tuple[ServerProcess, Settings]) -> ServerProcess:
    return recon[0]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8].upper()}"


def _store_studies(server: ServerProcess, folder: Path, count: int, instances: int = 2,
                   **patient: str) -> dict[str, dict[str, bytes]]:
    """`count` studies of `instances` CT instances each, sent with dcmtk's storescu:
    study UID -> SOP Instance UID -> the bytes sent."""
    studies: dict[str, dict[str, bytes]] = {}
    paths = []
    for _ in range(count):
        study, series = generate_uid(), generate_uid()
        studies[study] = {}
        for number in range(1, instances + 1):
            sop = generate_uid()
            data = make_instance(study_uid=study, series_uid=series, sop_uid=sop,
                                 InstanceNumber=number, **patient)  # type: ignore[arg-type]
            studies[study][sop] = data
            path = folder / f"{sop}.dcm"
            path.write_bytes(data)
            paths.append(path)
    result = storescu(server, *paths)
    assert result.returncode == 0, result.stderr
    return studies


def _findscu(server: ServerProcess, folder: Path, level: str, **keys: str) -> list[Dataset]:
    """C-FIND with dcmtk's findscu (study root, or patient root for PATIENT), answers
    extracted as files and read back."""
    out = folder / f"find-{uuid.uuid4().hex[:6]}"
    out.mkdir()
    model = "-P" if level == "PATIENT" else "-S"
    args = [model, "-aec", server.ae_title, "-X", "-od", str(out),
            "-k", f"QueryRetrieveLevel={level}", "-k", "SpecificCharacterSet=ISO_IR 192"]
    for keyword, value in keys.items():
        args += ["-k", f"{keyword}={value}" if value else keyword]
    result = run_dcmtk("findscu", *args, "127.0.0.1", str(server.dicom_port))
    assert result.returncode == 0, result.stderr
    return [dcmread(p) for p in sorted(out.iterdir())]


def _c_get(server: ServerProcess, study: str) -> dict[str, Dataset]:
    received: dict[str, Dataset] = {}

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        received[str(ds.SOPInstanceUID)] = ds
        return 0x0000

    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    ae = AE(ae_title="RECONGET")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    final = None
    try:
        for status, _ds in assoc.send_c_get(identifier,
                                            StudyRootQueryRetrieveInformationModelGet):
            if status and status.Status != 0xFF00:
                final = int(status.Status)
    finally:
        assoc.release()
    assert final == 0x0000
    return received


def _c_move(server: ServerProcess, study: str) -> dict[str, Dataset]:
    scp = start_store_scp()
    try:
        register_ae(server, scp.ae_title, scp.port)
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study
        result = run_dcmtk("movescu", "-S", "-aec", server.ae_title, "-aem", scp.ae_title,
                           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                           "127.0.0.1", str(server.dicom_port))
        assert result.returncode == 0, result.stderr
    finally:
        scp.stop()
    out = {}
    for sop, (ts, data) in scp.received.items():
        ds = dcmread(io.BytesIO(data), force=True)
        ds.file_meta = Dataset()
        ds.file_meta.TransferSyntaxUID = ts
        out[sop] = ds
    return out


def _name(model: dict[str, Any]) -> str:
    return str(model["00100010"]["Value"][0]["Alphabetic"])


def _value(model: dict[str, Any], key: str) -> str:
    return str((model.get(key) or {}).get("Value", [""])[0])


def _fhir(server: ServerProcess, path: str, **params: str) -> dict[str, Any]:
    response = server.http.get(f"/fhir/{path}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _assert_blobs_unchanged(settings: Settings, studies: dict[str, dict[str, bytes]]
                            ) -> None:
    archive = open_test_archive(settings)
    try:
        for sent in studies.values():
            for sop, data in sent.items():
                (record,) = archive.instances(sop_instance_uid=sop)
                assert record.patient_patch  # served corrected ...
                # ... stored as received (storescu's data set; our file meta), and
                # hashing to the SHA-256 recorded at ingest: never rewritten
                assert dataset_bytes(archive.store.read(record.blob_key)) == \
                    dataset_bytes(data)
                assert archive.verify_instance(sop) == (record, "")
    finally:
        archive.close()


def test_merge_through_the_cli_then_every_door_shows_the_target_patient(
    recon: tuple[ServerProcess, Settings], tmp_path: Path
) -> None:
    server, settings = recon
    right, wrong = _unique("BN-RIGHT"), _unique("BN-WRONG")
    own = _store_studies(server, tmp_path, 1, patient_id=right,
                         patient_name="Trần^Thị Bình", PatientBirthDate="19750203",
                         PatientSex="F")
    moved = _store_studies(server, tmp_path, 2, patient_id=wrong,
                           patient_name="Tran^Binh", PatientBirthDate="19990101",
                           PatientSex="M")
    done = server.cli("patient", "merge", wrong, right, "--reason",
                      "mã bệnh nhân gõ nhầm ở máy CT")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 studies, 4 instances served corrected" in done.stdout

    # C-FIND (dcmtk findscu), study and patient level
    found = _findscu(server, tmp_path, "STUDY", PatientID=right, StudyInstanceUID="",
                     PatientName="", PatientBirthDate="", PatientSex="")
    assert {str(d.StudyInstanceUID) for d in found} == set(own) | set(moved)
    assert {(str(d.PatientName), d.PatientBirthDate, d.PatientSex) for d in found} == {
        ("Trần^Thị Bình", "19750203", "F")}
    assert _findscu(server, tmp_path, "STUDY", PatientID=wrong, StudyInstanceUID="") == []
    (patient,) = _findscu(server, tmp_path, "PATIENT", PatientID=right, PatientName="",
                          NumberOfPatientRelatedStudies="")
    assert patient.NumberOfPatientRelatedStudies == 3

    # QIDO-RS and WADO-RS with dicomweb-client
    client = DICOMwebClient(url=server.dicomweb_url, headers=server.auth)
    studies = client.search_for_studies(search_filters={"PatientID": right})
    assert {_value(s, "0020000D") for s in studies} == set(own) | set(moved)
    assert {_name(s) for s in studies} == {"Trần^Thị Bình"}
    assert client.search_for_studies(search_filters={"PatientID": wrong}) == []
    study = next(iter(moved))
    metadata = client.retrieve_study_metadata(study)
    assert len(metadata) == 2
    for model in metadata:
        assert (_value(model, "00100020"), _name(model), _value(model, "00100030"),
                _value(model, "00100040")) == (right, "Trần^Thị Bình", "19750203", "F")
    for sop, data in moved[study].items():
        series = str(dcmread(io.BytesIO(data)).SeriesInstanceUID)
        got = client.retrieve_instance(study, series, sop)
        original = dcmread(io.BytesIO(data))
        assert (got.PatientID, str(got.PatientName), got.PatientSex) == (
            right, "Trần^Thị Bình", "F")
        assert got.PixelData == original.PixelData
        assert (got.SOPInstanceUID, got.StudyDate) == (sop, original.StudyDate)
        # WADO-URI: the same corrected header
        uri = server.http.get("/wado", params={
            "requestType": "WADO", "studyUID": study, "seriesUID": series,
            "objectUID": sop, "contentType": "application/dicom"})
        assert uri.status_code == 200, uri.text
        assert dcmread(io.BytesIO(uri.content)).PatientID == right

    # C-GET and C-MOVE: corrected headers, pixels as stored
    got_by_get = _c_get(server, study)
    moved_by_move = _c_move(server, study)
    for received in (got_by_get, moved_by_move):
        assert set(received) == set(moved[study])
        for sop, ds in received.items():
            assert (ds.PatientID, str(ds.PatientName)) == (right, "Trần^Thị Bình")
            assert ds.PixelData == dcmread(io.BytesIO(moved[study][sop])).PixelData

    # FHIR Patient and ImagingStudy
    bundle = Bundle.model_validate(_fhir(server, "Patient", identifier=right))
    (entry,) = bundle.entry or []
    fhir_patient = FhirPatient.model_validate(entry.resource.model_dump(mode="json"))
    assert fhir_patient.name[0].family == "Trần" and fhir_patient.gender == "female"
    assert _fhir(server, "Patient", identifier=wrong)["total"] == 0
    imaging = Bundle.model_validate(_fhir(server, "ImagingStudy",
                                          **{"patient.identifier": right}))
    assert imaging.total == 3
    for e in imaging.entry or []:
        ImagingStudy.model_validate(e.resource.model_dump(mode="json"))
        assert e.resource.subject.reference == f"Patient/{patient_id_of(right, '')}"

    # the stored blobs: byte for byte what storescu sent
    _assert_blobs_unchanged(settings, moved)

    # audited under both patients, with the actor; history with the values before
    for patient_id in (wrong, right):
        events = server.http.get("/admin/audit", params={
            "patient_id": patient_id, "action": "patient-merge"}).json()
        assert len(events) == 1, events
        assert events[0]["actor"].startswith("system:cli-patient-merge")
        assert wrong in events[0]["detail"] and right in events[0]["detail"]
    history = server.http.get(f"/admin/patients/{right}/history").json()
    (merge,) = history
    assert merge["kind"] == "merge" and merge["source_patient_id"] == wrong
    assert merge["before"]["source"]["PatientName"] == "Tran^Binh"
    assert set(merge["study_uids"]) == set(moved)
    assert server.http.get(f"/admin/patients/{wrong}/history").json() == history


def test_instances_arriving_later_with_the_old_id_are_filed_under_the_target(
    server: ServerProcess, tmp_path: Path
) -> None:
    right, wrong = _unique("BN-RIGHT"), _unique("BN-WRONG")
    _store_studies(server, tmp_path, 1, instances=1, patient_id=right,
                   patient_name="Lê^Văn Cường")
    _store_studies(server, tmp_path, 1, instances=1, patient_id=wrong,
                   patient_name="Le^Cuong")
    merged = server.http.post("/admin/patients/merge", json={
        "source": {"patient_id": wrong}, "target": {"patient_id": right},
        "reason": "wrong ID at the modality"})
    assert merged.status_code == 200, merged.text
    assert merged.json()["instances_corrected"] == 1
    late = _store_studies(server, tmp_path, 1, instances=1, patient_id=wrong,
                          patient_name="Le^Cuong")
    client = DICOMwebClient(url=server.dicomweb_url, headers=server.auth)
    assert len(client.search_for_studies(search_filters={"PatientID": right})) == 3
    (study,) = late
    (sop,) = late[study]
    (model,) = client.retrieve_study_metadata(study)
    assert (_value(model, "00100020"), _name(model)) == (right, "Lê^Văn Cường")
    (got,) = _c_get(server, study).values()
    assert (got.PatientID, str(got.PatientName)) == (right, "Lê^Văn Cường")
    # the target keeps its own name: the late arrival did not overwrite it
    (patient,) = _findscu(server, tmp_path, "PATIENT", PatientID=right, PatientName="")
    assert str(patient.PatientName) == "Lê^Văn Cường"
    # the old key names where it went
    gone = server.http.get(f"/admin/patients/{wrong}/history").json()
    assert gone[0]["patient_id"] == right


def test_update_demographics_with_vietnamese_name_is_found_accent_free_everywhere(
    recon: tuple[ServerProcess, Settings], tmp_path: Path
) -> None:
    server, settings = recon
    pid = _unique("BN-UPD")
    studies = _store_studies(server, tmp_path, 1, patient_id=pid, patient_name="NGUYEN^AN",
                             PatientBirthDate="19800101", PatientSex="F")
    response = server.http.patch(f"/admin/patients/{pid}", json={
        "changes": {"PatientName": "Nguyễn^Văn Ân", "PatientSex": "M",
                    "PatientBirthDate": "19800110"},
        "reason": "sai tên khi đăng ký"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["before"]["PatientName"] == "NGUYEN^AN"
    assert body["after"]["PatientName"] == "Nguyễn^Văn Ân"
    assert body["instances_corrected"] == 2

    client = DICOMwebClient(url=server.dicomweb_url, headers=server.auth)
    found = client.search_for_studies(search_filters={"PatientName": "nguyen^van an"},
                                      fuzzymatching=True)
    assert pid in {_value(s, "00100020") for s in found}
    assert client.search_for_studies(search_filters={"PatientName": "NGUYEN^AN",
                                                     "PatientID": pid}) == []
    (study,) = studies
    (d,) = _findscu(server, tmp_path, "STUDY", PatientID=pid, PatientName="",
                    PatientSex="", PatientBirthDate="")
    assert (str(d.PatientName), d.PatientSex, d.PatientBirthDate) == (
        "Nguyễn^Văn Ân", "M", "19800110")
    for sop, data in studies[study].items():
        series = str(dcmread(io.BytesIO(data)).SeriesInstanceUID)
        got = client.retrieve_instance(study, series, sop)
        assert (str(got.PatientName), got.PatientSex, got.SpecificCharacterSet) == (
            "Nguyễn^Văn Ân", "M", "ISO_IR 192")
    bundle = _fhir(server, "Patient", name="nguyen van an")
    assert patient_id_of(pid, "") in {e["resource"]["id"] for e in bundle["entry"]}
    _assert_blobs_unchanged(settings, studies)

    (entry,) = server.http.get(f"/admin/patients/{pid}/history").json()
    assert entry["kind"] == "update" and entry["reason"] == "sai tên khi đăng ký"
    assert entry["before"]["PatientSex"] == "F" and entry["after"]["PatientSex"] == "M"
    (event,) = server.http.get("/admin/audit", params={
        "patient_id": pid, "action": "patient-update"}).json()
    assert "'NGUYEN^AN' -> 'Nguyễn^Văn Ân'" in event["detail"]
    assert event["actor"].startswith("token:")

    # the CLI corrects again; a new instance with the old name does not undo it
    done = server.cli("patient", "update", pid, "--name", "Nguyễn^Văn An", "--reason", "dấu")
    assert done.returncode == 0, done.stderr
    _store_studies(server, tmp_path, 1, instances=1, patient_id=pid,
                   patient_name="NGUYEN^AN")
    names = {_name(s) for s in client.search_for_studies(search_filters={"PatientID": pid})}
    assert names == {"Nguyễn^Văn An"}
    listed = server.cli("patient", "history", pid)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and "sai tên khi đăng ký" in lines[0] and "\tdấu\t" in lines[1]
    assert '"PatientName": "Nguyễn^Văn Ân"' in lines[1]  # the value before, kept


def test_refusals_say_what_was_wrong_and_change_nothing(
    server: ServerProcess, tmp_path: Path
) -> None:
    pid = _unique("BN-REF")
    _store_studies(server, tmp_path, 1, instances=1, patient_id=pid, patient_name="A^B")
    clinician = server.create_token(_unique("recon-clinician").lower(), "clinician")
    headers = {"Authorization": f"Bearer {clinician}"}
    with httpx.Client(base_url=server.http_url, headers=headers, timeout=30) as http:
        refused = http.post("/admin/patients/merge", json={
            "source": {"patient_id": pid}, "target": {"patient_id": "X"}, "reason": "r"})
        assert refused.status_code == 403
        assert http.patch(f"/admin/patients/{pid}", json={
            "changes": {"PatientName": "C^D"}, "reason": "r"}).status_code == 403
        assert http.get(f"/admin/patients/{pid}/history").status_code == 403
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("post", "/admin/patients/merge", {"source": {"patient_id": pid},
         "target": {"patient_id": pid}, "reason": "r"}, 400, "into itself"),
        ("post", "/admin/patients/merge", {"source": {"patient_id": "NO-SUCH-1"},
         "target": {"patient_id": pid}, "reason": "r"}, 404, "NO-SUCH-1"),
        ("patch", f"/admin/patients/{pid}", {"changes": {"PatientID": "Z"}, "reason": "r"},
         400, "PatientID"),
        ("patch", f"/admin/patients/{pid}", {"changes": {"PatientBirthDate": "19801345"},
         "reason": "r"}, 400, "19801345"),
        ("patch", f"/admin/patients/{pid}", {"changes": {"PatientSex": "X"},
         "reason": "r"}, 400, "'X'"),
        ("patch", "/admin/patients/NO-SUCH-2", {"changes": {"PatientSex": "M"},
         "reason": "r"}, 404, "NO-SUCH-2"),
    ]
    for method, path, body, status, says in cases:
        response = server.http.request(method.upper(), path, json=body)
        assert response.status_code == status, (path, body, response.text)
        assert says in response.text, response.text
    (d,) = _findscu(server, tmp_path, "STUDY", PatientID=pid, PatientName="")
    assert str(d.PatientName) == "A^B"
    assert server.http.get(f"/admin/patients/{pid}/history").json() == []
    assert server.http.get("/admin/patients/NO-SUCH-3/history").status_code == 404
    events = server.http.get("/admin/audit", params={"patient_id": pid}).json()
    assert not any(e["action"].startswith("patient-") and e["outcome"] == "success"
                   for e in events if e["action"] != "patient-history")
    failed = server.cli("patient", "merge", pid, pid, "--reason", "r")
    assert failed.returncode == 2 and "into itself" in failed.stderr


# ---------------------------------------------------------------- in process
def test_core_refuses_without_the_reconcile_permission(archive: Archive) -> None:
    archive.ingest(make_instance(patient_id="P-CORE-1"))
    clinician = Principal("user", "dr.hoa", Role.CLINICIAN, "127.0.0.1")
    with pytest.raises(Forbidden):
        archive.merge_patients(("P-CORE-1", ""), ("P-CORE-2", ""), reason="r",
                               principal=clinician)
    with pytest.raises(Forbidden):
        archive.update_patient(("P-CORE-1", ""), {"PatientSex": "M"}, reason="r",
                               principal=clinician)
    emr = Principal("token", "his", Role.EMR, "127.0.0.1")
    done = archive.update_patient(("P-CORE-1", ""), {"PatientSex": "M"}, reason="r",
                                  principal=emr)
    assert done.after["PatientSex"] == "M"


def test_core_merge_rules(archive: Archive) -> None:
    archive.ingest(make_instance(patient_id="P-A", IssuerOfPatientID="BV1"))
    archive.ingest(make_instance(patient_id="P-A", IssuerOfPatientID="BV2"))
    with pytest.raises(InvalidRequest, match="into itself"):
        archive.merge_patients(("P-A", "BV1"), ("P-A", "BV1"), reason="r")
    with pytest.raises(NotFound, match="'P-A' \\(issuer none\\)"):
        archive.merge_patients(("P-A", ""), ("P-A", "BV1"), reason="r")
    with pytest.raises(InvalidRequest, match="reason"):
        archive.merge_patients(("P-A", "BV2"), ("P-A", "BV1"), reason=" ")
    # a restricted source makes the target restricted: its studies stay guarded
    archive.restrict_patient("P-A", "BV2", "VIP")
    done = archive.merge_patients(("P-A", "BV2"), ("P-A", "BV1"), reason="same person")
    assert done.restriction_carried
    assert {(r.patient_id, r.issuer) for r in archive.restricted_patients()} >= {
        ("P-A", "BV1")}
    with pytest.raises(NotFound, match="was merged into"):
        archive.update_patient(("P-A", "BV2"), {"PatientSex": "F"}, reason="r")
    assert archive.counts()["patients"] == 1
    # merging again into a third patient carries the alias along
    archive.ingest(make_instance(patient_id="P-C"))
    archive.merge_patients(("P-A", "BV1"), ("P-C", ""), reason="again")
    late = make_instance(patient_id="P-A", IssuerOfPatientID="BV2")
    archive.ingest(late)
    assert {r.patient_id for r in archive.iter_instance_records()} == {"P-C"}


def test_served_bytes_have_the_corrected_header_and_the_stored_pixels(
    archive: Archive
) -> None:
    data = make_instance(patient_id="P-S", patient_name="Old^Name", frames=2)
    result = archive.ingest(data)
    archive.update_patient(("P-S", ""), {"PatientName": "Phạm^Thị Mỹ"}, reason="r")
    (record,) = archive.instances(result.study_instance_uid)
    served = archive.serve_instance(record)
    body = b"".join(served.chunks)
    assert len(body) == served.length
    assert body == archive.read_instance(record)
    with archive.open_instance(record) as fh:
        assert fh.read() == body
    ds, original = dcmread(io.BytesIO(body)), dcmread(io.BytesIO(data))
    assert str(ds.PatientName) == "Phạm^Thị Mỹ" and ds.PixelData == original.PixelData
    assert body.endswith(data[-len(original.PixelData):])  # pixels copied through
    assert hashlib.sha256(archive.store.read(record.blob_key)).hexdigest() == record.sha256
