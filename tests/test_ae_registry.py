"""The remote AE registry through its two doors: the admin HTTP API and `minipacs ae`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore

from conftest import ServerProcess
from dimse_peers import storescu
from factories import make_instance
from node_tools import minipacs_cli, server_settings
from preloaded import LAUNCHER
from retrieve_peers import start_store_scp


def _minipacs(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return LAUNCHER.run([*args, "--data-dir", str(data_dir), "--no-load-samples"],
                        dict(os.environ), timeout=60)


def test_admin_api_registers_lists_and_removes_an_ae(server: ServerProcess) -> None:
    url = f"{server.http_url}/admin/ae/WS-RADIANT"
    body = {"host": "10.0.0.7", "port": 104, "rights": ["query", "retrieve"],
            "ascii_responses": True}
    put = httpx.put(url, json=body, headers=server.auth)
    assert put.status_code == 200, put.text
    assert put.json()["rights"] == ["query", "retrieve"]
    listed = httpx.get(f"{server.http_url}/admin/ae", headers=server.auth).json()
    entry = next(ae for ae in listed if ae["ae_title"] == "WS-RADIANT")
    assert (entry["host"], entry["port"], entry["ascii_responses"]) == ("10.0.0.7", 104, True)
    assert httpx.delete(url, headers=server.auth).status_code == 204
    assert httpx.get(url, headers=server.auth).status_code == 404
    again = httpx.delete(url, headers=server.auth)
    assert again.status_code == 404 and "WS-RADIANT" in again.json()["error"]


def test_admin_api_refuses_impossible_entries_saying_why(server: ServerProcess) -> None:
    base = f"{server.http_url}/admin/ae"
    cases = [
        ("THIS-TITLE-IS-TOO-LONG", {"host": "h", "port": 104}, "16 characters"),
        ("OKTITLE", {"host": "h", "port": 70000}, "70000"),
        ("OKTITLE", {"host": "h", "port": 104, "rights": ["delete"]}, "delete"),
        ("OKTITLE", {"host": "h", "port": 104, "default_charset": "UTF-8"}, "UTF-8"),
    ]
    for title, body, fragment in cases:
        response = httpx.put(f"{base}/{title}", json=body, headers=server.auth)
        assert response.status_code == 400, (title, body, response.text)
        assert fragment in response.json()["error"]


def test_cli_ae_add_list_remove(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = _minipacs(data, "ae", "add", "CT-SIEMENS", "192.168.1.20", "104",
                      "--rights", "store,worklist,commitment", "--default-charset",
                      "ISO_IR 192")
    assert added.returncode == 0, added.stdout + added.stderr
    listed = _minipacs(data, "ae", "list")
    assert "CT-SIEMENS" in listed.stdout and "192.168.1.20:104" in listed.stdout
    assert "commitment,store,worklist" in listed.stdout
    bad = _minipacs(data, "ae", "add", "X", "h", "0")
    assert bad.returncode == 2 and "port 0" in bad.stdout
    assert _minipacs(data, "ae", "remove", "CT-SIEMENS").returncode == 0
    assert "CT-SIEMENS" not in _minipacs(data, "ae", "list").stdout
    missing = _minipacs(data, "ae", "remove", "CT-SIEMENS")
    assert missing.returncode == 1 and "not registered" in missing.stdout


def test_ae_added_with_the_cli_is_a_move_destination_for_the_running_server(
    empty_server: ServerProcess, tmp_path: Path
) -> None:
    scp = start_store_scp()
    try:
        added = minipacs_cli(server_settings(empty_server), "ae", "add", scp.ae_title,
                             "127.0.0.1", str(scp.port))
        assert added.returncode == 0, added.stdout + added.stderr
        study = generate_uid()
        path = tmp_path / "one.dcm"
        path.write_bytes(make_instance(study_uid=study))
        assert storescu(empty_server, path).returncode == 0
        ae = AE(ae_title="CLIMOVE")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate("127.0.0.1", empty_server.dicom_port,
                             ae_title=empty_server.ae_title)
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study
        statuses = [s.Status for s, _ in assoc.send_c_move(
            identifier, scp.ae_title, StudyRootQueryRetrieveInformationModelMove)]
        assoc.release()
    finally:
        scp.stop()
    assert statuses[-1] == 0x0000
    assert len(scp.received) == 1
