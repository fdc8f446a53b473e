"""Peak memory of the server while one very large multi-frame instance goes in and out.

    PYTHONPATH=src .venv/bin/python bench/memory.py [--size-mb 1024] [--json memory.json]

Writes a multi-frame CT of `--size-mb` MiB of pixel data to disk without ever holding it
(the header with pydicom, then the Pixel Data element's header with its exact length and
the pixel bytes in 8 MiB chunks), starts `minipacs serve` on its defaults (bench/servers.py)
and sends or fetches the instance through each door in turn:

* C-STORE with pynetdicom (`send_c_store` of the file path: pynetdicom streams it) and with
  dcmtk `storescu`;
* STOW-RS with httpx, the multipart body streamed from the file in chunks;
* WADO-RS retrieve of the instance (multipart/related; application/dicom), read as a
  stream and counted;
* WADO-RS frames: three frames (first, middle, last) in one request.

Before each door the server's resident-memory high-water mark is reset (writing 5 to
/proc/PID/clear_refs, Linux >= 4.0), so the table shows each door's own peak: VmHWM after
the door minus VmRSS before it. Prints a table and writes every number as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from servers import Node, dcmtk, start_minipacs  # noqa: E402

MiB = 1024 * 1024
ROWS = COLUMNS = 512
FRAME_BYTES = ROWS * COLUMNS * 2  # 16-bit monochrome
CHUNK = 8 * MiB
DOOR_TIMEOUT = 1800.0  # seconds one door may take with a 1 GiB instance on a busy machine
# The bound documented in docs/performance.md "Bounded memory": what one door may add to
# the server's resident memory, whatever the instance's size.
PEAK_BOUND_MB = 64


# --------------------------------------------------------------------------- the instance
def write_big_instance(path: Path, size_mb: int) -> dict[str, Any]:
    """A multi-frame CT with `size_mb` MiB of 512x512 16-bit frames (rounded to whole
    frames), Explicit VR Little Endian, written in chunks: never whole in memory."""
    frames = max(1, size_mb * MiB // FRAME_BYTES)
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "MEM-BENCH"
    ds.PatientName = "Nguyễn^Văn Bộ Nhớ"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.Modality = "CT"
    ds.StudyDate = "20260101"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)  # every element but Pixel Data
    length = frames * FRAME_BYTES  # even, as PS3.5 7.1.1 requires
    # One frame of a ramp, repeated: cheap to make, not all zeros.
    frame = bytes(range(256)) * (FRAME_BYTES // 256)
    with path.open("ab") as out:
        # (7FE0,0010) OW, explicit VR: tag, VR, 2 reserved bytes, 4-byte length (PS3.5 7.1.2)
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length))
        for _ in range(frames):
            out.write(frame)
    return {"path": str(path), "bytes": path.stat().st_size, "frames": frames,
            "study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID,
            "sop": ds.SOPInstanceUID}


# --------------------------------------------------------------------------- measuring
def server_pids(node: Node) -> list[int]:
    return [proc.pid for proc in node.psutil_processes()]


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise SystemExit(f"no {key} in /proc/{pid}/status")


def measure(node: Node, door: Callable[[], None]) -> dict[str, float]:
    """Reset the high-water mark, run `door`, return MB of idle RSS, peak, and growth."""
    pids = server_pids(node)
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to VmRSS
    before = sum(status_kib(pid, "VmRSS") for pid in pids)
    started = time.monotonic()
    door()
    seconds = time.monotonic() - started
    peak = sum(status_kib(pid, "VmHWM") for pid in pids)
    return {"rss_before_mb": before * 1024 / 1e6, "peak_mb": peak * 1024 / 1e6,
            "growth_mb": (peak - before) * 1024 / 1e6, "seconds": seconds}


# --------------------------------------------------------------------------- the doors
def cstore_pynetdicom(node: Node, big: dict[str, Any]) -> None:
    from pynetdicom import AE

    ae = AE(ae_title="MEMBENCH")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = DOOR_TIMEOUT
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title)
    if not assoc.is_established:
        raise SystemExit("pynetdicom: association refused")
    try:
        # A path, not a Dataset: pynetdicom reads the file in PDU-sized pieces.
        status = assoc.send_c_store(Path(big["path"]))
    finally:
        assoc.release()
    if not status or int(status.Status) not in (0x0000, 0xB000):
        raise SystemExit(f"pynetdicom C-STORE failed: {status}")


def cstore_storescu(node: Node, big: dict[str, Any]) -> None:
    done = subprocess.run(
        [dcmtk("storescu"), "-aet", "MEMBENCH", "-aec", node.ae_title, "-xe",
         "-to", "600", "-ta", "600", "-td", "600", "127.0.0.1", str(node.dicom_port),
         big["path"]], capture_output=True, text=True, timeout=DOOR_TIMEOUT)
    if done.returncode != 0:
        raise SystemExit(f"storescu failed: {done.stdout}{done.stderr}")


def stow_httpx(node: Node, big: dict[str, Any]) -> None:
    boundary = "minipacs-memory-bench"

    def body() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode()
        with open(big["path"], "rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    with httpx.Client(timeout=DOOR_TIMEOUT, headers=node.headers) as client:
        answer = client.post(f"{node.dicomweb}/studies", content=body(),
                             headers={"Content-Type": content_type,
                                      "Accept": "application/dicom+json"})
    if answer.status_code != 200:
        raise SystemExit(f"STOW-RS: HTTP {answer.status_code}: {answer.text[:500]}")


def instance_url(node: Node, big: dict[str, Any]) -> str:
    return (f"{node.dicomweb}/studies/{big['study']}/series/{big['series']}"
            f"/instances/{big['sop']}")


def wado_instance(node: Node, big: dict[str, Any]) -> None:
    received = 0
    with httpx.Client(timeout=DOOR_TIMEOUT, headers=node.headers) as client, client.stream(
            "GET", instance_url(node, big),
            headers={"Accept": 'multipart/related; type="application/dicom"'}) as answer:
        if answer.status_code != 200:
            raise SystemExit(f"WADO-RS instance: HTTP {answer.status_code}")
        for chunk in answer.iter_raw(CHUNK):
            received += len(chunk)
    if received < big["bytes"] - 128:  # the body holds the Part-10 file (its preamble too)
        raise SystemExit(f"WADO-RS instance: {received} bytes for a {big['bytes']} file")


def wado_frames(node: Node, big: dict[str, Any]) -> None:
    numbers = sorted({1, big["frames"] // 2 + 1, big["frames"]})
    url = f"{instance_url(node, big)}/frames/{','.join(map(str, numbers))}"
    with httpx.Client(timeout=DOOR_TIMEOUT, headers=node.headers) as client:
        answer = client.get(url, headers={
            "Accept": 'multipart/related; type="application/octet-stream"'})
    if answer.status_code != 200:
        raise SystemExit(f"WADO-RS frames: HTTP {answer.status_code}: {answer.text[:300]}")
    if len(answer.content) < len(numbers) * FRAME_BYTES:
        raise SystemExit(f"WADO-RS frames: {len(answer.content)} bytes for {numbers}")


DOORS: list[tuple[str, Callable[[Node, dict[str, Any]], None]]] = [
    ("C-STORE pynetdicom", cstore_pynetdicom),
    ("C-STORE dcmtk storescu", cstore_storescu),
    ("STOW-RS httpx stream", stow_httpx),
    ("WADO-RS instance", wado_instance),
    ("WADO-RS 3 frames", wado_frames),
]


# --------------------------------------------------------------------------- the command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024,
                        help="MiB of pixel data in the instance (default 1024)")
    parser.add_argument("--json", type=Path, default=Path("memory-results.json"),
                        help="where to write the numbers (default memory-results.json)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the instance and the server's data (default: a "
                             "temporary folder, removed afterwards)")
    parser.add_argument("--bound-mb", type=float, default=PEAK_BOUND_MB,
                        help="peak growth per door above which the run fails (default 64)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="minipacs-memory-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        big = write_big_instance(work / "big.dcm", args.size_mb)
        print(f"instance: {big['bytes'] / 1e6:.0f} MB, {big['frames']} frames of "
              f"{ROWS}x{COLUMNS}x16 bit, written in {time.monotonic() - started:.1f} s",
              flush=True)
        node = start_minipacs(work / "minipacs", {})
        rows: dict[str, dict[str, float]] = {}
        try:
            for name, door in DOORS:
                rows[name] = measure(node, lambda door=door: door(node, big))  # type: ignore[misc]
                r = rows[name]
                print(f"  {name:<24} +{r['growth_mb']:7.1f} MB  ({r['seconds']:.1f} s)",
                      flush=True)
        finally:
            node.stop()
        load = os.getloadavg()
        print()
        print(f"Peak server RSS per door, {big['bytes'] / 1e6:.0f} MB instance "
              f"(load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}):")
        print("| door | RSS before (MB) | peak (MB) | growth (MB) | seconds |")
        print("|---|---|---|---|---|")
        for name, r in rows.items():
            print(f"| {name} | {r['rss_before_mb']:.0f} | {r['peak_mb']:.0f} | "
                  f"{r['growth_mb']:.0f} | {r['seconds']:.1f} |")
        worst = max(r["growth_mb"] for r in rows.values())
        verdict = "within" if worst < args.bound_mb else "ABOVE"
        print(f"largest growth {worst:.0f} MB: {verdict} the {args.bound_mb:.0f} MB bound")
        args.json.write_text(json.dumps({
            "instance": {k: big[k] for k in ("bytes", "frames")},
            "load_average": load, "bound_mb": args.bound_mb, "doors": rows,
        }, indent=2))
        print(f"wrote {args.json}")
        return 0 if worst < args.bound_mb else 1


if __name__ == "__main__":
    raise SystemExit(main())
