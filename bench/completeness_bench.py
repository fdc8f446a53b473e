"""Cost of the ingest completeness check (`dicom.completeness.check_complete`).

Prints numbers; not a test. For a 512x512 CT (in memory and as a file), a large
multi-frame instance on disk and an RLE multi-frame (one fragment per frame), it times
the check against what ingest does with every instance anyway (SHA-256 of the bytes)
and against a whole ingest into a fresh folder/SQLite archive.

    .venv/bin/python bench/completeness_bench.py [--frames 1000] [--repeat 200]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless  # noqa: E402

from factories import make_instance  # noqa: E402
from minipacs.config import Settings  # noqa: E402
from minipacs.dicom.completeness import check_complete  # noqa: E402
from minipacs.node import open_archive  # noqa: E402


def per_call(fn: Callable[[], object], repeat: int) -> float:
    """Best-of-3 mean seconds per call."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def sha256_file(path: Path) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)


def report(name: str, size: int, check: float, sha: float, ingest: float | None) -> None:
    mb = size / 1e6
    line = (f"{name:<38} {mb:9.1f} MB  check {check * 1e6:9.0f} us ({check * 1e6 / mb:8.1f}"
            f" us/MB)  sha256 {sha * 1e6:10.0f} us  check/sha256 {check / sha:6.2%}")
    if ingest is not None:
        line += f"  check/ingest {check / ingest:6.2%}"
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=1000, help="frames of the large file")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        archive = open_archive(Settings(data_dir=folder / "data", load_samples=False))
        ct = make_instance(rows=512, columns=512)
        ct_path = folder / "ct.dcm"
        ct_path.write_bytes(ct)
        fresh = iter([make_instance(rows=512, columns=512) for _ in range(60)])
        ingest = per_call(lambda: archive.ingest(next(fresh)), 20)
        report("512x512 CT, bytes in memory", len(ct), per_call(lambda: check_complete(ct),
               args.repeat), per_call(lambda: hashlib.sha256(ct).digest(), args.repeat), ingest)
        report("512x512 CT, file", len(ct), per_call(lambda: check_complete(ct_path),
               args.repeat), per_call(lambda: sha256_file(ct_path), args.repeat), None)
        big = make_instance(rows=512, columns=512, frames=args.frames)
        big_path = folder / "big.dcm"
        big_path.write_bytes(big)
        del big
        report(f"512x512x{args.frames} multi-frame, file", big_path.stat().st_size,
               per_call(lambda: check_complete(big_path), 20),
               per_call(lambda: sha256_file(big_path), 1), None)
        rle = make_instance(rows=256, columns=256, frames=200, transfer_syntax=RLELossless)
        report("256x256x200 RLE (200 fragments), bytes", len(rle),
               per_call(lambda: check_complete(rle), 50),
               per_call(lambda: hashlib.sha256(rle).digest(), 50), None)
        deflated = make_instance(rows=512, columns=512,
                                 transfer_syntax=DeflatedExplicitVRLittleEndian)
        # us/MB of the inflated data set (the gradient deflates to a few kB)
        report("512x512 CT deflated, per inflated MB", len(ct),
               per_call(lambda: check_complete(deflated), 50),
               per_call(lambda: hashlib.sha256(deflated).digest(), 50), None)
        archive.close()


if __name__ == "__main__":
    main()
