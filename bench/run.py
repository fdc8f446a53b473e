"""minipacs against Orthanc on this machine, in one run: the benchmark command.

    python bench/run.py                 # full corpus (CT 512x512x300, MR, CR, US, ...)
    python bench/run.py --smoke         # a few instances of each, in seconds (CI)
    python bench/run.py --json out.json --seed 7 --repeat 50

Builds (or reuses, from --cache) the synthetic corpus, starts minipacs (defaults, auth
on) and Orthanc (installed with apt-get when missing and root) on free loopback ports,
and measures both: ingest with storescu and pynetdicom on 1 and 4 associations (CT and
small images, each on a fresh server, with server CPU per instance), C-FIND (pynetdicom,
and dcmtk findscu per query on an open association), associate +
C-ECHO + release, QIDO-RS, WADO-RS metadata cold and warm, series retrieve, one frame,
rendered, thumbnail, C-MOVE and C-GET of the CT series, and peak RSS. The ingest ceiling
is measured too: dcmtk storescp (files, no index) and a pynetdicom SCP that stores
nothing. Prints a table with minipacs/Orthanc ratios and the targets of issue #13, and
writes the numbers as JSON. Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus as corpus_module  # noqa: E402
import measure  # noqa: E402
from pydicom import dcmread  # noqa: E402
from servers import (  # noqa: E402
    Node,
    free_port,
    start_minipacs,
    start_null_scp,
    start_orthanc,
    start_storescp,
)

SERVERS = ("minipacs", "Orthanc")
CEILINGS = ("storescp", "pynetdicom null SCP")
RECEIVER = "BENCHRECV"  # movescu's own storage SCP, the C-MOVE destination


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    target: float | None = None  # the ratio minipacs/Orthanc, None: no target


ROWS = [
    Row("ingest_ct_storescu_1", "C-STORE CT 512², storescu, 1 assoc", "inst/s", True, 1.0),
    Row("ingest_ct_storescu_4", "C-STORE CT 512², storescu, 4 assoc", "inst/s", True, 1.2),
    Row("ingest_small_storescu_1", "C-STORE 64², storescu, 1 assoc", "inst/s", True),
    Row("ingest_small_storescu_4", "C-STORE 64², storescu, 4 assoc", "inst/s", True, 1.0),
    Row("ingest_ct_pynetdicom_1", "C-STORE CT 512², pynetdicom, 1 assoc", "inst/s", True),
    Row("ingest_ct_pynetdicom_4", "C-STORE CT 512², pynetdicom, 4 assoc", "inst/s", True),
    Row("ingest_small_pynetdicom_1", "C-STORE 64², pynetdicom, 1 assoc", "inst/s", True),
    Row("ingest_small_pynetdicom_4", "C-STORE 64², pynetdicom, 4 assoc", "inst/s", True),
    Row("cpu_per_ct_instance", "server CPU per CT instance (storescu, 1)", "ms", False),
    Row("cpu_per_small_instance", "server CPU per 64² instance (storescu, 1)", "ms", False),
    Row("cfind", "C-FIND study by PatientID, reused assoc", "ms", False, 1.0),
    Row("cfind_findscu", "C-FIND study by PatientID, findscu, per query", "ms", False, 1.0),
    Row("echo", "associate + C-ECHO + release", "ms", False, 1.0),
    Row("qido", "QIDO-RS studies by PatientID", "ms", False, 0.8),
    Row("metadata_cold", "WADO-RS study metadata, first", "ms", False, 0.2),
    Row("metadata_warm", "WADO-RS study metadata, again", "ms", False, 0.2),
    Row("series_retrieve", "WADO-RS series retrieve (CT, curl)", "MB/s", True, 0.8),
    Row("frame", "WADO-RS one frame (CT, raw)", "ms", False, 1.5),
    Row("rendered", "WADO-RS rendered JPEG (CT)", "ms", False, 1.5),
    Row("thumbnail", "WADO-RS thumbnail (CT)", "ms", False),
    Row("cmove", "C-MOVE CT series to movescu", "s", False, 2.0),
    Row("cget", "C-GET CT series (pynetdicom)", "s", False, 2.0),
    Row("peak_rss", "server peak RSS (whole run on one server)", "MB", False),
]
INGEST_KEYS = [r.key for r in ROWS if r.key.startswith("ingest_")]


def starter(name: str, receiver_port: int, workers: int = 0) -> Callable[[Path], Node]:
    destinations = {RECEIVER: receiver_port}
    return {
        "minipacs": lambda work: start_minipacs(work, destinations, workers),
        "Orthanc": lambda work: start_orthanc(work, destinations),
        "storescp": start_storescp,
        "pynetdicom null SCP": start_null_scp,
    }[name]


def ingest_variants(corpus: corpus_module.Corpus, work: Path) -> dict[str, list[Path]]:
    """Each ingest run's own copy of its images (new UIDs: nothing is a duplicate, and
    one server serves every run), made once, before any server starts, and sent to every
    server: each server gets the same files.

    They are kept until the end of the run and written back first (`os.sync`), so no
    measurement pays for the copies' writeback or for their deletion. On a file system
    without a journal (as on the 2-core VM) ext4 will not reuse an inode freed in the
    last 60-300 s and scans past every such inode for each file it creates; deleting
    each run's copies before the next run made later runs pay for that scan, most of all
    a server whose files land in the same block group as the copies (profile in
    docs/performance.md, "Eleventh pass")."""
    variants = {}
    for run, key in enumerate(INGEST_KEYS, start=1):
        category = key.split("_")[1]
        variants[key] = corpus_module.variant(corpus.files[category], work / key, 1000 + run)
    os.sync()
    return variants


def ingest_runs(node: Node, variants: dict[str, list[Path]],
                results: dict[str, dict[str, float]]) -> None:
    """Every ingest run against `node`, each with its own copy of the images
    (`ingest_variants`)."""
    for key, files in variants.items():
        _, category, tool, associations = key.split("_")
        before = node.cpu_seconds()
        send = measure.ingest_storescu if tool == "storescu" else measure.ingest_pynetdicom
        rate = send(node, files, int(associations))
        results[key][node.name] = rate
        if tool == "storescu" and associations == "1" and node.name in SERVERS:
            cpu = (node.cpu_seconds() - before) * 1000 / len(files)
            results[f"cpu_per_{category}_instance"][node.name] = cpu
        print(f"  {node.name}: {key} {rate:.1f} inst/s", flush=True)


SERVICE_KEYS = ("cfind", "cfind_findscu", "echo", "qido", "metadata_cold", "metadata_warm",
                "series_retrieve", "frame", "rendered", "thumbnail", "cmove", "cget",
                "peak_rss")


def service_runs(node: Node, corpus: corpus_module.Corpus, receiver_port: int, repeat: int,
                 results: dict[str, dict[str, float]],
                 only: frozenset[str] = frozenset(SERVICE_KEYS)) -> None:
    name = node.name
    measure.ingest_storescu(node, [p for category, files in corpus.files.items()
                                   if category != "us" for p in files], 4)
    measure.ingest_storescu(node, corpus.files["us"], 1, ("-xy",))  # JPEG Baseline
    ct = corpus.series["ct"]
    study, series, patient = ct["study"], ct["series"], ct["patient_id"]
    sops = [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in corpus.files["ct"]]
    urls = functools.partial(measure.instance_urls, node, study, series, sops)
    runs: dict[str, Callable[[], Any]] = {
        "cfind": lambda: measure.cfind_ms(node, patient, repeat),
        "cfind_findscu": lambda: measure.cfind_findscu_ms(node, patient, max(repeat // 5, 3)),
        "echo": lambda: measure.echo_ms(node, repeat),
        "qido": lambda: measure.qido_ms(node, patient, repeat),
        "metadata": lambda: measure.metadata_ms(node, study, max(repeat // 5, 3)),
        "series_retrieve": lambda: measure.series_retrieve_mb_s(node, study, series,
                                                                max(repeat // 5, 3)),
        "frame": lambda: measure.pixels_ms(node, urls("/frames/1"), measure.RAW_FRAME, repeat),
        "rendered": lambda: measure.pixels_ms(node, urls("/rendered"), "image/jpeg", repeat),
        "thumbnail": lambda: _thumbnail(node, study, series, sops, repeat),
        "cmove": lambda: measure.cmove_s(node, study, series, RECEIVER, receiver_port),
        "cget": lambda: measure.cget_s(node, study, series, len(sops)),
        "peak_rss": node.peak_rss_mb,
    }
    got: dict[str, float] = {}
    for key, run in runs.items():
        if key == "metadata":
            if {"metadata_cold", "metadata_warm"} & only:
                got["metadata_cold"], got["metadata_warm"] = run()
        elif key in only:
            got[key] = run()
    for key, value in got.items():
        results[key][name] = value
        print(f"  {name}: {key} {value:.2f}", flush=True)


def _thumbnail(node: Node, study: str, series: str, sops: list[str], repeat: int) -> float:
    urls = measure.instance_urls(node, study, series, sops, "/thumbnail")
    try:
        return measure.pixels_ms(node, urls, "image/jpeg", repeat)
    except SystemExit:
        if node.name != "Orthanc":
            raise
    # Orthanc's DICOMweb plugin 1.7 has no /thumbnail (PS3.18 §9.7.2 came later): its own
    # REST preview of the instance is the nearest equivalent (a PNG of the first frame).
    with measure.http_client(node) as client:
        ids = [client.post(f"{node.http_url}/tools/lookup", content=sop).json()[0]["ID"]
               for sop in sops[:repeat]]
    return measure.pixels_ms(node, [f"{node.http_url}/instances/{i}/preview" for i in ids],
                             "image/png", repeat)


def ratio(row: Row, values: dict[str, float]) -> float | None:
    ours, theirs = values.get("minipacs"), values.get("Orthanc")
    if not ours or not theirs:
        return None
    return ours / theirs


def met(row: Row, r: float | None) -> str:
    if row.target is None or r is None:
        return ""
    ok = r >= row.target if row.higher_is_better else r <= row.target
    return "yes" if ok else "NO"


def _cell(v: float | None) -> str:
    if v is None:
        return f"{'':9}"
    return f"{v:9.1f}" if v >= 10 else f"{v:9.2f}"


def table(results: dict[str, dict[str, float]]) -> str:
    head = (f"{'measurement':44} {'unit':>6} {'minipacs':>9} {'Orthanc':>9} {'ratio':>6} "
            f"{'target':>7} {'met':>4} {'storescp':>9} {'null SCP':>9}")
    lines = [head, "-" * len(head)]
    for row in ROWS:
        values = results[row.key]
        r = ratio(row, values)
        target = "" if row.target is None else ("≥" if row.higher_is_better else "≤") + \
            f"{row.target:g}×"

        ours, theirs, files, null = (_cell(values.get(n)) for n in (*SERVERS, *CEILINGS))
        lines.append(f"{row.label:44} {row.unit:>6} {ours} {theirs} "
                     f"{'' if r is None else f'{r:.2f}':>6} {target:>7} {met(row, r):>4} "
                     f"{files} {null}")
    return "\n".join(lines)


def work_filesystem(path: Path) -> str:
    """The file system both servers store to (under `path`), e.g. "ext4 on /dev/vda,
    no journal". Storage decides the ingest rows: each sync waits for the device, and on
    ext4 without a journal each file created scans past the inodes freed in the last
    minutes (`ingest_variants`)."""
    path = path.resolve()
    mounts = [m for m in psutil.disk_partitions(all=True)
              if path.is_relative_to(m.mountpoint)]
    if not mounts:
        return "unknown"
    mount = max(mounts, key=lambda m: len(m.mountpoint))
    described = f"{mount.fstype} on {mount.device}"
    if mount.fstype == "ext4":
        journal = any(Path("/proc/fs/jbd2").glob(f"{Path(mount.device).name}-*"))
        described += ", journal" if journal else ", no journal"
    return described


def orthanc_version() -> str:
    try:
        out = subprocess.run(["Orthanc", "--version"], capture_output=True, text=True,
                             timeout=30).stdout
        return out.splitlines()[0] if out else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="a few instances of each kind: seconds, for CI")
    parser.add_argument("--seed", type=int, default=7, help="corpus seed (default 7)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="samples per latency (default 50; 5 with --smoke)")
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "minipacs-bench", help="where corpora are kept between runs")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"),
                        help="where to write the numbers (default bench-results.json)")
    parser.add_argument("--only", choices=SERVERS, help="measure one server only")
    parser.add_argument("--no-ceiling", action="store_true",
                        help="skip storescp and the pynetdicom null SCP")
    parser.add_argument("--skip-ingest", action="store_true",
                        help="only queries and retrieves (the corpus is still stored once)")
    parser.add_argument("--nagle-peers", action="store_true",
                        help="dcmtk peers with Nagle on (default: TCP_NODELAY, as issue "
                        "#13's table; see bench/measure.py)")
    parser.add_argument("--minipacs-workers", type=int, default=0, metavar="N",
                        help="start minipacs with `serve --workers N` (default: none given, "
                        "minipacs on its defaults as issue #13 asks: one worker per core, "
                        "at most four)")
    parser.add_argument("--rows", type=lambda v: frozenset(v.split(",")),
                        default=frozenset(SERVICE_KEYS), metavar="KEY,...",
                        help="measure only these query/retrieve rows (keys as in the JSON, "
                        "e.g. cmove,cget); with --skip-ingest --no-ceiling, a focused run")
    args = parser.parse_args(argv)
    if unknown := args.rows - set(SERVICE_KEYS):
        parser.error(f"--rows: unknown {sorted(unknown)}; known: {', '.join(SERVICE_KEYS)}")
    measure.PEER_NAGLE = args.nagle_peers
    size = corpus_module.CorpusSize.smoke() if args.smoke else corpus_module.CorpusSize.full()
    repeat = args.repeat or (5 if args.smoke else 50)
    started = time.monotonic()
    print(f"corpus: {size} seed {args.seed} (cache {args.cache})", flush=True)
    corpus = corpus_module.cached(args.cache, size, args.seed)
    results: dict[str, dict[str, float]] = {row.key: {} for row in ROWS}
    minipacs_workers = 0  # the minipacs node's processes, once started
    receiver_port = free_port()
    servers = [args.only] if args.only else list(SERVERS)
    ceilings = [] if args.no_ceiling else list(CEILINGS)
    with tempfile.TemporaryDirectory(prefix="minipacs-bench-") as tmp:
        storage = work_filesystem(Path(tmp))
        print(f"servers store to {tmp}: {storage} (TMPDIR chooses where)", flush=True)
        variants = {} if args.skip_ingest else ingest_variants(corpus, Path(tmp) / "variants")
        for name in servers + ([] if args.skip_ingest else ceilings):
            print(f"{name}: ingest", flush=True)
            node = starter(name, receiver_port, args.minipacs_workers)(Path(tmp) / name)
            if name == "minipacs":
                minipacs_workers = node.processes
                print(f"minipacs: {node.processes} worker process(es)", flush=True)
            try:
                if not args.skip_ingest:
                    ingest_runs(node, variants, results)
                if name in servers:
                    print(f"{name}: queries and retrieves", flush=True)
                    service_runs(node, corpus, receiver_port, repeat, results, args.rows)
            finally:
                node.stop()
    report = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.monotonic() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "orthanc": orthanc_version(),
                    "storage": storage},
        "corpus": {"seed": args.seed, "smoke": args.smoke, **size.__dict__,
                   "ct_series_bytes": corpus.size_bytes("ct")},
        "repeat": repeat,
        "peer_tcp_nodelay": not args.nagle_peers,
        "minipacs_workers": minipacs_workers,
        "measurements": {
            row.key: {"label": row.label, "unit": row.unit, **results[row.key],
                      "ratio": ratio(row, results[row.key]), "target": row.target,
                      "higher_is_better": row.higher_is_better,
                      "met": met(row, ratio(row, results[row.key])) or None}
            for row in ROWS
        },
    }
    print(table(results))
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"written to {args.json} ({report['seconds']} s)")
    return report


if __name__ == "__main__":
    main()
