"""Modality Worklist: items through the admin API and the CLI, queried with findscu -W
and pynetdicom as a modality would."""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

import httpx
from pydicom import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore

from conftest import ServerProcess
from dimse_peers import run_dcmtk
from node_tools import minipacs_cli, server_settings


def _station() -> str:
    return "CT" + uuid.uuid4().hex[:8].upper()


def _schedule(server: ServerProcess, **fields: Any) -> dict[str, Any]:
    body = {"patient_id": "WL-1", "patient_name": "Nguyễn^Văn An", "modality": "CT",
            "scheduled_start_date": "20250301", "scheduled_start_time": "0900",
            "accession_number": "ACC-WL-1", "requested_procedure_description": "CT ngực",
            **fields}
    response = httpx.post(f"{server.http_url}/admin/worklist", json=body)
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
    updated = httpx.put(f"{server.http_url}/admin/worklist/{step}", json=body)
    assert updated.status_code == 200, updated.text
    (found,) = _mwl_find(server, _sps_query(station))
    assert found.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == "1430"
    cancelled = httpx.delete(f"{server.http_url}/admin/worklist/{step}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    assert _mwl_find(server, _sps_query(station)) == []
    listed = httpx.get(f"{server.http_url}/admin/worklist",
                       params={"include_cancelled": "true"}).json()
    assert any(i["scheduled_procedure_step_id"] == step for i in listed)


def test_worklist_api_refuses_bad_items_saying_why(server: ServerProcess) -> None:
    response = httpx.post(f"{server.http_url}/admin/worklist",
                          json={"patient_id": "X", "scheduled_start_date": "2025-03-01"})
    assert response.status_code == 400
    assert "2025-03-01" in response.json()["error"]
    assert httpx.delete(f"{server.http_url}/admin/worklist/NOPE").status_code == 404


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
