"""Modality Worklist: items through the admin API and the CLI, queried with findscu -W
and pynetdicom as a modality would."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence
from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore

from conftest import ServerProcess
from dimse_peers import run_dcmtk
from minipacs.worklist import DETACHED_STUDY_MANAGEMENT
from node_tools import minipacs_cli, server_settings


def _station() -> str:
    return "CT" + uuid.uuid4().hex[:8].upper()


def _schedule(server: ServerProcess, **fields: Any) -> dict[str, Any]:
    body = {"patient_id": "WL-1", "patient_name": "Nguyễn^Văn An", "modality": "CT",
            "scheduled_start_date": "20250301", "scheduled_start_time": "0900",
            "accession_number": "ACC-WL-1", "requested_procedure_description": "CT ngực",
            **fields}
    response = httpx.post(f"{server.http_url}/admin/worklist", json=body, headers=server.auth)
    assert response.status_code == 201, response.text
    item: dict[str, Any] = response.json()
    return item


def _mwl_find(server: ServerProcess, identifier: Dataset, calling: str = "MODALITY"
              ) -> list[Dataset]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    results, final = [], None
    try:
        for status, ds in assoc.send_c_find(identifier, ModalityWorklistInformationFind):
            if status.Status in (0xFF00, 0xFF01):
                results.append(ds)
            else:
                final = status
    finally:
        assoc.release()
    assert final is not None and final.Status == 0x0000, final
    return results


def _sps_query(station: str = "", date: str = "", modality: str = "") -> Dataset:
    sps = Dataset()
    sps.ScheduledStationAETitle = station
    sps.ScheduledProcedureStepStartDate = date
    sps.ScheduledProcedureStepStartTime = ""
    sps.Modality = modality
    sps.ScheduledProcedureStepID = ""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = ""
    ds.PatientID = ""
    ds.AccessionNumber = ""
    ds.StudyInstanceUID = ""
    ds.RequestedProcedureDescription = ""
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


def test_findscu_worklist_matches_station_date_range_and_modality(
    server: ServerProcess
) -> None:
    station = _station()
    wanted = _schedule(server, scheduled_station_ae_title=station)
    _schedule(server, scheduled_station_ae_title=station, scheduled_start_date="20250310")
    _schedule(server, scheduled_station_ae_title=station, modality="MR")
    _schedule(server, scheduled_station_ae_title=_station())
    result = run_dcmtk(
        "findscu", "-W", "-aec", server.ae_title,
        "-k", "SpecificCharacterSet=ISO_IR 192", "-k", "PatientName", "-k", "PatientID",
        "-k", "AccessionNumber", "-k", "StudyInstanceUID",
        "-k", f"ScheduledProcedureStepSequence[0].ScheduledStationAETitle={station}",
        "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate="
        "20250301-20250305",
        "-k", "ScheduledProcedureStepSequence[0].Modality=CT",
        "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
        "127.0.0.1", str(server.dicom_port),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("Find Response:") == 1, output
    assert wanted["study_instance_uid"] in output
    assert wanted["scheduled_procedure_step_id"] in output
    assert "Nguyễn^Văn An" in output


def test_worklist_by_patient_id_returns_the_whole_step_for_an_empty_sequence(
    server: ServerProcess
) -> None:
    patient_id = "WLP-" + uuid.uuid4().hex[:8]
    item = _schedule(server, patient_id=patient_id, scheduled_station_ae_title=_station(),
                     patient_name="Đặng^Quốc Bảo")
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 192"
    query.PatientID = patient_id
    query.PatientName = ""
    query.ScheduledProcedureStepSequence = Sequence([])
    (found,) = _mwl_find(server, query)
    assert str(found.PatientName) == "Đặng^Quốc Bảo"
    (sps,) = found.ScheduledProcedureStepSequence
    assert sps.Modality == "CT"
    assert sps.ScheduledStationAETitle == item["scheduled_station_ae_title"]
    assert sps.ScheduledProcedureStepStartDate == "20250301"
    assert sps.ScheduledProcedureStepStatus == "SCHEDULED"


def test_updated_and_cancelled_items_show_as_such(server: ServerProcess) -> None:
    station = _station()
    item = _schedule(server, scheduled_station_ae_title=station)
    step = item["scheduled_procedure_step_id"]
    body = {k: v for k, v in item.items()
            if k not in ("scheduled_procedure_step_id", "status")}
    body["scheduled_start_time"] = "1430"
    updated = httpx.put(f"{server.http_url}/admin/worklist/{step}", json=body, headers=server.auth)
    assert updated.status_code == 200, updated.text
    (found,) = _mwl_find(server, _sps_query(station))
    assert found.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == "1430"
    cancelled = httpx.delete(f"{server.http_url}/admin/worklist/{step}", headers=server.auth)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    assert _mwl_find(server, _sps_query(station)) == []
    listed = httpx.get(f"{server.http_url}/admin/worklist",
                       params={"include_cancelled": "true"}, headers=server.auth).json()
    assert any(i["scheduled_procedure_step_id"] == step for i in listed)


def test_worklist_api_refuses_bad_items_saying_why(server: ServerProcess) -> None:
    response = httpx.post(f"{server.http_url}/admin/worklist",
                          json={"patient_id": "X", "scheduled_start_date": "2025-03-01"},
                              headers=server.auth)
    assert response.status_code == 400
    assert "2025-03-01" in response.json()["error"]
    assert httpx.delete(f"{server.http_url}/admin/worklist/NOPE",
                        headers=server.auth).status_code == 404


def test_cli_schedules_and_cancels_items_the_running_server_offers(
    empty_server: ServerProcess
) -> None:
    station = _station()

    settings = server_settings(empty_server)  # the server's own index, SQLite or PostgreSQL

    def minipacs(*args: str) -> subprocess.CompletedProcess[str]:
        return minipacs_cli(settings, "worklist", *args)

    added = minipacs("add", "CLI-PAT", "--patient-name", "Trần^Thị Bích Ngọc",
                     "--modality", "MR", "--station-ae", station, "--date", "20250402",
                     "--time", "0815", "--accession", "ACC-CLI", "--step-id", "SPS-CLI-1")
    assert added.returncode == 0, added.stdout + added.stderr
    assert "SPS-CLI-1" in minipacs("list").stdout
    (found,) = _mwl_find(empty_server, _sps_query(station, date="20250402"))
    assert str(found.PatientName) == "Trần^Thị Bích Ngọc"
    assert found.AccessionNumber == "ACC-CLI"
    assert minipacs("cancel", "SPS-CLI-1").returncode == 0
    assert _mwl_find(empty_server, _sps_query(station)) == []
    bad = minipacs("add", "CLI-PAT", "--date", "tomorrow")
    assert bad.returncode == 2 and "tomorrow" in bad.stdout
    # The CLI is a door like the others: each change is an audited order event.
    events = empty_server.http.get("/admin/audit", params={"patient_id": "CLI-PAT"}).json()
    actions = [(e["action"], e["actor"]) for e in events]
    assert any(a == "order-create" and "cli-worklist-add" in who for a, who in actions), actions
    assert any(a == "order-cancel" and "cli-worklist-cancel" in who for a, who in actions), \
        actions


def _coded_item(server: ServerProcess, station: str, code_value: str, meaning: str,
                **fields: Any) -> dict[str, Any]:
    return _schedule(server, scheduled_station_ae_title=station, **{
        "referenced_studies": [{"sop_instance_uid": "1.2.826.0.1.3680043.8.498." +
                                str(uuid.uuid4().int)[:20]}],
        "requested_procedure_codes": [
            {"code_value": code_value, "coding_scheme_designator": "LN",
             "code_meaning": meaning},
            {"code_value": "RPID-" + code_value[:5], "coding_scheme_designator": "99BV",
             "code_meaning": "mã nội bộ"}],
        "scheduled_protocol_codes": [{"code_value": "P-" + code_value[:5],
                                      "coding_scheme_designator": "99BV",
                                      "code_meaning": "Giao thức " + meaning}],
        **fields})


def _findscu_worklist(server: ServerProcess, tmp_path: Path, *keys: str) -> list[Dataset]:
    out = tmp_path / f"wl{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    args: list[str] = []
    for key in keys:
        args += ["-k", key]
    result = run_dcmtk("findscu", "-W", "-aec", server.ae_title, "-X", "-od", str(out),
                       "-k", "SpecificCharacterSet=ISO_IR 192", "-k", "PatientID",
                       "-k", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
                       *args, "127.0.0.1", str(server.dicom_port))
    assert result.returncode == 0, result.stdout + result.stderr
    return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


def test_findscu_worklist_matches_and_returns_referenced_study_and_code_sequences(
    server: ServerProcess, tmp_path: Path
) -> None:
    station = _station()
    chest = _coded_item(server, station, "24627-2", "CT ngực")
    head = _coded_item(server, station, "24725-4", "CT đầu")
    scoped = f"ScheduledProcedureStepSequence[0].ScheduledStationAETitle={station}"

    by_code = _findscu_worklist(server, tmp_path, scoped,
                                "RequestedProcedureCodeSequence[0].CodeValue=24627-2",
                                "RequestedProcedureCodeSequence[0].CodingSchemeDesignator=LN",
                                "RequestedProcedureCodeSequence[0].CodeMeaning",
                                "ReferencedStudySequence")
    (found,) = by_code
    assert found.PatientID == chest["patient_id"]
    (code,) = found.RequestedProcedureCodeSequence  # the matching item, asked attributes
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
        "24627-2", "LN", "CT ngực")
    (ref,) = found.ReferencedStudySequence  # an empty sequence: the whole stored items
    assert ref.ReferencedSOPInstanceUID == chest["referenced_studies"][0]["sop_instance_uid"]
    assert ref.ReferencedSOPClassUID == "1.2.840.10008.3.1.2.3.1"

    # Keys of one item must match in the same stored item: 24627-2 is LN, not 99BV.
    assert _findscu_worklist(
        server, tmp_path, scoped, "RequestedProcedureCodeSequence[0].CodeValue=24627-2",
        "RequestedProcedureCodeSequence[0].CodingSchemeDesignator=99BV") == []

    by_reference = _findscu_worklist(
        server, tmp_path, "ReferencedStudySequence[0].ReferencedSOPInstanceUID="
        + head["referenced_studies"][0]["sop_instance_uid"])
    assert [ds.PatientID for ds in by_reference] == [head["patient_id"]]

    # ScheduledProtocolCodeSequence sits inside the step: nested sequence matching.
    by_protocol = _findscu_worklist(
        server, tmp_path, scoped,
        "ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0].CodeMeaning="
        "Giao thức CT đ*",
        "RequestedProcedureCodeSequence")
    (found,) = by_protocol
    assert found.PatientID == head["patient_id"]
    (step,) = found.ScheduledProcedureStepSequence
    assert step.ScheduledStationAETitle == station
    (protocol,) = step.ScheduledProtocolCodeSequence  # only the attribute asked for
    assert list(protocol.keys()) == [0x00080104]
    assert protocol.CodeMeaning == "Giao thức CT đầu"
    assert [c.CodeValue for c in found.RequestedProcedureCodeSequence] == [
        "24725-4", "RPID-24725"]


def test_worklist_item_sequences_through_the_api_and_pynetdicom(server: ServerProcess) -> None:
    station = _station()
    item = _coded_item(server, station, "30745-4", "XQ ngực")
    fetched = httpx.get(f"{server.http_url}/admin/worklist/"
                        f"{item['scheduled_procedure_step_id']}", headers=server.auth).json()
    assert fetched["requested_procedure_codes"][0]["code_meaning"] == "XQ ngực"
    assert fetched["scheduled_protocol_codes"] == item["scheduled_protocol_codes"]
    query = _sps_query(station)
    query.ReferencedStudySequence = Sequence([])
    query.RequestedProcedureCodeSequence = Sequence([Dataset()])
    (found,) = _mwl_find(server, query)
    assert [c.CodeValue for c in found.RequestedProcedureCodeSequence] == [
        "30745-4", "RPID-30745"]
    assert len(found.ReferencedStudySequence) == 1

    bad = httpx.post(f"{server.http_url}/admin/worklist", json={
        "patient_id": "X", "requested_procedure_codes": [{"code_value": "1",
                                                          "coding_scheme_designator": ""}],
        "referenced_studies": [{"sop_instance_uid": "not-a-uid"}]}, headers=server.auth)
    assert bad.status_code == 400
    assert "coding scheme" in bad.json()["error"] and "not-a-uid" in bad.json()["error"]


def test_cli_schedules_an_item_with_codes_and_a_referenced_study(
    empty_server: ServerProcess
) -> None:
    station, referenced = _station(), "1.2.826.0.1.3680043.8.498.4711"
    added = minipacs_cli(server_settings(empty_server), "worklist", "add", "CLI-SEQ",
                         "--station-ae", station, "--procedure-code", "24627-2", "LN",
                         "CT Chest", "--protocol-code", "P1", "99BV", "Không cản quang",
                         "--referenced-study", referenced)
    assert added.returncode == 0, added.stdout + added.stderr
    query = _sps_query(station)
    query.ReferencedStudySequence = Sequence([Dataset()])
    query.ReferencedStudySequence[0].ReferencedSOPInstanceUID = referenced
    query.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = Sequence([])
    (found,) = _mwl_find(empty_server, query)
    assert found.PatientID == "CLI-SEQ"
    assert found.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[
        0].CodeMeaning == "Không cản quang"


def test_default_class_of_a_referenced_study_is_detached_study_management() -> None:
    assert UID(DETACHED_STUDY_MANAGEMENT).name == "Detached Study Management SOP Class"
