"""Drive minipacs nodes from tests: the CLI on a node's archive, C-STORE with a status."""

from __future__ import annotations

import io
import os
import subprocess

from pydicom import dcmread
from pynetdicom import AE

from conftest import ServerProcess
from minipacs.config import Settings
from preloaded import LAUNCHER


def minipacs_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `minipacs <args>` on the archive `settings` describe."""
    flags = ["--data-dir", str(settings.data_dir), "--no-load-samples"]
    for name in ("database_url", "s3_endpoint", "s3_access_key", "s3_secret_key"):
        if getattr(settings, name):
            flags += ["--" + name.replace("_", "-"), str(getattr(settings, name))]
    flags += ["--storage", settings.storage, "--s3-bucket", settings.s3_bucket]
    return LAUNCHER.run([*args, *flags], dict(os.environ), timeout=300)


def server_settings(server: ServerProcess) -> Settings:
    """Settings naming the same index and blob store as a running server."""
    values: dict[str, str] = {}
    args = server.extra_args
    for i, arg in enumerate(args[:-1]):
        if arg.startswith("--") and not args[i + 1].startswith("--"):
            values[arg[2:].replace("-", "_")] = args[i + 1]
    return Settings(data_dir=server.data_dir, load_samples=False, **values)  # type: ignore[arg-type]


def c_store_status(server: ServerProcess, part10: bytes) -> int:
    """Status of one C-STORE sent with pynetdicom."""
    dataset = dcmread(io.BytesIO(part10))
    ae = AE(ae_title="TESTSTORE")
    ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established, "association refused"
    try:
        status = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    return int(status.Status)
