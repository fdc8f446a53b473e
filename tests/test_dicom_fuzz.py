"""Random and mutated PDUs at the DICOM port (issue #11), in a bounded smoke mode:
seeded, loopback only, bounded in count and in time.

Cases: random bytes; a valid A-ASSOCIATE-RQ (PS3.8 §9.3.2) with bytes flipped, lengths
changed, truncated; a valid association followed by a mutated P-DATA-TF (PS3.8 §9.3.5)
carrying a real C-ECHO, C-FIND or C-STORE request (pynetdicom's DIMSE message classes
encode the command set and dataset, then we mutate the bytes); PDU and PDV length fields
claiming gigabytes. Between rounds and at the end a normal C-ECHO and C-FIND are served
within a second, the server process is alive, and nothing was stored unless a mutated
but valid C-STORE legitimately was, which must then verify whole (`minipacs verify`)."""

from __future__ import annotations

import os
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import Dataset
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from pynetdicom.dimse_messages import C_ECHO_RQ, C_FIND_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE
from pynetdicom.pdu import P_DATA_TF

from conftest import ServerProcess
from test_dimse_hostile import (
    connect_from,
    echo_seconds,
    find_study_count,
    proc_status,
    server_pid,
    start,
    wait_for,
)

pytestmark = pytest.mark.door_only  # runs in the embedded pass only (conftest.py)

VERIFICATION = "1.2.840.10008.1.1"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CONTEXTS = {1: VERIFICATION, 3: STUDY_FIND, 5: SECONDARY_CAPTURE}
CASES_PER_ROUND = 40
ROUNDS = 6
BUDGET_S = 45.0
QUIET_S = 0.15  # a server that sent nothing for this long is waiting for us: move on


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def associate_rq(called: str, calling: str = "FUZZER") -> bytes:
    """An A-ASSOCIATE-RQ proposing CONTEXTS in Implicit VR Little Endian (PS3.8 §9.3.2)."""
    items = _item(0x10, b"1.2.840.10008.3.1.1.1")
    for context_id, abstract in CONTEXTS.items():
        items += _item(0x20, bytes([context_id, 0, 0, 0]) + _item(0x30, abstract.encode())
                       + _item(0x40, ImplicitVRLittleEndian.encode()))
    items += _item(0x50, _item(0x51, struct.pack(">L", 16384))
                   + _item(0x52, b"1.2.826.0.1.3680043.9.7433.99"))
    body = (struct.pack(">HH", 1, 0) + called.encode().ljust(16) + calling.encode().ljust(16)
            + bytes(32) + items)
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def _pdata(message: C_ECHO_RQ | C_FIND_RQ | C_STORE_RQ, primitive: object,
           context_id: int) -> bytes:
    message.primitive_to_message(primitive)  # type: ignore[arg-type]
    out = b""
    for pdata in message.encode_msg(context_id, 16384):
        pdu = P_DATA_TF()
        pdu.from_primitive(pdata)
        out += pdu.encode()
    return out


def echo_pdata() -> bytes:
    primitive = C_ECHO()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = VERIFICATION
    return _pdata(C_ECHO_RQ(), primitive, 1)


def find_pdata(rng: random.Random) -> bytes:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = rng.choice(["*", "' OR '1'='1", "../../etc", "A" * 64])
    query.StudyInstanceUID = ""
    primitive = C_FIND()
    primitive.MessageID = 2
    primitive.AffectedSOPClassUID = STUDY_FIND
    primitive.Priority = 2
    primitive.Identifier = _encoded(query)
    return _pdata(C_FIND_RQ(), primitive, 3)


def store_pdata() -> bytes:
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "FUZZ", "Fuzz^Case", "OT"
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = bytes(range(16))
    primitive = C_STORE()
    primitive.MessageID = 3
    primitive.AffectedSOPClassUID = SECONDARY_CAPTURE
    primitive.AffectedSOPInstanceUID = ds.SOPInstanceUID
    primitive.Priority = 2
    primitive.DataSet = _encoded(ds)
    return _pdata(C_STORE_RQ(), primitive, 5)


def _encoded(ds: Dataset) -> object:
    from io import BytesIO

    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset

    buffer = BytesIO()
    fp = DicomFileLike(buffer)
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    return BytesIO(buffer.getvalue())


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four of: flip bytes, rewrite a length field, truncate, duplicate, insert."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        if kind == 0 and out:  # flip bytes
            for _ in range(rng.randint(1, 8)):
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif kind == 1 and len(out) >= 6:  # a 4-byte (PDU/PDV) length field
            at = rng.choice([2, rng.randrange(len(out) - 4)])
            value = rng.choice([0, 1, len(out), len(out) * 2, 0x7FFFFFFF, 0xFFFFFFFF,
                                rng.getrandbits(32)])
            out[at:at + 4] = struct.pack(">L", value)
        elif kind == 2 and len(out) >= 4:  # a 2-byte (item) length field
            at = rng.randrange(len(out) - 2)
            out[at:at + 2] = struct.pack(">H", rng.choice([0, 1, 0xFFFF, rng.getrandbits(16)]))
        elif kind == 3 and out:  # truncate
            del out[rng.randrange(len(out)):]
        elif kind == 4 and out:  # duplicate a slice
            a = rng.randrange(len(out))
            out[a:a] = out[a:a + rng.randint(1, 64)]
        else:  # insert random bytes
            at = rng.randrange(len(out) + 1)
            out[at:at] = rng.randbytes(rng.randint(1, 32))
    return bytes(out)


def exchange(sock: socket.socket, data: bytes, quiet: float = QUIET_S) -> bytes:
    """Send `data`, read what the server answers until it closes or goes quiet."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        return b""
    received = b""
    deadline = time.monotonic() + 2.0
    sock.settimeout(quiet)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except (ConnectionResetError, BrokenPipeError):
            break
        if not chunk:
            break
        received += chunk
    return received


Case = Callable[[random.Random, ServerProcess, socket.socket], None]


def random_bytes(rng: random.Random, server: ServerProcess, sock: socket.socket) -> None:
    exchange(sock, rng.randbytes(rng.randint(1, 2048)))


def mutated_associate(rng: random.Random, server: ServerProcess, sock: socket.socket) -> None:
    exchange(sock, mutate(rng, associate_rq(server.ae_title)))


def oversized_length(rng: random.Random, server: ServerProcess, sock: socket.socket) -> None:
    pdu_type = rng.choice([0x01, 0x04, 0x05, 0x07, 0x09, 0xFF])
    length = rng.choice([0x7FFFFFFF, 0xFFFFFFFF, 512 * 1024 * 1024])
    exchange(sock, struct.pack(">BBL", pdu_type, 0, length) + rng.randbytes(256))


def mutated_pdata(rng: random.Random, server: ServerProcess, sock: socket.socket) -> None:
    answer = exchange(sock, associate_rq(server.ae_title), quiet=1.0)
    assert answer[:1] in (b"\x02", b"\x03"), answer[:16]  # a valid request is answered
    if answer[:1] != b"\x02":
        return
    message = rng.choice([echo_pdata, lambda: find_pdata(rng), store_pdata])()
    if rng.random() < 0.2:  # a PDV claiming more than the PDU holds
        message = message[:6] + struct.pack(">L", 0xFFFFFFF0) + message[10:]
    else:
        message = mutate(rng, message)
    exchange(sock, message)


CASES: list[Case] = [random_bytes, mutated_associate, oversized_length, mutated_pdata,
                     mutated_pdata]


def instances(server: ServerProcess) -> int:
    count: int = httpx.get(f"{server.http_url}/healthz", timeout=10).json()["instances"]
    return count


def _thread_death(text: str) -> str:
    """The traceback of an "Exception in thread" report: its lines up to the next log line."""
    lines = text.splitlines()
    end = next((i for i, line in enumerate(lines[1:], 1) if line[:2] == "20"), len(lines))
    return "\n".join(lines[:end])


@pytest.fixture
def fuzz_server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start(tmp_path, "--dicom-artim-timeout", "2", "--dicom-pdu-timeout", "2")
    yield proc
    proc.stop()


@pytest.mark.timeout(180)
def test_random_and_mutated_pdus_find_no_crash_and_change_nothing(
    fuzz_server: ServerProcess,
) -> None:
    server = fuzz_server
    seed = int(os.environ.get("MINIPACS_FUZZ_SEED", random.SystemRandom().randrange(2**32)))
    print(f"DICOM fuzz seed: {seed} (rerun with MINIPACS_FUZZ_SEED={seed})")
    rng = random.Random(seed)
    assert echo_seconds(server) < 1.0
    before = instances(server)
    pid = server_pid(server)
    threads = proc_status(pid)["Threads"]
    started = time.monotonic()
    sent: dict[str, int] = {}
    for round_no in range(ROUNDS):
        for n in range(CASES_PER_ROUND):
            case = rng.choice(CASES)
            # Spread over loopback addresses: the per-address connection cap is not the test.
            sock = connect_from(f"127.0.{3 + round_no}.{1 + n % 200}", server.dicom_port)
            try:
                case(rng, server, sock)
            finally:
                sock.close()
            sent[case.__name__] = sent.get(case.__name__, 0) + 1
        assert server.process is not None and server.process.poll() is None, \
            f"server died in round {round_no} (seed {seed}):\n{server.log()[-3000:]}"
        assert echo_seconds(server) < 1.0, f"round {round_no}, seed {seed}"
        started_find = time.monotonic()
        find_study_count(server)
        assert time.monotonic() - started_find < 1.0, f"C-FIND slow, seed {seed}"
        if time.monotonic() - started > BUDGET_S:
            break
    print(f"cases sent: {sent} in {time.monotonic() - started:.1f}s")
    assert sum(sent.values()) >= CASES_PER_ROUND
    # pynetdicom logs the PDUs it cannot decode (with tracebacks); what must not appear is
    # a thread dying on an uncaught exception or an error of our own code.
    log = server.log()
    died = [trace for trace in map(_thread_death, log.split("Exception in thread")[1:])
            if "/minipacs/" in trace]
    assert died == [], "\n".join(died[:3])
    wait_for(lambda: proc_status(pid)["Threads"] <= threads + 5, 20,
             "threads of the fuzzing connections gone")
    ours = [line for line in log.splitlines() if " ERROR " in line and " minipacs." in line]
    assert ours == [], "\n".join(ours[:20])
    after = instances(server)
    print(f"instances before {before}, after {after}")
    if after != before:  # a mutated C-STORE that was still valid: stored whole
        verified = server.cli("verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "0 missing, 0 corrupt" in verified.stdout, verified.stdout
        assert "0 not readable whole" in verified.stdout, verified.stdout
    assert find_study_count(server) == after and after - before <= sent.get("mutated_pdata", 0)
