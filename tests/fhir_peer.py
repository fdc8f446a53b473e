"""A real FHIR R4 server for the FHIR push tests: SEKMET (`sekmet-fhir` on PyPI, a
FastAPI app with an SQLite store, R4 transactions, conditional create and If-Match).

`FhirPeer(folder).start()` runs it in a subprocess on 127.0.0.1 (port 0 the first time,
the same port on a restart, so a client configured with its URL finds it again), with
bearer-token auth and strict validation of what it receives. Run as a script it is that
subprocess: `python fhir_peer.py FOLDER PORT TOKEN`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


@dataclass
class FhirPeer:
    folder: Path
    token: str = "push-test-token"
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def start(self, timeout: float = 60.0) -> FhirPeer:
        self.folder.mkdir(parents=True, exist_ok=True)
        ready = self.folder / "ready.json"
        ready.unlink(missing_ok=True)
        log = open(self.folder / "sekmet.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(self.folder), str(self.port), self.token],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("SEKMET FHIR server did not start:\n"
                                   + (self.folder / "sekmet.log").read_text()[-3000:])
            time.sleep(0.05)  # polling for readiness, not waiting on time
        self.port = json.loads(ready.read_text())["port"]
        while True:  # the socket is bound before uvicorn serves: wait for an answer
            try:
                if self.client().get("/metadata").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("SEKMET FHIR server does not answer /fhir/metadata")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.process = None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30,
                            headers={"Authorization": f"Bearer {self.token}",
                                     "Accept": "application/fhir+json"})

    def search(self, resource_type: str, **params: str) -> list[dict[str, Any]]:
        with self.client() as client:
            response = client.get(f"/{resource_type}", params=params)
        response.raise_for_status()
        return [e["resource"] for e in response.json().get("entry") or []
                if e.get("search", {}).get("mode", "match") == "match"]


def _serve(folder: Path, port: int, token: str) -> None:
    import uvicorn
    import yaml

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = folder / "settings.yaml"
    config.write_text(yaml.safe_dump({
        "base_url": f"http://127.0.0.1:{port}/fhir", "host": "127.0.0.1", "port": port,
        "data_dir": str(folder / "data"), "db_path": str(folder / "sekmet.db"),
        "server_auth": {"types": ["bearer"], "tokens": [token]},
        "validation": {"inbound": "strict"},
        "simulator": {"enabled": False}, "log_inbound": False,
    }))
    os.environ["SEKMET_CONFIG"] = str(config)
    from sekmet.config import load_settings
    from sekmet.main import create_app

    app = create_app(load_settings(str(config)))
    (folder / "ready.json.partial").write_text(json.dumps({"port": port}))
    (folder / "ready.json.partial").replace(folder / "ready.json")
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
