"""The measurements, each against one running `Node`: the client side of the benchmark.

Peers are the usual ones: dcmtk's `storescu`, `findscu` and `movescu`, pynetdicom, httpx for
DICOMweb (curl for the series retrieve, which httpx cannot read fast enough). Times are
wall-clock on the client (`time.perf_counter`, or CLOCK_MONOTONIC across processes).

The dcmtk peers send with TCP_NODELAY, as in issue #13's table (dcmtk reads
`TCP_NODELAY=1` from its environment; Orthanc and storescp, dcmtk inside, get it too).
With Nagle on at one end, a server that does not acknowledge at once waits ~40 ms per
exchange on the other end's delayed ACK, and the benchmark would measure that wait
rather than the server. `PEER_NAGLE` (run.py `--nagle-peers`) turns it back on in the
dcmtk peers, to see what a default-configured modality gets.

The pynetdicom peers run as a pynetdicom SCU does by default (Nagle on). With
TCP_NODELAY set on their socket, a C-STORE response was lost twice in one day (the
SCU waited out its DIMSE timeout with the association up, against storescp and
against the null SCP): pynetdicom's reactor pause let its own reactor take the response
(minipacs.dimse.reactor_pause explains it; store_peer.py parks that reactor).

pynetdicom's requestor, after the A-RELEASE-RP has arrived, waits for its own DUL thread
to close the socket by polling it every 10 ms (`Association.kill`, pynetdicom 3.0).
Whether the first poll finds it done is a race between two threads of the client, so
"associate + C-ECHO + release" took either ~9 or ~19 ms against the same server, the
same way against Orthanc, run after run (docs/performance.md, "Twelfth pass").
`_poll_release_promptly` makes the benchmark's client poll every 0.1 ms instead: the
10 ms were the client's, not either server's.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pynetdicom
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)
from servers import BENCH_DIR, Node, dcmtk

DICOM_TIMEOUT = 600  # seconds; generous, a benchmark is not a timeout test
ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'
RAW_FRAME = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


PEER_NAGLE = False  # run.py --nagle-peers


def peer_env() -> dict[str, str]:
    """The environment of a peer process (dcmtk tools, store_peer.py)."""
    env = dict(os.environ)
    env.pop("TCP_NODELAY", None)
    if not PEER_NAGLE:
        env["TCP_NODELAY"] = "1"  # dcmtk's own switch
    return env


def _nodelay(event: evt.Event) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def peer_handlers() -> list[tuple[evt.EventType, object]]:
    """Event handlers of a pynetdicom peer's association: none (Nagle on, pynetdicom's
    default; see the module's docstring). `_nodelay` is kept for trying again."""
    return []


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _chunks(files: list[Path], n: int) -> list[list[Path]]:
    return [files[i::n] for i in range(n) if files[i::n]]


def ingest_storescu(node: Node, files: list[Path], associations: int,
                    proposal: tuple[str, ...] = ()) -> float:
    """Instances per second, `associations` storescu processes at once. storescu
    proposes uncompressed syntaxes only unless told (`proposal`, e.g. ``("-xy",)`` for
    JPEG Baseline files)."""
    procs = []
    start = time.monotonic()
    for chunk in _chunks(files, associations):
        procs.append(subprocess.Popen(
            [dcmtk("storescu"), "--required", *proposal, "-aet", "BENCH",
             "-aec", node.ae_title, "-to", str(DICOM_TIMEOUT), "-ta", str(DICOM_TIMEOUT),
             "127.0.0.1", str(node.dicom_port),
             *map(str, chunk)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=peer_env()))
    for proc in procs:
        _, err = proc.communicate(timeout=DICOM_TIMEOUT)
        if proc.returncode != 0 or b"E: " in err:
            raise SystemExit(f"storescu to {node.name} failed: {err.decode()[-1500:]}")
    return len(files) / (time.monotonic() - start)


def ingest_pynetdicom(node: Node, files: list[Path], associations: int) -> float:
    """Instances per second, `associations` pynetdicom SCU processes at once (each reads
    its files before associating; the clock runs from the first request to the last
    response)."""
    procs = []
    with tempfile.TemporaryDirectory(prefix="bench-lists-") as tmp:
        for n, chunk in enumerate(_chunks(files, associations)):
            listing = Path(tmp) / f"{n}.txt"
            listing.write_text("\n".join(map(str, chunk)))
            procs.append(subprocess.Popen(
                [sys.executable, str(BENCH_DIR / "store_peer.py"), "127.0.0.1",
                 str(node.dicom_port), node.ae_title, str(listing)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        reports, errors = [], []
        for proc in procs:
            out, err = proc.communicate(timeout=DICOM_TIMEOUT)
            if proc.returncode != 0:
                raise SystemExit(f"pynetdicom SCU to {node.name} failed: {err.decode()[-1500:]}")
            reports.append(json.loads(out.decode().strip().splitlines()[-1]))
            errors.append(err.decode()[-700:])
    failed = sum(r["failed"] for r in reports)
    if failed:
        raise SystemExit(f"{node.name}: {failed} C-STOREs did not answer Success:\n"
                         + "".join(errors))
    return len(files) / (max(r["end"] for r in reports) - min(r["start"] for r in reports))


def _poll_release_promptly() -> None:
    """pynetdicom 3.0's `Association.kill`, polling its DUL every 0.1 ms, not 10."""
    def kill(self: Association) -> None:
        self._reactor_checkpoint.set()
        self._kill = True
        self.is_established = False
        self._is_paused = True
        while self.dul.is_alive() and not self.dul.stop_dul():
            time.sleep(0.0001)

    if pynetdicom.__version__.startswith("3.0."):  # a newer one may differ: left alone
        Association.kill = kill  # type: ignore[method-assign]


_poll_release_promptly()


def _client_ae() -> AE:
    ae = AE(ae_title="BENCH")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = DICOM_TIMEOUT
    return ae


def cfind_ms(node: Node, patient_id: str, repeat: int) -> float:
    """C-FIND STUDY by PatientID, one association reused; median."""
    ae = _client_ae()
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title,
                         evt_handlers=peer_handlers())
    samples = []
    try:
        for _ in range(repeat):
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.PatientID = patient_id
            query.StudyInstanceUID = query.PatientName = query.StudyDate = ""
            query.ModalitiesInStudy = query.NumberOfStudyRelatedInstances = ""
            start = time.perf_counter()
            responses = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
            samples.append(time.perf_counter() - start)
            if len(responses) < 2 or responses[-1][0].Status != 0:
                raise SystemExit(f"{node.name}: C-FIND for {patient_id} answered "
                                 f"{len(responses) - 1} matches, final {responses[-1][0]}")
    finally:
        assoc.release()
    return median_ms(samples)


FINDSCU_QUERIES = 21  # queries on one association in findscu's long run


def _timed_dcmtk(node: Node, tool: str, *args: str) -> float:
    """Seconds one dcmtk `tool` process takes against `node` (it must report no error)."""
    start = time.perf_counter()
    done = subprocess.run(
        [dcmtk(tool), "-S", "-aet", "BENCH", "-aec", node.ae_title, *args,
         "127.0.0.1", str(node.dicom_port)],
        capture_output=True, text=True, timeout=DICOM_TIMEOUT, env=peer_env())
    seconds = time.perf_counter() - start
    if done.returncode != 0 or "E: " in done.stderr:
        raise SystemExit(f"{tool} with {node.name} failed: {done.stderr[-1500:]}")
    return seconds


def _findscu_s(node: Node, patient_id: str, queries: int) -> float:
    """Seconds for one findscu process: associate, `queries` C-FIND STUDY by PatientID
    on that association (findscu's `--repeat`), release."""
    return _timed_dcmtk(
        node, "findscu", "--repeat", str(queries), "-k", "QueryRetrieveLevel=STUDY",
        "-k", f"PatientID={patient_id}", "-k", "StudyInstanceUID", "-k", "PatientName",
        "-k", "StudyDate", "-k", "ModalitiesInStudy", "-k", "NumberOfStudyRelatedInstances")


def cfind_findscu_ms(node: Node, patient_id: str, repeat: int) -> float:
    """C-FIND STUDY by PatientID from dcmtk findscu (TCP_NODELAY=1): the cost of one
    query on an open association, with findscu's process start and association set-up
    taken out. Each sample is a pair of findscu processes, one sending 1 query and one
    sending FINDSCU_QUERIES on its association; the sample is their difference divided
    by the extra queries. Median over `repeat` pairs."""
    samples = []
    for _ in range(repeat):
        one = _findscu_s(node, patient_id, 1)
        many = _findscu_s(node, patient_id, FINDSCU_QUERIES)
        samples.append((many - one) / (FINDSCU_QUERIES - 1))
    return median_ms(samples)


def echo_ms(node: Node, repeat: int) -> float:
    """Associate + C-ECHO + release; median."""
    ae = _client_ae()
    ae.add_requested_context(Verification)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title,
                             evt_handlers=peer_handlers())
        status = assoc.send_c_echo()
        assoc.release()
        samples.append(time.perf_counter() - start)
        if not status or status.Status != 0:
            raise SystemExit(f"{node.name}: C-ECHO failed: {status}")
    return median_ms(samples)


def cmove_s(node: Node, study: str, series: str, receiver: str, receiver_port: int) -> float:
    """Seconds for movescu to get a series moved to its own receiver (`--ignore`)."""
    return _timed_dcmtk(
        node, "movescu", "-aem", receiver, "+P", str(receiver_port), "+xa", "--ignore",
        "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study}",
        "-k", f"SeriesInstanceUID={series}")


def cget_s(node: Node, study: str, series: str, expected: int) -> float:
    """Seconds for a pynetdicom C-GET of a CT series (received, not kept)."""
    ae = _client_ae()
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    received = 0

    def on_store(event: object) -> int:
        nonlocal received
        received += 1
        return 0x0000

    start = time.perf_counter()
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store), *peer_handlers()])
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID, query.SeriesInstanceUID = study, series
    responses = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
    assoc.release()
    seconds = time.perf_counter() - start
    if received != expected or responses[-1][0].Status != 0:
        raise SystemExit(f"{node.name}: C-GET gave {received} of {expected} instances, "
                         f"final {responses[-1][0]}")
    return seconds


def _http_ms(client: httpx.Client, urls: list[str], accept: str, repeat: int) -> float:
    samples = []
    for n in range(repeat):
        url = urls[n % len(urls)]
        start = time.perf_counter()
        response = client.get(url, headers={"Accept": accept})
        samples.append(time.perf_counter() - start)
        if response.status_code != 200 or not response.content:
            raise SystemExit(f"GET {url} ({accept}): {response.status_code} "
                             f"{response.text[:300]}")
    return median_ms(samples)


def http_client(node: Node) -> httpx.Client:
    return httpx.Client(timeout=DICOM_TIMEOUT, headers=node.headers)


def qido_ms(node: Node, patient_id: str, repeat: int) -> float:
    with http_client(node) as client:
        return _http_ms(client, [f"{node.dicomweb}/studies?PatientID={patient_id}"],
                        "application/dicom+json", repeat)


def metadata_ms(node: Node, study: str, repeat: int) -> tuple[float, float]:
    """Study metadata: the first request after ingest (cold), then the median (warm)."""
    url = f"{node.dicomweb}/studies/{study}/metadata"
    with http_client(node) as client:
        cold = _http_ms(client, [url], "application/dicom+json", 1)
        return cold, _http_ms(client, [url], "application/dicom+json", repeat)


def series_retrieve_mb_s(node: Node, study: str, series: str, repeat: int) -> float:
    """WADO-RS series retrieve (transfer-syntax=*), MB/s; median of `repeat`, read by curl.

    Not httpx: a Python client parsing 150 MB of multipart spends ~0.22 s of CPU on it,
    which capped both servers at ~650-700 MB/s (docs/performance.md, "Sixth pass"), so
    the row measured the client. curl reads the body into /dev/null."""
    curl = shutil.which("curl")
    if curl is None:
        raise SystemExit("curl is not installed: apt-get install -y curl")
    url = f"{node.dicomweb}/studies/{study}/series/{series}"
    headers = [arg for name, value in {"Accept": ANY_SYNTAX, **node.headers}.items()
               for arg in ("-H", f"{name}: {value}")]
    samples = []
    for _ in range(repeat):
        done = subprocess.run(
            [curl, "-s", "-o", os.devnull, "-w", "%{http_code} %{size_download} %{time_total}",
             *headers, url], capture_output=True, text=True, timeout=DICOM_TIMEOUT)
        code, size, seconds = done.stdout.split()
        if done.returncode != 0 or code != "200" or int(size) == 0:
            raise SystemExit(f"GET {url}: curl exit {done.returncode}, HTTP {code}")
        samples.append(int(size) / float(seconds) / 1e6)
    return statistics.median(samples)


def instance_urls(node: Node, study: str, series: str, sops: list[str], tail: str
                  ) -> list[str]:
    return [f"{node.dicomweb}/studies/{study}/series/{series}/instances/{sop}{tail}"
            for sop in sops]


def pixels_ms(node: Node, urls: list[str], accept: str, repeat: int) -> float:
    """Median over `repeat` requests cycling through `urls` (each instance new to the
    server's caches on the first pass)."""
    with http_client(node) as client:
        return _http_ms(client, urls, accept, repeat)
