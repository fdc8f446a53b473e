"""Viewer speed in headless Chromium: time to the first image of a large CT (median of
--runs page loads, each in a fresh browser context as an EMR link opens it), prefetch
time, and frame times while scrolling the prefetched stack.

Generates a synthetic CT series (default 300 slices 512x512), imports it into a fresh
minipacs, opens the study by deep link and reads the browser's performance clock.
Prints numbers; asserts nothing. Needs Debian's chromium.

    .venv/bin/python bench/viewer_first_image.py --slices 300
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from playwright.sync_api import sync_playwright
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
H = "window.minipacsViewer"


def write_ct(folder: Path, slices: int, size: int) -> str:
    study, series = generate_uid(), generate_uid()
    yy, xx = np.mgrid[:size, :size]
    cx = cy = size / 2
    body = ((xx - cx) / (size * 0.42)) ** 2 + ((yy - cy) / (size * 0.3)) ** 2 < 1
    for n in range(slices):
        ds = Dataset()
        ds.PatientName, ds.PatientID = "Bench^Viewer", "BENCHVIEW"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID, ds.SOPClassUID = generate_uid(), CTImageStorage
        ds.Modality, ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "CT", "20240101", 1, n + 1
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelSpacing = [0.7, 0.7]
        ds.ImagePositionPatient = [0, 0, n * 1.0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        pixels = np.where(body, 1064 + (n % 50), 24).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(folder / f"{n:04d}.dcm", enforce_file_format=True)
    return str(study)


READER_PASSWORD = "Bench-Reader-2026!"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=7,
                        help="page loads to time, each in a fresh browser context")
    parser.add_argument("--waterfall", action="store_true",
                        help="list the last run's requests made before the first image")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as tmp:
        work = Path(tmp)
        (work / "ct").mkdir()
        study = write_ct(work / "ct", args.slices, args.size)
        data = work / "data"
        subprocess.run([sys.executable, "-m", "minipacs", "import", str(work / "ct"),
                        "--data-dir", str(data), "--quiet", "--no-load-samples"],
                       check=True, stdout=subprocess.DEVNULL)
        ready = work / "ready.json"
        server = subprocess.Popen(
            [sys.executable, "-m", "minipacs", "serve", "--data-dir", str(data),
             "--http-port", "0", "--dicom-port", "0", "--no-load-samples",
             "--log-level", "WARNING", "--ready-file", str(ready)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not ready.exists():
                time.sleep(0.05)
            url = json.loads(ready.read_text())["url"]
            # Accounts are on: a radiologist made with the CLI, signed in once (the
            # session cookie each browser context gets, as after a real sign-in).
            subprocess.run([sys.executable, "-m", "minipacs", "user", "add", "bench.reader",
                            "--role", "radiologist", "--password-stdin", "--data-dir",
                            str(data)], input=f"{READER_PASSWORD}\n", text=True, check=True,
                           stdout=subprocess.DEVNULL)
            session = httpx.post(f"{url}/auth/login", json={
                "username": "bench.reader", "password": READER_PASSWORD}, timeout=60)
            token = session.raise_for_status().json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            # A hospital's server has been up for hours: warm its query path once first
            # (imports, SQL compilation caches) so the number is the viewer's, not a cold start.
            httpx.get(f"{url}/dicom-web/studies", params={"includefield": "all"}, timeout=60,
                      headers=auth)
            httpx.get(f"{url}/viewer/js/main.js", timeout=60)  # and its static-file path
            chromium = shutil.which("chromium") or "/usr/bin/chromium"
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=ARGS)
                # The EMR opens a link in a browser that is already running: each run is a
                # new context (empty cache, new renderer), the browser start is not counted.
                firsts = []
                for run in range(args.runs):
                    context = browser.new_context(viewport={"width": 1280, "height": 800})
                    context.add_cookies([{"name": "minipacs_session", "value": token,
                                          "url": url, "httpOnly": True,
                                          "sameSite": "Strict"}])
                    page = context.new_page()
                    page.goto(f"{url}/viewer/?StudyInstanceUID={study}")
                    page.wait_for_function(
                        f"{H}.activeViewport && {H}.activeViewport.currentImageKind === 'pixels'",
                        timeout=60_000, polling="raf")
                    firsts.append(page.evaluate("performance.now()"))
                    if run < args.runs - 1:
                        context.close()
                nav = page.evaluate(
                    """() => { const n = performance.getEntriesByType('navigation')[0];
                        return [Math.round(n.responseEnd), Math.round(n.domInteractive),
                                Math.round(n.domContentLoadedEventStart)]; }""")
                resources = page.evaluate(
                    """() => performance.getEntriesByType('resource').map(
                        e => [e.name.split('/').slice(-3).join('/').slice(0, 60),
                              Math.round(e.startTime), Math.round(e.duration)])""")
                page.wait_for_function(
                    f"{H}.loadedFrameCount >= {H}.totalFrameCount && {H}.totalFrameCount > 0",
                    timeout=600_000, polling=100)
                prefetched = page.evaluate("performance.now()")
                page.click("[data-testid=viewport-canvas]")
                frame_times = page.evaluate(
                    """async (n) => {
                        const times = [];
                        for (let i = 0; i < n; i++) {
                          const t0 = performance.now();
                          document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown'}));
                          await new Promise(r => requestAnimationFrame(() => r()));
                          times.push(performance.now() - t0);
                        }
                        return times;
                    }""", min(args.slices - 1, 200))
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    if args.waterfall:
        print(f"  document: response end {nav[0]} ms, interactive {nav[1]} ms, "
              f"DOMContentLoaded {nav[2]} ms")
        for name, start, duration in resources:
            print(f"  {start:6d} ms +{duration:5d} ms  {name}")
    frame_times.sort()
    print(f"{args.slices} CT slices {args.size}x{args.size}, loopback, headless Chromium")
    print("first image on screen, each run (ms after navigation start): "
          + " ".join(f"{t:.0f}" for t in firsts))
    print(f"first image, median of {len(firsts)}  {statistics.median(firsts):8.0f} ms")
    print(f"first image, best          {min(firsts):8.0f} ms")
    print(f"whole series prefetched    {prefetched:8.0f} ms")
    print(f"scroll, per image (median) {frame_times[len(frame_times) // 2]:8.1f} ms")
    print(f"scroll, per image (p95)    {frame_times[int(len(frame_times) * 0.95)]:8.1f} ms")


if __name__ == "__main__":
    main()
