"""Per-request latency of the small DICOMweb answers (one frame, QIDO by PatientID,
rendered), sequential requests on one keep-alive connection, median and p90.

    PYTHONPATH=src python bench/http_latency.py [--requests 200] [--slices 20]
        [--profile stacks.txt]

Starts minipacs on free ports (auth on, a radiologist token made with the CLI), stores a
small CT series (the benchmark's corpus, smoke size) with dcmtk storescu, then times the
requests. `--profile` runs py-spy (raw stacks) on the server during the frame and QIDO
loops. Prints the load average with the numbers: this machine is shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from pydicom import dcmread

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus as corpus_module  # noqa: E402
import measure  # noqa: E402
from servers import start_minipacs  # noqa: E402


def timed(client: httpx.Client, urls: list[str], accept: str, count: int) -> list[float]:
    samples = []
    for n in range(count):
        url = urls[n % len(urls)]
        start = time.perf_counter()
        response = client.get(url, headers={"Accept": accept})
        samples.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200 or not response.content:
            raise SystemExit(f"GET {url}: {response.status_code} {response.text[:300]}")
    return samples


def report(name: str, samples: list[float], cpu_seconds: float) -> None:
    """Wall-clock median and p90, and the server's CPU per request (user + system of
    its processes: less sensitive to the other work on a shared machine)."""
    ordered = sorted(samples)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    print(f"{name:<10} median {statistics.median(samples):6.2f} ms  p90 {p90:6.2f} ms  "
          f"server CPU {cpu_seconds * 1000 / len(samples):5.2f} ms/request  "
          f"(n={len(samples)}, load {os.getloadavg()[0]:.2f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per kind")
    parser.add_argument("--slices", type=int, default=20, help="CT slices stored")
    parser.add_argument("--profile", type=Path, help="py-spy raw stacks written here")
    parser.add_argument("--only", choices=["rendered", "frame", "qido"], action="append",
                        help="measure only these kinds (repeatable; default all)")
    parser.add_argument("--work", type=Path, help="working folder (default: a temp dir)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="http-latency-"))
    size = corpus_module.CorpusSize(ct_slices=args.slices, mr_slices=1, cr_images=1,
                                    us_instances=1, us_frames=1, small_images=1)
    corpus = corpus_module.build(work / "corpus", size, seed=13)
    node = start_minipacs(work / "minipacs", {})
    spy = None
    try:
        measure.ingest_storescu(node, corpus.files["ct"], 1)
        ct = corpus.series["ct"]
        study, series, patient = ct["study"], ct["series"], ct["patient_id"]
        sops = [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                for p in corpus.files["ct"]]
        frames = measure.instance_urls(node, study, series, sops, "/frames/1")
        rendered = measure.instance_urls(node, study, series, sops, "/rendered")
        qido = [f"{node.dicomweb}/studies?PatientID={patient}"]
        if args.profile:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record",
                                    "--format", "raw", "--rate", "500", "-o",
                                    str(args.profile), "--pid", str(node.process.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # py-spy attaching; the numbers below are what it samples
        kinds = [("rendered", rendered, "image/jpeg", len(rendered)),
                 ("frame", frames, measure.RAW_FRAME, args.requests),
                 ("qido", qido, "application/dicom+json", args.requests)]
        with measure.http_client(node) as client:
            timed(client, frames, measure.RAW_FRAME, 3)  # the token verified once
            for name, urls, accept, count in kinds:
                if args.only and name not in args.only:
                    continue
                before = node.cpu_seconds()
                samples = timed(client, urls, accept, count)
                report(name, samples, node.cpu_seconds() - before)
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=60)
        node.stop()


if __name__ == "__main__":
    main()
