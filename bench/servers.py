"""The servers a benchmark run compares, each started fresh on free loopback ports.

* minipacs on its defaults (SQLite index, blob folder, auth on: a token made with the CLI);
* Orthanc from Debian (`orthanc`, `orthanc-dicomweb`; installed with apt-get when missing
  and we are root), SQLite index, its own storage folder, TCP_NODELAY, DICOMweb loaded,
  HTTP auth off, every DICOM peer allowed;
* the ceilings of ingest: dcmtk's `storescp` writing files with no index, and a pynetdicom
  SCP that stores nothing (`null_scp.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ORTHANC_DICOMWEB = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
BENCH_DIR = Path(__file__).resolve().parent
START_TIMEOUT = 120.0  # seconds


def dcmtk(tool: str) -> str:
    """dcmtk's `tool`: pynetdicom installs console scripts of the same names (storescu,
    movescu, ...) into the venv, which must not stand in for dcmtk's."""
    venv = Path(sys.prefix).resolve()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        found = shutil.which(tool, path=folder)
        if found and venv not in Path(found).resolve().parents:
            return found
    raise SystemExit(f"dcmtk's {tool} is not installed: apt-get install -y dcmtk")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    """A running server: where to reach it and the process to measure."""

    name: str
    ae_title: str
    dicom_port: int
    process: subprocess.Popen[bytes]
    work: Path
    http_url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    processes: int = 1  # node processes serving (minipacs `serve --workers`)

    @property
    def dicomweb(self) -> str:
        return f"{self.http_url}/dicom-web"

    def psutil_processes(self) -> list[psutil.Process]:
        main = psutil.Process(self.process.pid)
        return [main, *main.children(recursive=True)]

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.psutil_processes():
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def peak_rss_mb(self) -> float:
        """Peak resident memory (VmHWM, Linux) summed over the server's processes."""
        peak = 0
        for proc in self.psutil_processes():
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak += int(line.split()[1]) * 1024
            except (OSError, psutil.NoSuchProcess):
                pass
        return peak / 1e6

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def _wait(check: object, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not check():  # type: ignore[operator]
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise SystemExit(f"{what} did not start (see {log}):\n{tail}")
        time.sleep(0.05)  # polling a readiness condition


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def minipacs_cli(data: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "minipacs", *args, "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"minipacs {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


def start_minipacs(work: Path, move_destinations: dict[str, int], workers: int = 0) -> Node:
    """minipacs on its defaults (one worker per core, at most four); `workers` > 0 adds
    `--workers N` (N processes sharing the DICOM and HTTP ports)."""
    work.mkdir(parents=True, exist_ok=True)
    data, ready, log = work / "data", work / "ready.json", work / "minipacs.log"
    for title, port in move_destinations.items():
        minipacs_cli(data, "ae", "add", title, "127.0.0.1", str(port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "minipacs", "serve", "--data-dir", str(data),
         "--http-port", "0", "--dicom-port", "0", "--no-load-samples",
         "--log-level", "WARNING", "--ready-file", str(ready),
         *(["--workers", str(workers)] if workers > 0 else [])],
        stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    _wait(ready.exists, proc, "minipacs", log)
    ports = json.loads(ready.read_text())
    # Auth is on, as in a hospital: a radiologist's API token, made with the CLI.
    token = minipacs_cli(data, "token", "create", "bench", "--role",
                         "radiologist").strip().splitlines()[-1]
    return Node("minipacs", "MINIPACS", int(ports["dicom_port"]), proc, work,
                f"http://127.0.0.1:{ports['http_port']}",
                {"Authorization": f"Bearer {token}"}, len(ports.get("worker_pids", [])) or 1)


def ensure_orthanc() -> str:
    """The Orthanc binary; installs Debian's packages when missing and we are root."""
    binary = shutil.which("Orthanc")
    if binary and ORTHANC_DICOMWEB.exists():
        return binary
    if os.geteuid() != 0:
        raise SystemExit("Orthanc is not installed and this is not root: run\n"
                         "  sudo apt-get install -y orthanc orthanc-dicomweb\n"
                         "then run the benchmark again.")
    print("installing Orthanc: apt-get install -y orthanc orthanc-dicomweb", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                    "orthanc", "orthanc-dicomweb"], check=True, env=env)
    # Debian starts its own Orthanc service; ours runs with its own config and ports.
    binary = shutil.which("Orthanc")
    if binary is None or not ORTHANC_DICOMWEB.exists():
        raise SystemExit("apt-get installed Orthanc, but Orthanc or its DICOMweb plugin "
                         f"({ORTHANC_DICOMWEB}) is still missing")
    return binary


def start_orthanc(work: Path, move_destinations: dict[str, int]) -> Node:
    binary = ensure_orthanc()
    work.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "bench", "DicomAet": "ORTHANC", "DicomPort": dicom_port,
        "HttpPort": http_port, "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"), "Plugins": [str(ORTHANC_DICOMWEB)],
        "AuthenticationEnabled": False, "RemoteAccessAllowed": True,
        "TcpNoDelay": True, "StorageCompression": False, "HttpCompressionEnabled": False,
        "DicomCheckCalledAet": False, "DicomCheckModalityHost": False,
        "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True, "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "DicomModalities": {title.lower(): [title, "127.0.0.1", port]
                            for title, port in move_destinations.items()},
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    log = work / "orthanc.log"
    # Orthanc's DICOM side is dcmtk, which turns Nagle off only when TCP_NODELAY=1 is in
    # its environment ("TcpNoDelay" above is its HTTP server's); issue #13 measured it so.
    # Without it every C-STORE, C-FIND and C-ECHO answer waits on the peer's delayed ACK
    # (~20 instead of ~170 CT instances/s on one association, 54 instead of a few ms).
    proc = subprocess.Popen([binary, str(work / "orthanc.json")],
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"),
                            env={**os.environ, "TCP_NODELAY": "1"})
    url = f"http://127.0.0.1:{http_port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/system", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait(up, proc, "Orthanc", log)
    _wait(lambda: _port_open(dicom_port), proc, "Orthanc's DICOM port", log)
    return Node("Orthanc", "ORTHANC", dicom_port, proc, work, url)


def start_storescp(work: Path) -> Node:
    """dcmtk's storescp: accepts every storage SOP class and syntax, writes each file."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "files").mkdir(exist_ok=True)
    port, log = free_port(), work / "storescp.log"
    # --fork: one process per association, as the 4-association runs need (without it
    # storescp serves one association at a time and the others time out).
    proc = subprocess.Popen([dcmtk("storescp"), "--fork", "--accept-all", "--output-directory",
                             str(work / "files"), "--aetitle", "STORESCP", str(port)],
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"),
                            env={**os.environ, "TCP_NODELAY": "1"})
    _wait(lambda: _port_open(port), proc, "storescp", log)
    return Node("storescp", "STORESCP", port, proc, work)


def start_null_scp(work: Path) -> Node:
    """A pynetdicom storage SCP that answers Success and keeps nothing."""
    work.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), work / "null_scp.log"
    proc = subprocess.Popen([sys.executable, str(BENCH_DIR / "null_scp.py"), str(port)],
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    _wait(lambda: _port_open(port), proc, "the pynetdicom null SCP", log)
    return Node("pynetdicom null SCP", "NULLSCP", port, proc, work)
