"""The benchmark command runs end to end in its smoke mode: both servers, every
measurement present and positive. A check that the command works, not a timed test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from minipacs.config import AUTO_WORKERS_MAX

# The benchmark starts its own servers on the defaults, whatever --db/--blobs say.
pytestmark = pytest.mark.door_only  # runs in the embedded pass only (conftest.py)

REPO = Path(__file__).resolve().parents[1]


def test_bench_smoke_measures_every_key_on_both_servers(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--repeat", "3",
         "--cache", str(tmp_path / "cache"), "--json", str(out)],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO / "src"), os.environ.get("PYTHONPATH", "")])})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    # Where the servers stored, as util-linux sees the temp folder's file system.
    fstype, source = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", tempfile.gettempdir()],
        capture_output=True, text=True, check=True).stdout.split()
    assert report["machine"]["storage"].startswith(f"{fstype} on {source}"), report["machine"]
    # minipacs ran on its defaults: one worker per core, at most AUTO_WORKERS_MAX.
    assert report["minipacs_workers"] == min(len(os.sched_getaffinity(0)), AUTO_WORKERS_MAX)
    measurements = report["measurements"]
    for key in ("ingest_ct_storescu_1", "ingest_small_pynetdicom_4", "cpu_per_ct_instance",
                "cfind", "cfind_findscu", "echo", "qido", "metadata_cold", "metadata_warm",
                "series_retrieve", "frame", "rendered", "thumbnail", "cmove", "cget",
                "peak_rss"):
        assert key in measurements, f"{key} missing from {sorted(measurements)}"
    for key, row in measurements.items():
        if key.startswith("cpu_per_"):
            # CPU time comes in clock ticks (10 ms): a smoke corpus of eight small
            # images can cost a fast server less than one tick.
            for server in ("minipacs", "Orthanc"):
                assert row.get(server, -1) >= 0, f"{key}: {server} gave {row.get(server)!r}"
            continue
        for server in ("minipacs", "Orthanc"):
            assert row.get(server, 0) > 0, f"{key}: {server} gave {row.get(server)!r}"
        if key.startswith("ingest_"):
            for ceiling in ("storescp", "pynetdicom null SCP"):
                assert row.get(ceiling, 0) > 0, f"{key}: {ceiling} gave {row.get(ceiling)!r}"
        assert row["ratio"] > 0
    assert "C-FIND study by PatientID" in done.stdout
    assert "findscu, per query" in done.stdout
