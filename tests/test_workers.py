"""`minipacs serve --workers N`: several node processes on the same DICOM and HTTP ports,
and nothing acknowledged lost when one of them, or all, are killed."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backends import Backends
from conftest import ServerProcess, open_test_archive
from dimse_peers import dataset_bytes, run_dcmtk
from minipacs.config import AUTO_WORKERS_MAX, Settings
from minipacs.integrity import verify
from node_tools import server_settings
from test_access_and_tls import _certificate
from test_crash_and_nodes import push, write_instances

STORED_LINE = re.compile(r"\[pid (\d+)\] minipacs\.archive: stored (\S+)")


@pytest.fixture
def two_workers(tmp_path: Path, backends: Backends) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data",
                         ["--no-load-samples", "--workers", "2", *backends.server_args()])
    proc.data_dir.mkdir()
    proc.start()
    yield proc
    proc.stop()


def worker_pids(server: ServerProcess) -> list[int]:
    return [int(p) for p in json.loads((server.data_dir / "ready.json").read_text())
            ["worker_pids"]]


def storing_pids(server: ServerProcess) -> dict[str, int]:
    """SOP Instance UID -> pid of the worker that logged storing it."""
    return {sop: int(pid) for pid, sop in STORED_LINE.findall(server.log())}


def push_all(server: ServerProcess, batches: list[list[Path]], acknowledged: list[Path],
             enough: threading.Event | None = None, goal: int = 0) -> list[threading.Thread]:
    clients = [threading.Thread(target=push, args=(server, files, acknowledged, enough, goal))
               for files in batches]
    for client in clients:
        client.start()
    return clients


def assert_all_stored(server: ServerProcess, acknowledged: list[Path]) -> None:
    """Every acknowledged instance is indexed with its bytes; no row lacks its blob."""
    archive = open_test_archive(server_settings(server))
    try:
        for path in acknowledged:
            (record,) = archive.instances(sop_instance_uid=path.stem)
            assert dataset_bytes(archive.read_instance(record)) == dataset_bytes(
                path.read_bytes()), f"{path.stem} changed"
        report = verify(archive)
        assert report.missing == [] and report.corrupt == []
    finally:
        archive.close()


def test_two_workers_share_the_dicom_and_http_ports_and_both_serve(
    two_workers: ServerProcess, tmp_path: Path
) -> None:
    pids = worker_pids(two_workers)
    assert len(set(pids)) == 2
    batches = [write_instances(tmp_path / f"client{n}", 8) for n in range(4)]
    acknowledged: list[Path] = []
    for client in push_all(two_workers, batches, acknowledged):
        client.join(120)
    assert sorted(acknowledged) == sorted(p for b in batches for p in b)
    # The workers take connections from one queue, whichever is free first; more
    # associations until both have stored something (40 more all taken by one worker
    # would mean the other never accepts).
    extra = write_instances(tmp_path / "extra", 40)
    for path in extra:
        if set(storing_pids(two_workers).values()) == set(pids):
            break
        push(two_workers, [path], acknowledged)
    assert set(storing_pids(two_workers).values()) == set(pids), two_workers.log()[-3000:]
    answered_by: set[int] = set()
    for _ in range(40):  # a new connection each time, so each may land elsewhere
        answer = httpx.get(f"{two_workers.dicomweb_url}/instances", headers=two_workers.auth,
                           params={"limit": 1000}, timeout=30)
        assert answer.status_code == 200
        assert len(answer.json()) == len(acknowledged)  # both see one index
        answered_by.add(int(answer.headers["x-minipacs-worker"]))
        if answered_by == set(pids):
            break
    assert answered_by == set(pids)
    assert_all_stored(two_workers, acknowledged)


def test_serve_on_its_defaults_runs_one_worker_per_core(tmp_path: Path,
                                                      backends: Backends) -> None:
    """`workers` 0, the default: one worker per core this process may run on, at most
    AUTO_WORKERS_MAX, so a site gets its cores without sizing anything (1: one process)."""
    cores = len(os.sched_getaffinity(0))
    expected = min(cores, AUTO_WORKERS_MAX)
    assert Settings.model_fields["workers"].default == 0
    assert Settings(data_dir=tmp_path, workers=0).worker_processes() == expected
    assert Settings(data_dir=tmp_path, workers=1).worker_processes() == 1
    server = ServerProcess(tmp_path / "data", ["--no-load-samples", "--workers", "0",
                                               *backends.server_args()])
    server.data_dir.mkdir()
    server.start()
    try:
        ready = json.loads((server.data_dir / "ready.json").read_text())
        if expected == 1:  # a one-core machine: one process, no supervisor
            assert "worker_pids" not in ready
            return
        pids = set(worker_pids(server))
        assert len(pids) == expected, ready
        assert f"running with {expected} workers" in server.log()
        answered_by: set[int] = set()
        for _ in range(60):  # a new connection each time, so each may land elsewhere
            answer = httpx.get(f"{server.dicomweb_url}/studies", headers=server.auth,
                               timeout=30)
            assert answer.status_code == 200
            answered_by.add(int(answer.headers["x-minipacs-worker"]))
            if answered_by == pids:
                break
        assert answered_by == pids
    finally:
        server.stop()


def test_worker_killed_mid_store_loses_only_unacknowledged_and_is_replaced(
    two_workers: ServerProcess, tmp_path: Path
) -> None:
    batches = [write_instances(tmp_path / f"client{n}", 15) for n in range(4)]
    acknowledged: list[Path] = []
    enough = threading.Event()
    clients = push_all(two_workers, batches, acknowledged, enough, 12)
    try:
        assert enough.wait(120), "the workers acknowledged too little to crash one mid-load"
        # The worker that stored last is busy storing: kill it outright.
        victim = list(storing_pids(two_workers).values())[-1]
        os.kill(victim, signal.SIGKILL)
    finally:
        for client in clients:
            client.join(120)
    sent = sum(len(b) for b in batches)
    assert 12 <= len(acknowledged) < sent, "the kill must interrupt a push"
    # The supervisor starts a replacement; the service goes on on the same ports.
    deadline = time.monotonic() + 120
    while True:
        alive = [p for p in worker_pids_now(two_workers) if p != victim]
        if len(alive) == 2:
            break
        assert time.monotonic() < deadline, "no replacement worker after 120 s"
        time.sleep(0.1)  # polling for the replacement
    again = write_instances(tmp_path / "again", 6)
    push(two_workers, again, acknowledged)
    assert set(again) <= set(acknowledged)
    assert_all_stored(two_workers, acknowledged)


def test_a_stalled_worker_is_handed_no_associations_or_requests(
    two_workers: ServerProcess, tmp_path: Path
) -> None:
    """The workers accept from one queue: while one is stopped (SIGSTOP: a worker stuck
    in a long pause), every new association and HTTP connection is taken by the other,
    promptly. (Ports bound per worker with SO_REUSEPORT handed about half of them to
    the stopped worker, where they waited until the peer gave up.)"""
    stalled, live = worker_pids(two_workers)
    os.kill(stalled, signal.SIGSTOP)
    try:
        acknowledged: list[Path] = []
        files = write_instances(tmp_path / "one-by-one", 12)
        started = time.monotonic()
        for path in files:  # one association each: 12 chances to be handed to `stalled`
            push(two_workers, [path], acknowledged)
        assert acknowledged == files
        assert time.monotonic() - started < 30  # no association waited for a timeout
        assert set(storing_pids(two_workers).values()) == {live}
        for _ in range(12):  # a new connection each time
            answer = httpx.get(f"{two_workers.dicomweb_url}/instances",
                               headers=two_workers.auth, timeout=10)
            assert answer.status_code == 200
            assert int(answer.headers["x-minipacs-worker"]) == live
    finally:
        os.kill(stalled, signal.SIGCONT)
    answered_by: set[int] = set()
    for _ in range(60):  # and, resumed, it takes its share again
        answer = httpx.get(f"{two_workers.dicomweb_url}/instances", headers=two_workers.auth,
                           timeout=10)
        answered_by.add(int(answer.headers["x-minipacs-worker"]))
        if answered_by == {stalled, live}:
            break
    assert answered_by == {stalled, live}


def test_workers_share_the_tls_port_beside_the_plain_one(tmp_path: Path) -> None:
    """The TLS listener is handed to the workers as the plain one is: TLS peers are
    served on it by whichever worker is free, plain ones on the other port."""
    cert, key = _certificate(tmp_path)
    server = ServerProcess(tmp_path / "data", [
        "--no-load-samples", "--workers", "2", "--dicom-tls-cert", str(cert),
        "--dicom-tls-key", str(key), "--dicom-tls-port", "0"])
    server.data_dir.mkdir()
    server.start()
    try:
        tls_port = json.loads((server.data_dir / "ready.json").read_text())["dicom_tls_port"]
        for _ in range(4):  # new associations: either worker may take each
            secure = run_dcmtk("echoscu", "-to", "10", "+tla", "+cf", str(cert), "-aec",
                               server.ae_title, "127.0.0.1", str(tls_port))
            assert secure.returncode == 0, secure.stdout + secure.stderr
        plain = run_dcmtk("echoscu", "-to", "10", "-aec", server.ae_title, "127.0.0.1",
                          str(server.dicom_port))
        assert plain.returncode == 0, plain.stdout + plain.stderr
        refused = run_dcmtk("echoscu", "-to", "5", "-aec", server.ae_title, "127.0.0.1",
                            str(tls_port))
        assert refused.returncode != 0  # the TLS port speaks TLS only, in every worker
    finally:
        server.stop()


def worker_pids_now(server: ServerProcess) -> list[int]:
    """Pids of the supervisor's live worker processes (its children that multiprocessing
    spawned, not its resource tracker)."""
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    pids = [int(p) for p in children.read_text().split()] if children.exists() else []
    workers = []
    for pid in pids:
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.append(pid)
        except FileNotFoundError:  # exited meanwhile
            continue
    return workers


def test_concurrent_stores_acknowledged_survive_kill_9_of_every_process(
    two_workers: ServerProcess, tmp_path: Path
) -> None:
    """Group commit: instances acknowledged together (one shared transaction) are all
    there after the supervisor and both workers die at once."""
    batches = [write_instances(tmp_path / f"client{n}", 20, rows=16, columns=16)
               for n in range(8)]
    acknowledged: list[Path] = []
    enough = threading.Event()
    clients = push_all(two_workers, batches, acknowledged, enough, 24)
    try:
        assert enough.wait(120), "the workers acknowledged too little to crash them mid-load"
        assert two_workers.process is not None
        for pid in [two_workers.process.pid, *worker_pids_now(two_workers)]:
            os.kill(pid, signal.SIGKILL)
        two_workers.process.wait(30)
    finally:
        for client in clients:
            client.join(120)
    assert 24 <= len(acknowledged) < sum(len(b) for b in batches)
    two_workers.start()  # same data, index and blobs
    assert_all_stored(two_workers, acknowledged)
