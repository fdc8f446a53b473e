"""C-STORE ingest throughput of a minipacs node, with dcmtk `storescu` as the sender.

Writes N CT 512² and N 64² instances (reproducible: seeded UIDs and pixels) into a temp
folder, starts `minipacs serve` (auth on, an admin token made with the CLI, free ports),
sends each set with 1 and with 4 parallel `storescu` associations, checks over QIDO-RS
that every instance arrived, and prints instances/s and server CPU per instance (psutil,
the server and its worker processes). Optional side by side: `--orthanc` (Debian's
`Orthanc`), `--ceiling` (minipacs whose C-STORE handler answers at once, storing nothing:
our receive path alone; a pynetdicom SCP that stores nothing; dcmtk `storescp` writing
files). A number, not a test.

    PYTHONPATH=src .venv/bin/python bench/ingest.py --count 200 [--workers 2] \
        [--orthanc] [--ceiling] [--profile flame.svg]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ASSOCIATIONS = (1, 4)
# dcmtk's tools, not the same-named pynetdicom scripts a virtualenv may put first on PATH.
DCMTK = Path("/usr/bin")
# dcmtk reads TCP_NODELAY from the environment (the table was measured with it).
DCMTK_ENV = {"TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_instances(folder: Path, count: int, size: int, seed: str) -> list[Path]:
    """`count` CT instances of size² 16-bit pixels, four series of one study."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(seed) * 7919 + size)
    pixels = rng.integers(0, 4095, (size, size), dtype=np.uint16).tobytes()
    study = generate_uid(entropy_srcs=[seed, "study"])
    paths = []
    for i in range(count):
        series_no = i % 4
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = f"Nguyễn^Văn Bench {seed}"
        ds.PatientID = f"BENCH-{seed}"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[seed, "series", str(series_no)])
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[seed, "sop", str(i)])
        ds.SOPClassUID = CTImageStorage
        ds.Modality, ds.StudyDate, ds.StudyTime = "CT", "20240315", "101010"
        ds.AccessionNumber = f"ACC-{seed}"[:16]
        ds.SeriesNumber, ds.InstanceNumber = series_no + 1, i + 1
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = pixels
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@dataclass
class Target:
    name: str
    ae_title: str
    dicom_port: int
    process: subprocess.Popen[bytes]
    count_instances: Callable[[str], int] | None = None  # study UID -> instances stored

    def cpu_seconds(self) -> float:
        """User + system CPU of the server and every process it started."""
        try:
            root = psutil.Process(self.process.pid)
            total = 0.0
            for proc in [root, *root.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
            return total
        except psutil.NoSuchProcess:
            return 0.0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited early")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # polling for readiness
    raise SystemExit(f"{what} not listening on {port} after 60 s")


# minipacs with its C-STORE handler answering Success at once: what our receive path
# costs (the event-driven reactors, pynetdicom's DIMSE layer and spool file, our response
# encoding) without the archive's work. A measurement only, never a mode of the product.
RECEIVE_ONLY = textwrap.dedent("""
    import sys
    import minipacs.dimse.server as server
    server.handle_store = lambda event, archive, repair=None: 0x0000
    from minipacs.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def start_minipacs(work: Path, workers: int, extra: list[str], *,
                   receive_only: bool = False) -> Target:
    data = work / ("minipacs-receive-only" if receive_only else "minipacs")
    ready = data / "ready.json"
    data.mkdir()
    base = [sys.executable, "-m", "minipacs"]
    if receive_only:
        base = [sys.executable, "-c", RECEIVE_ONLY]
    proc = subprocess.Popen(
        [*base, "serve", "--data-dir", str(data), "--http-port", "0", "--dicom-port", "0",
         "--ready-file", str(ready), "--log-level", "WARNING",
         *(["--workers", str(workers)] if workers > 0 else []), *extra],
        stdout=subprocess.DEVNULL, stderr=open(work / "minipacs.log", "wb"))
    deadline = time.monotonic() + 120
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"minipacs did not start:\n{(work / 'minipacs.log').read_text()}")
        time.sleep(0.05)  # polling for readiness
    ports = json.loads(ready.read_text())
    if receive_only:
        return Target("minipacs, receive only", "MINIPACS", ports["dicom_port"], proc)
    made = subprocess.run([*base, "token", "create", "bench", "--role", "admin",
                           "--data-dir", str(data), *extra],
                          capture_output=True, text=True, check=True)
    token = made.stdout.strip().splitlines()[-1].strip()
    client = httpx.Client(base_url=ports["url"], timeout=60,
                          headers={"Authorization": f"Bearer {token}"})

    def count(study_uid: str) -> int:
        answer = client.get(f"/dicom-web/studies/{study_uid}/instances",
                            params={"limit": 100000})
        return len(answer.json()) if answer.status_code == 200 else 0

    return Target("minipacs", "MINIPACS", ports["dicom_port"], proc, count)


def start_orthanc(work: Path) -> Target:
    orthanc = shutil.which("Orthanc")
    if orthanc is None:
        raise SystemExit("Orthanc is not installed: apt-get install -y orthanc")
    dicom_port, http_port = free_port(), free_port()
    config = {"Name": "bench", "DicomAet": "ORTHANC", "DicomPort": dicom_port,
              "HttpPort": http_port, "StorageDirectory": str(work / "orthanc" / "storage"),
              "IndexDirectory": str(work / "orthanc" / "index"),
              "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
              "StorageCompression": False, "Plugins": []}
    (work / "orthanc.json").write_text(json.dumps(config))
    proc = subprocess.Popen([orthanc, str(work / "orthanc.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **DCMTK_ENV})
    wait_for_port(dicom_port, proc, "Orthanc")
    url = f"http://127.0.0.1:{http_port}"

    def count(study_uid: str) -> int:
        found = httpx.post(f"{url}/tools/find", json={
            "Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}, timeout=60)
        return len(found.json())

    wait_for_port(http_port, proc, "Orthanc HTTP")
    return Target("Orthanc", "ORTHANC", dicom_port, proc, count)


NULL_SCP = textwrap.dedent("""
    import sys
    from pynetdicom import AE, AllStoragePresentationContexts, ALL_TRANSFER_SYNTAXES, evt
    ae = AE("NULLSCP")
    for c in AllStoragePresentationContexts:
        ae.add_supported_context(c.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.start_server(("127.0.0.1", int(sys.argv[1])), block=True,
                    evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])
""")


def start_null_scp(work: Path) -> Target:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", NULL_SCP, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc, "pynetdicom null SCP")
    return Target("pynetdicom, stores nothing", "NULLSCP", port, proc)


def start_storescp(work: Path) -> Target:
    port = free_port()
    out = work / "storescp"
    out.mkdir()
    # --fork: one process per association, as dcmtk's own parallel receiver.
    proc = subprocess.Popen([str(DCMTK / "storescp"), "--fork", "-od", str(out), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **DCMTK_ENV})
    wait_for_port(port, proc, "storescp")
    return Target("dcmtk storescp, files", "STORESCP", port, proc)


def send(target: Target, paths: list[Path], associations: int) -> float:
    """Seconds to send `paths` over `associations` parallel storescu runs."""
    shares = [paths[i::associations] for i in range(associations)]
    start = time.perf_counter()
    env = {**os.environ, **DCMTK_ENV}
    runs = [subprocess.Popen([str(DCMTK / "storescu"), "-aec", target.ae_title, "127.0.0.1",
                              str(target.dicom_port), *map(str, share)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            for share in shares]
    for run in runs:
        _, err = run.communicate(timeout=1800)
        if run.returncode != 0:
            raise SystemExit(f"storescu to {target.name} failed: {err.decode()[-2000:]}")
    return time.perf_counter() - start


def measure(target: Target, corpus: dict[tuple[str, int], tuple[str, list[Path]]]
            ) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for (kind, associations), (study_uid, paths) in corpus.items():
        cpu_before = target.cpu_seconds()
        seconds = send(target, paths, associations)
        cpu = target.cpu_seconds() - cpu_before
        stored = target.count_instances(study_uid) if target.count_instances else len(paths)
        if stored != len(paths):
            raise SystemExit(f"{target.name}: {stored} of {len(paths)} {kind} instances "
                             "found after storescu reported success")
        label = f"{kind}, {associations} assoc"
        results[label] = {"inst_per_s": len(paths) / seconds,
                          "cpu_ms_per_inst": 1000 * cpu / len(paths)}
        print(f"  {target.name:<28} {label:<18} {len(paths) / seconds:7.1f} inst/s   "
              f"server CPU {1000 * cpu / len(paths):5.1f} ms/inst", flush=True)
    return results


def profile_summary(collapsed: Path, top: int = 25) -> str:
    """Inclusive share of CPU samples per function (py-spy's collapsed stacks, idle
    threads not sampled), over every thread of the server: association threads, the
    group committer, the HTTP loop."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        for frame in set(stack.split(";")):
            name = frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0] + ")" \
                if " (" in frame else frame
            inclusive[name] = inclusive.get(name, 0) + int(count)
    lines = [f"profile: {total} CPU samples"]
    for name, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * count / max(total, 1):5.1f}%  {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="instances per run")
    parser.add_argument("--workers", type=int, default=0,
                        help="minipacs serve --workers N (default: none given, minipacs's "
                        "own default of one worker per core)")
    parser.add_argument("--orthanc", action="store_true", help="also measure Orthanc")
    parser.add_argument("--ceiling", action="store_true",
                        help="also minipacs with a C-STORE handler that stores nothing, "
                        "a pynetdicom SCP storing nothing and dcmtk storescp")
    parser.add_argument("--profile", type=Path,
                        help="py-spy record the minipacs server (collapsed stacks) into this file")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra `minipacs serve` argument (repeatable)")
    args = parser.parse_args()
    random.seed(13)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        targets: list[Callable[[Path], Target]] = [
            lambda w: start_minipacs(w, args.workers, args.server_arg)]
        if args.orthanc:
            targets.append(start_orthanc)
        if args.ceiling:
            targets += [lambda w: start_minipacs(w, 1, args.server_arg, receive_only=True),
                        start_null_scp, start_storescp]
        everything: dict[str, dict[str, dict[str, float]]] = {}
        for n, starter in enumerate(targets):
            # Fresh instances (new UIDs) for every target and run: nothing is a duplicate.
            corpus = {}
            for kind, size in (("CT 512²", 512), ("64²", 64)):
                for associations in ASSOCIATIONS:
                    seed = f"{n}-{size}-{associations}"
                    paths = write_instances(work / "corpus" / seed, args.count, size, seed)
                    study = generate_uid(entropy_srcs=[seed, "study"])
                    corpus[(kind, associations)] = (study, paths)
            target = starter(work)
            spy = None
            if args.profile and target.name == "minipacs":
                spy = subprocess.Popen(["py-spy", "record", "--subprocesses", "--nonblocking",
                                        "--rate", "400",
                                        "--format", "raw", "-o", str(args.profile),
                                        "--pid", str(target.process.pid)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                everything[target.name] = measure(target, corpus)
            finally:
                if spy is not None:
                    spy.send_signal(2)  # SIGINT: py-spy writes its flame graph and exits
                    spy.wait(60)
                    print(profile_summary(args.profile))
                target.stop()
            shutil.rmtree(work / "corpus")
        if args.json:
            args.json.write_text(json.dumps(everything, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
