"""Nothing acknowledged is lost: kill -9 under load, and two nodes sharing one index and
one blob store."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE

from backends import Backends
from conftest import ServerProcess, open_test_archive
from dimse_peers import dataset_bytes
from factories import make_instance
from minipacs.integrity import verify
from node_tools import server_settings


def push(server: ServerProcess, files: list[Path], acknowledged: list[Path],
         on_ack: threading.Event | None = None, ack_goal: int = 0) -> None:
    """C-STORE `files` on one association; append each one answered Success (0000).

    Stops quietly when the server goes away: a crash is what some tests are about.
    """
    ae = AE(ae_title="TESTPUSH")
    # A killed server closes its sockets, but a peer caught mid-handshake would wait out
    # pynetdicom's 30 s defaults; these bound how long a crash keeps the test waiting.
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    for path in files[:1]:
        ds = dcmread(path, stop_before_pixels=True)
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    if not assoc.is_established:
        return
    try:
        for path in files:
            if not assoc.is_established:
                return
            status = assoc.send_c_store(path)  # sent from the file as encoded, not re-encoded
            if status and status.Status == 0x0000:
                acknowledged.append(path)
                if on_ack is not None and len(acknowledged) >= ack_goal:
                    on_ack.set()
    finally:
        if assoc.is_established:
            assoc.release()


def write_instances(folder: Path, count: int, **kwargs: object) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for _ in range(count):
        sop = generate_uid()
        path = folder / f"{sop}.dcm"
        path.write_bytes(make_instance(sop_uid=sop, **kwargs))  # type: ignore[arg-type]
        paths.append(path)
    return paths


def test_kill_9_while_four_clients_push_loses_nothing_acknowledged(
    empty_server: ServerProcess, tmp_path: Path
) -> None:
    batches = [write_instances(tmp_path / f"client{n}", 15) for n in range(4)]
    acknowledged: list[Path] = []
    enough = threading.Event()
    clients = [threading.Thread(target=push, args=(empty_server, files, acknowledged, enough, 16))
               for files in batches]
    for client in clients:
        client.start()
    try:
        assert enough.wait(120), "the server acknowledged too little to crash it mid-load"
        empty_server.stop(kill=True)  # SIGKILL: no shutdown code runs
    finally:
        for client in clients:
            client.join(60)
    sent_total = sum(len(b) for b in batches)
    assert 16 <= len(acknowledged) < sent_total, "the crash must interrupt the pushes"

    empty_server.start()  # same data dir, index and blob store
    archive = open_test_archive(server_settings(empty_server))
    try:
        for path in acknowledged:
            sop = path.stem
            (record,) = archive.instances(sop_instance_uid=sop)
            assert dataset_bytes(archive.read_instance(record)) == dataset_bytes(
                path.read_bytes()), f"{sop} changed"
        report = verify(archive)
        assert report.missing == [] and report.corrupt == []  # no row without its blob
    finally:
        archive.close()
    url = f"{empty_server.dicomweb_url}/instances?SOPInstanceUID={acknowledged[0].stem}"
    assert len(httpx.get(url, timeout=30, headers=empty_server.auth).json()) == 1


@pytest.fixture
def two_nodes(backends: Backends, tmp_path: Path) -> Iterator[tuple[ServerProcess, ...]]:
    """Two `minipacs serve` processes on one PostgreSQL database and one S3 bucket."""
    shared = {"database_url": backends.postgres.create_database(), **backends.s3_settings()}
    nodes = []
    try:
        for name in ("node-a", "node-b"):
            (tmp_path / name).mkdir()
            nodes.append(ServerProcess(
                tmp_path / name, ["--no-load-samples", *backends.server_args(shared)]).start())
        yield tuple(nodes)
    finally:
        for node in nodes:
            node.stop()


def test_two_nodes_ingesting_the_same_study_concurrently_keep_one_copy_of_everything(
    two_nodes: tuple[ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    node_a, node_b = two_nodes
    study = generate_uid()
    patient = {"patient_id": "TWO-NODES", "patient_name": "Võ^Thị Sáu", "study_uid": study}
    ct = write_instances(tmp_path / "ct", 12, modality="CT", series_uid=generate_uid(),
                         **patient)
    mr = write_instances(tmp_path / "mr", 12, modality="MR", series_uid=generate_uid(),
                         **patient)
    own_a = write_instances(tmp_path / "own-a", 6)
    own_b = write_instances(tmp_path / "own-b", 6)
    acked: list[list[Path]] = [[] for _ in range(6)]
    # Two modalities send one study through different nodes, and both resend the
    # other's series (a retry after a timeout, a second routing rule...).
    jobs = [(node_a, ct), (node_b, mr), (node_b, ct[::-1]), (node_a, mr[::-1]),
            (node_a, own_a), (node_b, own_b)]
    senders = [threading.Thread(target=push, args=(node, files, acked[i]))
               for i, (node, files) in enumerate(jobs)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(180)
    assert [len(a) for a in acked] == [len(files) for _node, files in jobs]

    for node in (node_a, node_b):  # both nodes see everything, once
        counts = httpx.get(f"{node.http_url}/healthz", timeout=30, headers=node.auth).json()
        assert (counts["instances"], counts["series"]) == (36, 14)
        found = httpx.get(f"{node.dicomweb_url}/studies?PatientID=TWO-NODES", timeout=30,
                          headers=node.auth).json()
        assert len(found) == 1
        assert found[0]["00201208"]["Value"] == [24]
        assert sorted(found[0]["00080061"]["Value"]) == ["CT", "MR"]
    # Each node's spool (S3 storage) uploads in the background; reading node B's
    # instances through node A's settings needs them in S3.
    deadline = time.monotonic() + 120
    for node in (node_a, node_b):
        while httpx.get(f"{node.http_url}/admin/storage", timeout=30, headers=node.auth).json()[
                "pending_uploads"]:
            assert time.monotonic() < deadline, "spooled uploads never finished"
            time.sleep(0.1)  # polling for the uploads, not waiting on time
    archive = open_test_archive(server_settings(node_a))
    try:
        for path in ct + mr + own_a + own_b:
            (record,) = archive.instances(sop_instance_uid=path.stem)
            assert dataset_bytes(archive.read_instance(record)) == dataset_bytes(
                path.read_bytes())
        assert archive.counts()["patients"] == 2  # TWO-NODES and the factory default BN0001
        report = verify(archive)
        assert (report.missing, report.corrupt, report.orphans) == ([], [], [])
    finally:
        archive.close()
