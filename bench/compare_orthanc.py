"""Side-by-side benchmark: minipacs vs Orthanc on this machine.

Starts both servers on free loopback ports with fresh storage, pushes the same synthetic
CT instances to each over C-STORE, then times C-FIND, QIDO-RS, WADO-RS metadata and
WADO-RS retrieve. Prints numbers; asserts nothing. Orthanc comes from Debian's `orthanc`
and `orthanc-dicomweb` packages (`apt-get install orthanc orthanc-dicomweb`).

    .venv/bin/python bench/compare_orthanc.py --instances 300 --queries 50
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore

ORTHANC_DICOMWEB = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_studies(n_instances: int, per_series: int = 100) -> list[Dataset]:
    rng = np.random.default_rng(7)
    datasets = []
    study = series = ""
    for i in range(n_instances):
        if i % per_series == 0:
            study, series = generate_uid(), generate_uid()
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = f"Nguyễn^Văn Bench{i // per_series}"
        ds.PatientID = f"BENCH{i // per_series:04d}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID, ds.SOPClassUID = generate_uid(), CTImageStorage
        ds.Modality, ds.StudyDate, ds.StudyTime = "CT", "20240315", "101010"
        ds.AccessionNumber = f"ACCB{i // per_series:04d}"
        ds.SeriesNumber, ds.InstanceNumber = 1, i % per_series + 1
        ds.Rows = ds.Columns = 256
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = rng.integers(0, 4095, (256, 256), dtype=np.uint16).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        datasets.append(ds)
    return datasets


@dataclass
class Target:
    name: str
    dicom_port: int
    http_url: str
    ae_title: str
    dicomweb: str
    process: subprocess.Popen[bytes]
    headers: dict[str, str] = field(default_factory=dict)  # credentials, where needed


def start_minipacs(work: Path) -> Target:
    ready = work / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "minipacs", "serve", "--data-dir", str(work / "data"),
         "--http-port", "0", "--dicom-port", "0", "--no-load-samples",
         "--log-level", "WARNING", "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL, stderr=open(work / "minipacs.log", "wb"),
    )
    while not ready.exists():
        if proc.poll() is not None:
            raise SystemExit("minipacs did not start")
        time.sleep(0.05)
    ports = json.loads(ready.read_text())
    url = f"http://127.0.0.1:{ports['http_port']}"
    # Accounts are on, as in a hospital: a token made as an admin would make it (the
    # credential check is cached, so it costs what it costs a real client).
    made = subprocess.run([sys.executable, "-m", "minipacs", "token", "create", "bench",
                           "--role", "radiologist", "--data-dir", str(work / "data")],
                          capture_output=True, text=True, check=True)
    token = made.stdout.strip().splitlines()[-1]
    return Target("minipacs", ports["dicom_port"], url, "MINIPACS", f"{url}/dicom-web", proc,
                  {"Authorization": f"Bearer {token}"})


def start_orthanc(work: Path) -> Target:
    orthanc = shutil.which("Orthanc")
    if orthanc is None or not ORTHANC_DICOMWEB.exists():
        raise SystemExit("Orthanc not installed: apt-get install orthanc orthanc-dicomweb")
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "bench", "DicomAet": "ORTHANC", "DicomPort": dicom_port,
        "HttpPort": http_port, "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"), "Plugins": [str(ORTHANC_DICOMWEB)],
        "AuthenticationEnabled": False, "RemoteAccessAllowed": True,
        "DicomCheckCalledAet": False, "DicomAlwaysAllowFind": True,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StorageCompression": False, "HttpCompressionEnabled": False,
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    proc = subprocess.Popen([orthanc, str(work / "orthanc.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/system", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("Orthanc did not start")
        time.sleep(0.1)
    return Target("Orthanc", dicom_port, url, "ORTHANC", f"{url}/dicom-web", proc)


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def bench(target: Target, datasets: list[Dataset], queries: int) -> dict[str, str]:
    ae = AE(ae_title="BENCH")
    ae.dimse_timeout = ae.network_timeout = ae.acse_timeout = 300
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", target.dicom_port, ae_title=target.ae_title)
    start = time.perf_counter()
    for ds in datasets:
        status = assoc.send_c_store(ds)
        if status.get("Status") != 0:
            raise SystemExit(f"{target.name}: C-STORE failed: {status or 'association lost'}")
    store_s = time.perf_counter() - start
    assoc.release()
    assoc = ae.associate("127.0.0.1", target.dicom_port, ae_title=target.ae_title)
    if not assoc.is_established:
        raise SystemExit(f"{target.name}: association for C-FIND refused")

    def c_find() -> None:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.PatientName = "Nguy*"
        identifier.StudyInstanceUID = ""
        identifier.ModalitiesInStudy = ""
        responses = list(assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind))
        if responses[-1][0].get("Status") != 0:
            raise SystemExit(f"{target.name}: C-FIND failed: {responses[-1][0]}")

    find = timed(c_find, queries)
    assoc.release()
    client = httpx.Client(timeout=60, headers=target.headers)
    study = str(datasets[0].StudyInstanceUID)
    series = str(datasets[0].SeriesInstanceUID)
    sop = str(datasets[0].SOPInstanceUID)
    qido = timed(lambda: client.get(f"{target.dicomweb}/studies",
                                    params={"PatientID": "BENCH0000"}).raise_for_status(),
                 queries)
    meta = timed(lambda: client.get(
        f"{target.dicomweb}/studies/{study}/series/{series}/metadata").raise_for_status(),
        max(queries // 5, 3))
    wado = timed(lambda: client.get(
        f"{target.dicomweb}/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    ).raise_for_status(), queries)
    series_retrieve = timed(lambda: client.get(
        f"{target.dicomweb}/studies/{study}/series/{series}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    ).raise_for_status(), 3)

    def ms(samples: list[float]) -> str:
        return f"{statistics.median(samples) * 1000:.1f} ms"

    return {
        "C-STORE instances/s": f"{len(datasets) / store_s:.0f}",
        "C-FIND study (median)": ms(find),
        "QIDO-RS studies (median)": ms(qido),
        "WADO-RS series metadata (median)": ms(meta),
        "WADO-RS instance (median)": ms(wado),
        "WADO-RS series retrieve (median)": ms(series_retrieve),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--only", choices=["minipacs", "orthanc"])
    args = parser.parse_args()
    datasets = make_studies(args.instances)
    results: dict[str, dict[str, str]] = {}
    for name, starter in (("minipacs", start_minipacs), ("orthanc", start_orthanc)):
        if args.only and args.only != name:
            continue
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            target = starter(Path(tmp))
            try:
                results[target.name] = bench(target, datasets, args.queries)
            finally:
                target.process.terminate()
                target.process.wait(timeout=30)
    names = list(results)
    rows = list(next(iter(results.values())))
    print(f"{args.instances} CT instances 256x256, {args.queries} queries, loopback")
    print(f"{'':36}" + "".join(f"{n:>14}" for n in names))
    for row in rows:
        print(f"{row:36}" + "".join(f"{results[n][row]:>14}" for n in names))


if __name__ == "__main__":
    main()
