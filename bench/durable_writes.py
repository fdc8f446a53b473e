"""What each server makes durable per stored instance: its sync calls, counted with strace.

Sends N instances with dcmtk `storescu` on one association to minipacs (defaults, auth
on) and, with `--orthanc`, to Debian's Orthanc (as `ingest.py` configures it), while
`strace -f -y` records the server's fsync / fdatasync / sync_file_range / syncfs calls
and the files it creates. Prints, per instance, how often each kind of file was synced
(the instance's own file, a directory, the index database, the index's write-ahead log)
and how many files were created, and writes JSON with `--json`. It explains part of the
ingest rows of `run.py`: a server that syncs less per instance waits less per
instance, and may lose what it acknowledged if the power fails.

    PYTHONPATH=src .venv/bin/python bench/durable_writes.py --count 200 --orthanc

Needs strace (`apt-get install strace`), permission to trace the server (root, or
ptrace_scope 0) and the `bench` extra (`pip install -e '.[bench]'`: psutil, which
`ingest.py`'s server starters use). A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from ingest import Target, send, start_minipacs, start_orthanc, write_instances

SYNC_CALLS = ("fsync", "fdatasync", "sync_file_range", "syncfs")
# `strace -y` prints each file descriptor with its path: fsync(8</data/blobs/...>) = 0
SYNC_LINE = re.compile(r"^\d+\s+(?P<call>\w+)\((?P<fd>\d+)<(?P<path>[^>]*)>")
CREATE_LINE = re.compile(r'^\d+\s+openat\([^"]*"(?P<path>[^"]+)",\s*[^)]*O_CREAT'
                         r"[^)]*\)\s*=\s*\d+")


def kind_of(path: str) -> str:
    """What a synced or created file is, from its path."""
    if path.endswith("-wal"):
        return "index write-ahead log"
    if path.endswith("-journal"):
        return "index rollback journal"
    if Path(path).is_dir():
        return "directory"
    name = Path(path).name
    if name == "index" or name.endswith((".db", ".sqlite")):  # Orthanc's, ours
        return "index database"
    return "instance file"


def traced(target: Target, paths: list[Path], log: Path) -> tuple[Counter[str], Counter[str]]:
    """Send `paths` on one association while strace records the server; the sync calls
    and file creations per kind of file."""
    strace = shutil.which("strace")
    if strace is None:
        raise SystemExit("strace is not installed: apt-get install -y strace")
    tracer = subprocess.Popen(
        [strace, "-f", "-y", "-qq", "-e", "trace=" + ",".join((*SYNC_CALLS, "openat")),
         "-o", str(log), "-p", str(target.process.pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # strace attaches to every thread before the first instance goes
    if tracer.poll() is not None:
        raise SystemExit(f"strace could not attach: {tracer.stderr.read().decode()[-500:]}"
                         if tracer.stderr else "strace could not attach")
    try:
        send(target, paths, 1)
    finally:
        tracer.terminate()
        tracer.wait(30)
    syncs: Counter[str] = Counter()
    created: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        if (sync := SYNC_LINE.match(line)) and sync["call"] in SYNC_CALLS:
            syncs[kind_of(sync["path"])] += 1
        elif created_file := CREATE_LINE.match(line):
            created[kind_of(created_file["path"])] += 1
    return syncs, created


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="instances sent to each server")
    parser.add_argument("--size", type=int, default=512, help="rows and columns of each image")
    parser.add_argument("--orthanc", action="store_true", help="also measure Orthanc")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-durable-"))
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        starters = [lambda w: start_minipacs(w, 1, [])]
        if args.orthanc:
            starters.append(start_orthanc)
        for n, starter in enumerate(starters):
            paths = write_instances(work / f"corpus-{n}", args.count + 1, args.size, f"d{n}")
            target = starter(work)
            try:
                send(target, paths[:1], 1)  # the study's folders and rows exist before
                syncs, created = traced(target, paths[1:], work / f"strace-{n}.txt")
            finally:
                target.stop()
            results[target.name] = {
                "syncs per instance": {k: v / args.count for k, v in syncs.items()},
                "files created per instance": {k: v / args.count for k, v in created.items()},
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, numbers in results.items():
        print(f"\n{name}, {args.count} instances of {args.size}² on one association:")
        for what, per_kind in numbers.items():
            for kind, value in sorted(per_kind.items()):
                print(f"  {what:28} {kind:26} {value:6.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
