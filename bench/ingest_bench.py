"""Ingest throughput: blob folder vs S3 (direct) vs S3 behind the local spool.

Prints numbers; not a test. Each run ingests the same small CT instances into a fresh
archive (SQLite index) from 4 threads, as 4 modalities pushing at once would, and reports
instances per second and the ratio to the folder store. S3 is moto's standalone server on
loopback, which is faster per request than a real MinIO over a network: the gap to a real
deployment is larger, which is what the spool is for.

    .venv/bin/python bench/ingest_bench.py [--count 400] [--threads 4]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from backends import MotoServer  # noqa: E402
from factories import make_instance  # noqa: E402
from minipacs.config import Settings  # noqa: E402
from minipacs.node import open_archive  # noqa: E402


def run(name: str, settings: Settings, instances: list[bytes], threads: int) -> float:
    archive = open_archive(settings)
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda data: archive.ingest(data), instances))
        acknowledged = time.perf_counter() - start
        drained = archive.wait_uploaded(timeout=600)
        uploaded = time.perf_counter() - start
    finally:
        archive.close()
    rate = len(instances) / acknowledged
    extra = f", all in S3 after {uploaded:.2f} s" if drained and uploaded > acknowledged + 0.01 \
        else ""
    print(f"{name:<14} {len(instances)} instances acknowledged in {acknowledged:6.2f} s "
          f"= {rate:7.1f} /s{extra}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    instances = [make_instance(modality="CT") for _ in range(args.count)]
    size = sum(map(len, instances)) // len(instances)
    print(f"{args.count} CT instances of ~{size} bytes, {args.threads} threads, SQLite index")
    scratch = Path(tempfile.mkdtemp(prefix="minipacs-bench-"))
    moto = MotoServer(scratch).start()
    try:
        s3 = {"storage": "s3", "s3_endpoint": moto.endpoint, "s3_access_key": moto.access_key,
              "s3_secret_key": moto.secret_key}
        folder = run("folder", Settings(data_dir=scratch / "folder", load_samples=False),
                     instances, args.threads)
        direct = run("s3 direct", Settings(data_dir=scratch / "s3", load_samples=False,
                                           s3_spool=False, s3_bucket="bench-direct", **s3),
                     instances, args.threads)
        spooled = run("s3 + spool", Settings(data_dir=scratch / "spool", load_samples=False,
                                             s3_bucket="bench-spool", **s3),
                      instances, args.threads)
        print(f"folder / s3 direct = {folder / direct:.2f}x; "
              f"folder / s3 + spool = {folder / spooled:.2f}x")
    finally:
        moto.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
