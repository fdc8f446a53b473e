"""DIMSE round-trip latency of a minipacs node: associate + C-ECHO + release, and C-FIND
on one reused association (median of N each). A number, not a test.

    .venv/bin/python bench/dimse_latency.py --repeat 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)


@contextlib.contextmanager
def started_minipacs() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A `minipacs serve` on an empty temporary archive: the process and its DICOM port."""
    with tempfile.TemporaryDirectory(prefix="bench-dimse-") as tmp:
        ready = Path(tmp) / "ready.json"
        server = subprocess.Popen(
            [sys.executable, "-m", "minipacs", "serve", "--data-dir", tmp, "--http-port", "0",
             "--dicom-port", "0", "--ready-file", str(ready), "--log-level", "WARNING"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while not ready.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("minipacs did not start")
                time.sleep(0.05)  # polling for readiness
            yield server, json.loads(ready.read_text())["dicom_port"]
        finally:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with started_minipacs() as (_, port):
        ae = AE(ae_title="BENCH")
        ae.add_requested_context(Verification)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        echoes = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            assoc = ae.associate("127.0.0.1", port, ae_title="MINIPACS")
            assoc.send_c_echo()
            assoc.release()
            echoes.append(time.perf_counter() - start)
        assoc = ae.associate("127.0.0.1", port, ae_title="MINIPACS")
        finds = []
        for _ in range(args.repeat):
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.PatientID = "BN2024000123"
            query.StudyInstanceUID = ""
            start = time.perf_counter()
            list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
            finds.append(time.perf_counter() - start)
        assoc.release()
    print(f"associate + C-ECHO + release: median {statistics.median(echoes) * 1000:.1f} ms; "
          f"C-FIND on one association: median {statistics.median(finds) * 1000:.1f} ms "
          f"({args.repeat} each)")


if __name__ == "__main__":
    main()
