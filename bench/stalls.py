"""Repeated ingest runs against one minipacs: stalls, lost responses, failed associations.

    PYTHONPATH=src .venv/bin/python bench/stalls.py [--runs 100] [--instances 20]
        [--bound 60] [--json stalls.json]

Starts `minipacs serve` on its defaults (bench/servers.py), then runs `--runs` ingest runs
one after the other, each a new small study (`--instances` 64x64 CT images, new UIDs),
cycling through three kinds of peer:

* pynetdicom, 1 association;
* pynetdicom, 4 concurrent associations (the study split between them);
* dcmtk `storescu`, 1 association.

Each peer runs in its own process and every run has a time bound (`--bound` seconds; the
peers' own DIMSE/ACSE/network timeouts are set to it too, so a peer waiting on an answer
fails instead of hanging). After each run, QIDO-RS counts the study's instances. Reported:

* **stall**: the run exceeded its bound (its peers are killed);
* **lost response**: an instance sent but not answered (no C-STORE-RSP), or answered
  Success but not found by QIDO-RS afterwards;
* **failed association**: refused, aborted, or ended before every instance was answered;
* the server log's "Network timeout reached" and abort lines.

Prints a summary and writes every run as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from servers import Node, dcmtk, start_minipacs  # noqa: E402

KINDS = ("pynetdicom x1", "pynetdicom x4", "storescu x1")


def write_study(folder: Path, count: int, run: int) -> tuple[str, list[Path]]:
    """`count` 64x64 CT images of one new study, as files."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(run)
    paths = []
    for number in range(1, count + 1):
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID = f"STALL-{run:03d}"
        ds.PatientName = f"Trần^Thị Lần {run}"
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.Modality = "CT"
        ds.StudyDate = "20260102"
        ds.SeriesNumber, ds.InstanceNumber = 1, number
        ds.Rows = ds.Columns = 64
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.PixelData = rng.integers(0, 4096, (64, 64), dtype=np.uint16).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = folder / f"{number:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return study, paths


# --------------------------------------------------------------------------- the peers
def pynetdicom_peer(host: str, port: int, called: str, bound: float, files: list[str]) -> None:
    """One pynetdicom SCU on one association (run as `stalls.py --peer ...`): prints one
    JSON line, the status answered for each SOP Instance UID (null: no answer)."""
    from pydicom import dcmread
    from pynetdicom import AE

    datasets = [dcmread(p) for p in files]
    ae = AE(ae_title="STALLS")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = bound
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    answers: dict[str, int | None] = {str(ds.SOPInstanceUID): None for ds in datasets}
    assoc = ae.associate(host, port, ae_title=called)
    outcome = "refused"
    if assoc.is_established:
        outcome = "released"
        for ds in datasets:
            status = assoc.send_c_store(ds)
            if status and "Status" in status:
                answers[str(ds.SOPInstanceUID)] = int(status.Status)
            if not assoc.is_established:
                outcome = "aborted" if assoc.is_aborted else "ended"
                break
        if assoc.is_established:
            assoc.release()
    print(json.dumps({"association": outcome, "answers": answers}), flush=True)


def sop_uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def run_peers(commands: list[list[str]], bound: float) -> tuple[list[str], bool, float]:
    """Start every command at once; their stdouts, whether any overran `bound`, seconds."""
    started = time.monotonic()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for cmd in commands]
    outputs = ["" for _ in procs]
    stalled = False

    def collect(i: int, proc: subprocess.Popen[str]) -> None:
        outputs[i] = proc.communicate()[0]

    readers = [threading.Thread(target=collect, args=(i, p)) for i, p in enumerate(procs)]
    for reader in readers:
        reader.start()
    for proc in procs:
        left = bound - (time.monotonic() - started)
        try:
            proc.wait(timeout=max(left, 0.0))
        except subprocess.TimeoutExpired:
            stalled = True
            proc.kill()
            proc.wait(timeout=30)
    for reader in readers:
        reader.join(timeout=30)
    return outputs, stalled, time.monotonic() - started


def one_run(node: Node, kind: str, paths: list[Path], bound: float,
            work: Path) -> dict[str, Any]:
    uids = [sop_uid(p) for p in paths]
    answers: dict[str, int | None] = dict.fromkeys(uids)
    failed_associations = 0
    if kind.startswith("pynetdicom"):
        shares = 4 if kind.endswith("x4") else 1
        commands = [[sys.executable, __file__, "--peer", "127.0.0.1", str(node.dicom_port),
                     node.ae_title, str(bound), *map(str, paths[i::shares])]
                    for i in range(shares)]
        outputs, stalled, seconds = run_peers(commands, bound)
        for out in outputs:
            lines = [line for line in out.splitlines() if line.startswith("{")]
            if not lines:
                failed_associations += 1
                continue
            report = json.loads(lines[-1])
            answers.update(report["answers"])
            failed_associations += report["association"] != "released"
    else:
        command = [dcmtk("storescu"), "-ll", "info", "-aet", "STALLS", "-aec", node.ae_title,
                   "-xe", "-to", str(int(bound)), "-ta", str(int(bound)),
                   "-td", str(int(bound)), "127.0.0.1", str(node.dicom_port),
                   *map(str, paths)]
        outputs, stalled, seconds = run_peers([command], bound)
        # storescu logs each response in the order sent: "Received Store Response (Success)"
        statuses = [line for line in outputs[0].splitlines()
                    if "Received Store Response" in line]
        # Fewer responses than files when the association ended early: the rest stay None.
        for uid, line in zip(uids, statuses, strict=False):
            answers[uid] = 0 if "(Success)" in line else 0xFFFF
        if "Association Release" not in outputs[0] and "Releasing Association" not in \
                outputs[0]:
            failed_associations += 1
    return {"kind": kind, "seconds": seconds, "stalled": stalled,
            "failed_associations": failed_associations, "answers": answers}


def stored_count(node: Node, study: str) -> int:
    answer = httpx.get(f"{node.dicomweb}/studies/{study}/instances", headers=node.headers,
                       timeout=60)
    if answer.status_code == 204:
        return 0
    answer.raise_for_status()
    return len(answer.json())


def server_log_lines(node: Node) -> dict[str, int]:
    text = (node.work / "minipacs.log").read_text(errors="replace")
    return {"network_timeout": text.count("Network timeout reached"),
            "aborted": text.count("Abort"),
            "warnings": text.count("WARNING"), "errors": text.count("ERROR")}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--peer"]:
        host, port, called, bound = argv[1], int(argv[2]), argv[3], float(argv[4])
        pynetdicom_peer(host, port, called, bound, argv[5:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100, help="ingest runs (default 100)")
    parser.add_argument("--instances", type=int, default=20,
                        help="64x64 instances per run, one study (default 20)")
    parser.add_argument("--bound", type=float, default=60.0,
                        help="seconds a run may take before it counts as a stall (default 60)")
    parser.add_argument("--json", type=Path, default=Path("stalls-results.json"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="minipacs-stalls-") as tmp:
        work = Path(tmp)
        node = start_minipacs(work / "minipacs", {})
        runs: list[dict[str, Any]] = []
        try:
            for number in range(args.runs):
                kind = KINDS[number % len(KINDS)]
                study, paths = write_study(work / f"run{number:03d}", args.instances, number)
                run = one_run(node, kind, paths, args.bound, work)
                stored = stored_count(node, study)
                acknowledged = sum(1 for s in run["answers"].values()
                                   if s is not None and s in (0x0000, 0xB000))
                unanswered = sum(1 for s in run["answers"].values() if s is None)
                refused = len(run["answers"]) - acknowledged - unanswered
                run.update(number=number, study=study, stored=stored,
                           acknowledged=acknowledged, unanswered=unanswered,
                           refused=refused,
                           # acknowledged but not stored, or never answered at all
                           lost=max(acknowledged - stored, 0) + unanswered)
                runs.append(run)
                flag = " STALL" if run["stalled"] else ""
                print(f"run {number + 1:3d}/{args.runs} {kind:<14} {run['seconds']:6.2f} s "
                      f"ack {acknowledged:2d} stored {stored:2d} lost {run['lost']}"
                      f"{flag}", flush=True)
        finally:
            node.stop()
        log = server_log_lines(node)
    load = os.getloadavg()
    summary: dict[str, Any] = {"runs": len(runs), "load_average": load,
                               "bound_seconds": args.bound, "server_log": log}
    print()
    print(f"{len(runs)} runs of {args.instances} instances, bound {args.bound:.0f} s "
          f"(load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}):")
    print("| peer | runs | stalls | lost responses | failed associations | refused "
          "| median s | max s |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in KINDS:
        mine = [r for r in runs if r["kind"] == kind]
        if not mine:
            continue
        times = sorted(r["seconds"] for r in mine)
        row = {"runs": len(mine), "stalls": sum(r["stalled"] for r in mine),
               "lost": sum(r["lost"] for r in mine),
               "failed_associations": sum(r["failed_associations"] for r in mine),
               "refused": sum(r["refused"] for r in mine),
               "median_seconds": times[len(times) // 2], "max_seconds": times[-1]}
        summary[kind] = row
        print(f"| {kind} | {row['runs']} | {row['stalls']} | {row['lost']} | "
              f"{row['failed_associations']} | {row['refused']} | "
              f"{row['median_seconds']:.2f} | {row['max_seconds']:.2f} |")
    print(f"server log: {log}")
    args.json.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))
    print(f"wrote {args.json}")
    bad = sum(r["stalled"] + r["lost"] + r["failed_associations"] for r in runs)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
