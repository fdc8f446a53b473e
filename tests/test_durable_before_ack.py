"""Nothing acknowledged is ever lost, checked where a power cut would find out: the
server's system calls, recorded with strace while dcmtk's storescu and a STOW-RS client
store instances and a RIS sends an HL7 order.

For every instance, in this order, each step returning before the next begins: the
fsync of its file, the hard link or rename that names that file as its blob, the fsync
of the directory holding the name, the sync of the index's write-ahead log (SQLite,
synchronous=FULL: the row commits only once the blob is durable), and only then the
success answer. An HL7 order's ACK likewise waits for the sync of the commit holding
the order. A process kill (tests/test_crash_and_nodes.py) cannot tell these writes
from writes still in the page cache; a power cut can, and so can this test. It runs on
the embedded defaults (SQLite and a blob folder), whose durable writes are ours to make;
PostgreSQL and S3 make theirs in other processes.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from backends import Backends
from conftest import ServerProcess, require_tool
from dicomweb_peers import stow
from dimse_peers import storescu
from factories import make_instance
from test_hl7 import SENDERS, ack_code, orm, send

pytestmark = pytest.mark.door_only  # the embedded defaults only (module docstring)

SYNCS = ("fsync", "fdatasync")
SENDS = ("sendto", "sendmsg", "write", "writev")
RECEIVES = ("recvfrom", "recvmsg")
NAMINGS = ("link", "linkat", "rename", "renameat", "renameat2")  # a blob gets its name
# strace -f -ttt -T -yy: "<pid> <seconds> <call>(<fd><<path>>, ...) = <result> <<duration>>",
# or split in two lines, "<unfinished ...>" then "<... call resumed>", when threads overlap.
_CALL = re.compile(r"^(?P<pid>\d+)\s+(?P<at>\d+\.\d+)\s+(?P<call>\w+)\((?P<rest>.*)$")
_RESUMED = re.compile(r"^(?P<pid>\d+)\s+(?P<at>\d+\.\d+)\s+<\.\.\. (?P<call>\w+) resumed>"
                      r"(?P<rest>.*)$")
_FD_PATH = re.compile(r"^\d+<(?P<path>[^>]*)>")
_DURATION = re.compile(r"<(?P<seconds>\d+\.\d+)>\s*$")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Call:
    name: str
    path: str  # the file descriptor's path or socket, as strace -yy shows it
    strings: tuple[str, ...]  # the quoted arguments: a send's data, a link's two paths
    began: float
    ended: float


def calls_in(log: Path) -> list[Call]:
    """The completed system calls of a strace log, with when each began and ended."""
    calls: list[Call] = []
    unfinished: dict[tuple[str, str], tuple[float, str]] = {}
    for line in log.read_text(errors="replace").splitlines():
        if resumed := _RESUMED.match(line):
            key = (resumed["pid"], resumed["call"])
            if key not in unfinished:
                continue  # began before strace attached
            began, head = unfinished.pop(key)
            duration = _DURATION.search(resumed["rest"])
            if duration:
                calls.append(_call(resumed["call"], head, began,
                                   began + float(duration["seconds"])))
        elif call := _CALL.match(line):
            if call["rest"].endswith("<unfinished ...>"):
                unfinished[(call["pid"], call["call"])] = (float(call["at"]), call["rest"])
                continue
            duration = _DURATION.search(call["rest"])
            if duration:
                began = float(call["at"])
                calls.append(_call(call["call"], call["rest"], began,
                                   began + float(duration["seconds"])))
    return sorted(calls, key=lambda c: c.began)


def _call(name: str, arguments: str, began: float, ended: float) -> Call:
    fd = _FD_PATH.match(arguments)
    return Call(name, fd["path"] if fd else "", tuple(_STRING.findall(arguments)), began,
                ended)


@contextmanager
def traced(server: ServerProcess, log: Path) -> Iterator[None]:
    """strace on every thread of the running server while the block runs."""
    assert server.process is not None
    tracer = subprocess.Popen(
        [require_tool("strace"), "-f", "-ttt", "-T", "-yy", "-qq", "-s", "4096",
         "-e", "trace=" + ",".join((*SYNCS, *SENDS, *RECEIVES, *NAMINGS)), "-o", str(log),
         "-p", str(server.process.pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    # strace writes nothing until a call is traced; it is attached once every one of the
    # server's threads shows it as their tracer (a thread not yet attached could start an
    # association thread that is never traced).
    while not _traced(server.process.pid):
        if tracer.poll() is not None or time.monotonic() > deadline:
            error = tracer.stderr.read().decode() if tracer.stderr else ""
            tracer.kill()
            pytest.fail(f"strace could not attach to the server: {error[-500:]}")
        time.sleep(0.05)
    try:
        yield
    finally:
        tracer.terminate()
        tracer.wait(30)


def _traced(pid: int) -> bool:
    """Whether every thread of process `pid` has a tracer."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        tracer = re.search(r"^TracerPid:\s+(\d+)", status, re.M)
        if tracer is None or tracer.group(1) == "0":
            return False
    return True


def durable_order(calls: list[Call], sop_instance_uid: str, answer: Call,
                  data_dir: Path) -> dict[str, bool]:
    """The steps that make one instance durable, each checked to have returned before
    the next began: its file synced, then named as its blob (a hard link or a rename),
    then the directory holding that name synced, then the index's write-ahead log
    synced (the row commits only once the blob is durable), then the answer sent."""
    named = [c for c in calls if c.name in NAMINGS and c.ended <= answer.began
             and len(c.strings) == 2 and sop_instance_uid in Path(c.strings[1]).name]
    if not named:
        return {"its file named as its blob": False}
    naming = named[-1]
    source, blob = naming.strings
    syncs = [c for c in calls if c.name in SYNCS]
    file_synced = [c for c in syncs if c.path == source and c.ended <= naming.began]
    directory_synced = [c for c in syncs if c.path == str(Path(blob).parent)
                        and naming.ended <= c.began and c.ended <= answer.began]
    wal = str(data_dir.resolve() / "index.sqlite-wal")
    index_synced = [c for c in syncs if c.path == wal and directory_synced
                    and directory_synced[0].ended <= c.began and c.ended <= answer.began]
    return {
        "its file named as its blob": True,
        "the file synced before it was named": bool(file_synced),
        "the blob's directory synced after": bool(directory_synced),
        "the index's write-ahead log synced after that": bool(index_synced),
    }


def test_every_c_store_success_is_sent_after_its_three_durable_writes(
        empty_server: ServerProcess, tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(4)]
    files = []
    for number, sop in enumerate(sops):
        path = tmp_path / f"{number}.dcm"
        path.write_bytes(make_instance(study_uid=study, series_uid=series, sop_uid=sop,
                                       patient_id="DURABLE-1"))
        files.append(path)
    log = tmp_path / "strace.txt"
    with traced(empty_server, log):
        result = storescu(empty_server, *files)
    assert result.returncode == 0, result.stderr
    calls = calls_in(log)
    # The server's P-DATA-TF PDUs (type 04) on this association: the four C-STORE-RSPs.
    answers = [c for c in calls if c.name in SENDS and c.path.startswith("TCP:")
               and c.strings and c.strings[0].startswith("\\4\\0")]
    assert len(answers) == len(files), [(c.name, c.path, c.strings[:1]) for c in calls
                                        if c.name in SENDS]
    for sop, answer in zip(sops, answers, strict=True):
        steps = durable_order(calls, sop, answer, empty_server.data_dir)
        assert all(steps.values()), f"the C-STORE-RSP for {sop} was sent with {steps}"


def test_a_stow_rs_success_is_sent_after_the_instance_is_durable(
        empty_server: ServerProcess, tmp_path: Path) -> None:
    sop = generate_uid()
    instance = make_instance(sop_uid=sop, patient_id="DURABLE-2")
    assert empty_server.token  # made with the CLI now, before the trace starts
    log = tmp_path / "strace.txt"
    with traced(empty_server, log):
        response = stow(empty_server, instance)
    assert response.status_code == 200, response.text
    calls = calls_in(log)
    answers = [c for c in calls if c.name in SENDS and c.path.startswith("TCP:")
               and c.strings and c.strings[0].startswith("HTTP/1.1 200")]
    assert len(answers) == 1, [(c.name, c.path, c.strings[:1]) for c in calls
                               if c.name in SENDS]
    steps = durable_order(calls, sop, answers[0], empty_server.data_dir)
    assert all(steps.values()), f"the STOW-RS answer was sent with {steps}"


@pytest.fixture
def hl7_server(tmp_path: Path, backends: Backends) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", backends.server_args(),
                         env={"MINIPACS_HL7_PORT": "0", "MINIPACS_HL7_HOST": "127.0.0.1",
                              "MINIPACS_HL7_ALLOWED_SENDERS": SENDERS,
                              "MINIPACS_LOAD_SAMPLES": "false"})
    proc.data_dir.mkdir()
    yield proc.start()
    proc.stop()


def test_an_hl7_order_is_acknowledged_after_it_is_durable(hl7_server: ServerProcess,
                                                           tmp_path: Path) -> None:
    """An AA tells the RIS it need not resend: the order, its steps and its audit event
    are committed, and the write-ahead log synced, before the ACK goes out."""
    accession = "DUR" + generate_uid()[-9:]
    log = tmp_path / "strace.txt"
    with traced(hl7_server, log):
        ack = send(hl7_server, orm("NW", "DURABLE-3", accession))
    assert ack_code(ack) == "AA", str(ack)
    calls = calls_in(log)
    on_tcp = [c for c in calls if c.path.startswith("TCP:") and c.strings]
    # MLLP frames start with <VT>, which strace prints as \v.
    [arrived] = [c for c in on_tcp if c.name in RECEIVES and c.strings[0].startswith("\\vMSH")
                 and accession in c.strings[0]]
    [answer] = [c for c in on_tcp if c.name in SENDS and c.strings[0].startswith("\\vMSH")]
    wal = str(hl7_server.data_dir.resolve() / "index.sqlite-wal")
    synced = [c for c in calls if c.name in SYNCS and c.path == wal
              and arrived.ended <= c.began and c.ended <= answer.began]
    assert synced, "the ACK was sent before the order's commit reached the disk"
