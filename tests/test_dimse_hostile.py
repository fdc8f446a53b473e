"""The DICOM port under broken and hostile peers (loopback only, bounded in count and time).

Every test holds real sockets against a real server process, checks that a normal client
is served meanwhile, and reads the server's memory and threads from /proc.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import struct
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from conftest import ServerProcess

pytestmark = pytest.mark.door_only  # runs in the embedded pass only (conftest.py)

MiB = 1024 * 1024
A_ABORT_INVALID_PARAMETER = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06])
# Bound on what holding the siege of the first test may add to the server's RSS
# (documented in docs/conformance.md §1.10).
SIEGE_RSS_BOUND = 120 * MiB


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS/VmHWM in bytes and Threads of a process, from /proc/PID/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
        elif key == "Threads":
            out[key] = int(value)
    return out


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)  # polling a condition with a deadline


def server_pid(server: ServerProcess) -> int:
    assert server.process is not None
    return server.process.pid


def connect_from(source: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes `sock` within `within` seconds (data read is dropped)."""
    deadline = time.monotonic() + within
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            if not sock.recv(4096):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def echo_seconds(server: ServerProcess) -> float:
    """Associate, C-ECHO, release: how long it took; fails unless status 0x0000."""
    ae = AE(ae_title="PROBE")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    started = time.monotonic()
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established, "C-ECHO probe could not associate"
    status = assoc.send_c_echo()
    assoc.release()
    assert status.Status == 0x0000
    return time.monotonic() - started


def find_study_count(server: ServerProcess) -> int:
    ae = AE(ae_title="PROBE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    statuses = [s.Status for s, _ in assoc.send_c_find(
        query, StudyRootQueryRetrieveInformationModelFind)]
    assoc.release()
    assert statuses[-1] == 0x0000, statuses
    return len(statuses) - 1


def start(tmp_path: Path, *args: str) -> ServerProcess:
    proc = ServerProcess(tmp_path / "data", ["--no-load-samples", *args])
    proc.data_dir.mkdir()
    return proc.start()


@pytest.fixture
def server_under_siege(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start(tmp_path, "--dicom-artim-timeout", "60", "--dicom-pdu-timeout", "60")
    yield proc
    proc.stop()


def test_cecho_answered_within_a_second_while_hundreds_of_hostile_sockets_are_held(
    server_under_siege: ServerProcess,
) -> None:
    server = server_under_siege
    pid = server_pid(server)
    echo_seconds(server)
    before = proc_status(pid)
    held: list[socket.socket] = []
    try:
        # 270 connections from 20 loopback addresses (under the per-address cap):
        # 200 that say nothing, 50 slow-loris that sent one byte of a PDU header,
        # 20 that sent a header claiming a 4 KiB A-ASSOCIATE-RQ and nothing more.
        for n in range(270):
            sock = connect_from(f"127.0.0.{2 + n % 20}", server.dicom_port)
            if 200 <= n < 250:
                sock.sendall(b"\x01")
            elif n >= 250:
                sock.sendall(struct.pack(">BBL", 0x01, 0, 4096))
            held.append(sock)
        # Three threads per held connection once all are accepted.
        wait_for(lambda: proc_status(pid)["Threads"] >= 3 * 270, 30,
                 "all 270 hostile connections accepted")
        times = [echo_seconds(server) for _ in range(10)]
        assert max(times) < 1.0, times
        during = proc_status(pid)
        assert during["VmRSS"] - before["VmRSS"] < SIEGE_RSS_BOUND, (before, during)
        assert find_study_count(server) == 0
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: proc_status(pid)["Threads"] <= before["Threads"] + 5, 20,
             "threads of the closed hostile connections gone")
    assert echo_seconds(server) < 1.0


@pytest.fixture
def strict_server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start(tmp_path, "--dicom-artim-timeout", "1", "--dicom-pdu-timeout", "1",
                 "--dicom-max-connections-per-address", "4",
                 "--dicom-max-pdu-length", "65536")
    yield proc
    proc.stop()


def test_silent_and_stalled_connections_are_closed_by_artim_and_pdu_timeouts(
    strict_server: ServerProcess,
) -> None:
    port = strict_server.dicom_port
    idle = connect_from("127.0.0.2", port)
    partial = connect_from("127.0.0.3", port)
    partial.sendall(struct.pack(">BBL", 0x01, 0, 1000) + b"\x00" * 10)
    loris = connect_from("127.0.0.4", port)
    opened = time.monotonic()
    try:
        # One byte every 0.2 s: each read makes progress, the PDU never completes.
        closed = False
        for _ in range(40):
            try:
                loris.sendall(b"\x01")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_by_server(loris, 0.2):
                closed = True
                break
        assert closed, "a slow-loris PDU outlived the 1 s PDU timeout"
        assert time.monotonic() - opened < 5
        assert closed_by_server(idle, 5), "a silent connection outlived ARTIM (1 s)"
        assert closed_by_server(partial, 5), "a half-sent PDU outlived the PDU timeout"
        assert time.monotonic() - opened >= 0.9  # not closed before its timers ran out
    finally:
        for sock in (idle, partial, loris):
            sock.close()
    assert echo_seconds(strict_server) < 1.0


def test_connections_over_the_per_address_cap_are_closed_at_once(
    strict_server: ServerProcess,
) -> None:
    port = strict_server.dicom_port
    held = [connect_from("127.0.0.9", port) for _ in range(4)]
    try:
        extra = connect_from("127.0.0.9", port)
        assert closed_by_server(extra, 0.5), "a fifth connection from one address was kept"
        extra.close()
        other = connect_from("127.0.0.10", port)
        assert not closed_by_server(other, 0.3)  # another address is not affected
        other.close()
        assert echo_seconds(strict_server) < 1.0
    finally:
        for sock in held:
            sock.close()


def test_pdu_longer_than_advertised_is_aborted_without_being_allocated(
    strict_server: ServerProcess,
) -> None:
    pid = server_pid(strict_server)
    echo_seconds(strict_server)
    before = proc_status(pid)
    # One PDU claiming 1 GiB, four claiming 256 MiB (the peer then sends a little).
    for n, length in enumerate((1024 * MiB, 256 * MiB, 256 * MiB, 256 * MiB, 256 * MiB)):
        sock = connect_from(f"127.0.2.{n + 1}", strict_server.dicom_port)
        sock.sendall(struct.pack(">BBL", 0x01, 0, length) + b"\x00" * 1024)
        sock.settimeout(5)
        answer = sock.recv(64)
        assert answer == A_ABORT_INVALID_PARAMETER
        assert closed_by_server(sock, 5)
        sock.close()

    # Inside an association: a P-DATA-TF longer than the 64 KiB we advertised.
    ae = AE(ae_title="BIGPDU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", strict_server.dicom_port,
                         ae_title=strict_server.ae_title)
    assert assoc.is_established
    assert assoc.acceptor.maximum_length == 65536
    raw = assoc.dul.socket.socket
    assert raw is not None
    raw.sendall(struct.pack(">BBL", 0x04, 0, 512 * MiB) + b"\x00" * 4096)
    wait_for(lambda: assoc.is_aborted, 5, "A-ABORT for an over-long P-DATA-TF")

    after = proc_status(pid)
    assert after["VmHWM"] - before["VmHWM"] < 20 * MiB, (before, after)
    assert echo_seconds(strict_server) < 1.0


def test_random_byte_connections_cost_nothing_beyond_their_sockets(
    strict_server: ServerProcess,
) -> None:
    pid = server_pid(strict_server)
    echo_seconds(strict_server)
    before = proc_status(pid)
    rng = random.Random(10)
    for n in range(200):
        sock = connect_from(f"127.0.1.{1 + n % 50}", strict_server.dicom_port)
        try:
            sock.sendall(rng.randbytes(rng.randint(1, 4096)))
        except (BrokenPipeError, ConnectionResetError):
            pass  # already refused
        sock.close()
    # Served at once, not after a pause.
    assert echo_seconds(strict_server) < 1.0
    assert find_study_count(strict_server) == 0
    wait_for(lambda: proc_status(pid)["Threads"] <= before["Threads"] + 3, 15,
             "threads of the garbage connections gone")
    after = proc_status(pid)
    assert after["VmRSS"] - before["VmRSS"] < 20 * MiB, (before, after)
    assert os.path.exists(f"/proc/{pid}")


def send_part_of_a_c_store(port: int, ae_title: str, *, pdus: int) -> Association:
    """Associate, then send the C-STORE-RQ command and the first `pdus` P-DATA-TF PDUs
    of a ~400 kB dataset (never its last fragment): a transfer cut off midway."""
    ae = AE(ae_title="HALFWAY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    assert assoc.is_established
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Nguyễn^Văn An"
    ds.BitsAllocated = 16
    ds.add_new(0x7FE00010, "OW", b"\x00" * 400_000)
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, False
    write_dataset(encoded, ds)
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    request.DataSet = BytesIO(encoded.getvalue())
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    raw = assoc.dul.socket.socket
    assert raw is not None
    context_id = assoc.accepted_contexts[0].context_id
    for fragment in itertools.islice(message.encode_msg(context_id, 16384), pdus):
        pdu = P_DATA_TF()
        pdu.from_primitive(fragment)
        raw.sendall(pdu.encode())
    return assoc


def spooled(server: ServerProcess) -> list[Path]:
    """The spool files holding data (not the empty ones made ahead: spool_files.py)."""
    found = []
    for path in (server.data_dir / "incoming").glob("*.dcm"):
        try:
            if path.stat().st_size:
                found.append(path)
        except FileNotFoundError:  # removed between the listing and the stat
            pass
    return found


@pytest.mark.parametrize("ending", ["connection dropped", "A-ABORT", "network timeout"])
def test_a_c_store_cut_off_midway_leaves_no_spool_file(tmp_path: Path, ending: str) -> None:
    # pynetdicom spools the dataset to DATA_DIR/incoming as it arrives and removes the
    # file only after our C-STORE handler ran: a transfer that never completes left it.
    server = start(tmp_path, "--dicom-network-timeout", "1")
    try:
        assoc = send_part_of_a_c_store(server.dicom_port, server.ae_title, pdus=5)
        wait_for(lambda: len(spooled(server)) == 1, 5, "the partial dataset spooled")
        raw = assoc.dul.socket.socket
        assert raw is not None
        if ending == "connection dropped":
            raw.close()
        elif ending == "A-ABORT":
            raw.sendall(bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
        # "network timeout": the peer goes silent; the server aborts it after 1 s.
        wait_for(lambda: not spooled(server), 10, "the partial spool file removed")
        assert echo_seconds(server) < 1.0
        assert find_study_count(server) == 0  # nothing of it was indexed either
        assert "Removed 1 C-STORE dataset(s) the association ended before serving" \
            in server.log()
    finally:
        server.stop()


def test_spool_files_a_killed_server_left_are_swept_at_start(tmp_path: Path) -> None:
    incoming = tmp_path / "data" / "incoming"
    incoming.mkdir(parents=True)
    stale, recent = incoming / "tmpkilled01.dcm", incoming / "tmpliveone.dcm"
    foreign = incoming / "notours.tmp"
    for path in (stale, recent, foreign):
        path.write_bytes(b"\x00" * 128 + b"DICM" + b"partial")
    an_hour_ago = time.time() - 3600
    for path in (stale, foreign):
        os.utime(path, (an_hour_ago, an_hour_ago))
    server = ServerProcess(tmp_path / "data", ["--no-load-samples"]).start()
    try:
        assert not stale.exists()  # untouched for an hour: its writer is gone
        assert recent.exists()  # may still be written by another node on this folder
        assert foreign.exists()  # not pynetdicom's
        assert f"removed {stale}" in server.log()
        assert echo_seconds(server) < 1.0
    finally:
        server.stop()
