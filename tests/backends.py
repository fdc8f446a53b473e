"""Which index and blob store the suite runs on: `pytest --db postgres --blobs s3`.

`Backends` hands each archive or server fixture a fresh, isolated place to keep its data:
a new PostgreSQL database in the throwaway cluster and a new bucket on the loopback S3
server (moto), or (the defaults) the SQLite file and blob folder in the fixture's data dir.
Clusters and servers start on first use and stop at the end of the session.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from postgres_cluster import PostgresCluster, free_port, wait_for_port


class MotoServer:
    """moto's standalone S3 server (`moto_server`, from moto[server]) on a free port."""

    access_key = "minipacs-test"
    secret_key = "minipacs-test-secret"

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / "moto.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        command = Path(sys.executable).parent / "moto_server"
        if not command.exists():
            raise RuntimeError(f"{command} is missing: pip install 'moto[server]' (./test.sh)")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(command), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


class Backends:
    def __init__(self, db: str, blobs: str, scratch: Path) -> None:
        self.db = db
        self.blobs = blobs
        self.scratch = scratch
        self._postgres: PostgresCluster | None = None
        self._moto: MotoServer | None = None
        self._buckets = itertools.count(1)

    @property
    def postgres(self) -> PostgresCluster:
        if self._postgres is None:
            self._postgres = PostgresCluster().start()
        return self._postgres

    @property
    def moto(self) -> MotoServer:
        if self._moto is None:
            self._moto = MotoServer(self.scratch).start()
        return self._moto

    def s3_settings(self) -> dict[str, Any]:
        """Settings for a fresh bucket on the loopback S3 server."""
        return {
            "storage": "s3",
            "s3_endpoint": self.moto.endpoint,
            "s3_access_key": MotoServer.access_key,
            "s3_secret_key": MotoServer.secret_key,
            "s3_bucket": f"minipacs-{os.getpid()}-{next(self._buckets)}-{uuid.uuid4().hex[:6]}",
            "s3_secure": False,
        }

    def settings(self) -> dict[str, Any]:
        """Settings overrides for one fresh, isolated archive."""
        values: dict[str, Any] = {}
        if self.db == "postgres":
            values["database_url"] = self.postgres.create_database()
        if self.blobs == "s3":
            values.update(self.s3_settings())
        return values

    def server_args(self, values: dict[str, Any] | None = None) -> list[str]:
        """The same overrides as `minipacs serve` flags."""
        args: list[str] = []
        for name, value in (self.settings() if values is None else values).items():
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                args.append(flag if value else "--no-" + flag[2:])
            else:
                args += [flag, str(value)]
        return args

    def stop(self) -> None:
        try:
            if self._moto is not None:
                self._moto.stop()
        finally:
            if self._postgres is not None:
                self._postgres.stop()
