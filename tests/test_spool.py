"""The S3 ingest spool: acknowledged once durable locally, uploaded in the background,
served from the spool meanwhile, resumed after a restart."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from backends import Backends, MotoServer
from conftest import ServerProcess
from dimse_peers import dataset_bytes
from factories import make_instance
from minipacs.storage import FilesystemStore
from minipacs.storage.s3 import S3Store
from minipacs.storage.spool import SpooledStore
from node_tools import c_store_status


def test_spooled_blobs_are_uploaded_in_parallel_and_leave_the_spool(
    backends: Backends, tmp_path: Path
) -> None:
    values = backends.s3_settings()
    remote = S3Store(values["s3_endpoint"], values["s3_access_key"], values["s3_secret_key"],
                     values["s3_bucket"])
    store = SpooledStore(FilesystemStore(tmp_path / "spool"), remote, workers=4)
    try:
        blobs = {f"studies/1/series/2/{n}.dcm": os.urandom(5000 + n) for n in range(40)}
        for key, data in blobs.items():
            store.put(key, data)
            assert store.read(key) == data  # readable at once, uploaded or not
        store.put("studies/1/series/2/0.dcm", b"replaced")  # last write wins
        blobs["studies/1/series/2/0.dcm"] = b"replaced"
        assert store.wait_uploaded(timeout=60)
        assert store.pending() == 0
        assert list(FilesystemStore(tmp_path / "spool").keys()) == []
        for key, data in blobs.items():
            assert remote.read(key) == data
        assert sorted(store.keys()) == sorted(blobs)
    finally:
        store.close()


@pytest.fixture
def moto_with_restart(tmp_path: Path) -> Iterator[list[MotoServer]]:
    servers = [MotoServer(tmp_path).start()]
    yield servers
    for server in servers:
        server.stop()


def _pending(server: ServerProcess) -> int:
    return int(httpx.get(f"{server.http_url}/admin/storage", timeout=30,
                         headers=server.auth).json()[
        "pending_uploads"])


def test_spool_acknowledges_while_s3_is_down_serves_from_spool_and_uploads_after_restart(
    moto_with_restart: list[MotoServer], tmp_path: Path
) -> None:
    moto = moto_with_restart[0]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = ServerProcess(data_dir, [
        "--no-load-samples", "--storage", "s3", "--s3-endpoint", moto.endpoint,
        "--s3-access-key", moto.access_key, "--s3-secret-key", moto.secret_key,
        "--s3-bucket", "spool-test",
    ]).start()
    try:
        moto.stop()  # object storage goes away; ingest must not notice
        study, series, sop = generate_uid(), generate_uid(), generate_uid()
        part10 = make_instance(study_uid=study, series_uid=series, sop_uid=sop)
        assert c_store_status(server, part10) == 0x0000
        assert _pending(server) == 1
        url = f"{server.dicomweb_url}/studies/{study}/series/{series}/instances/{sop}"
        served = httpx.get(url, timeout=30, headers=server.auth)
        assert served.status_code == 200 and dataset_bytes(part10) in served.content
        server.stop()

        back = MotoServer(tmp_path)
        back.port = moto.port  # S3 returns at the same address
        moto_with_restart.append(back.start())
        server.start()  # the pending upload resumes on start
        deadline = time.monotonic() + 60
        while _pending(server) != 0:
            assert time.monotonic() < deadline, "the spooled upload never finished"
            time.sleep(0.1)  # polling for the upload, not waiting on time
        remote = S3Store(back.endpoint, back.access_key, back.secret_key, "spool-test")
        key = f"studies/{study}/series/{series}/{sop}.dcm"
        assert dataset_bytes(remote.read(key)) == dataset_bytes(part10)
        assert list(FilesystemStore(data_dir / "spool").keys()) == []
        url = f"{server.dicomweb_url}/studies/{study}/series/{series}/instances/{sop}"
        assert httpx.get(url, timeout=30,
                         headers=server.auth).status_code == 200  # now served from S3
    finally:
        server.stop()


class _SlowRemote(FilesystemStore):
    """A remote store whose uploads take a while, so two uploaders overlap."""

    def __init__(self, root: Path, delay: float = 0.05) -> None:
        super().__init__(root)
        self.delay = delay

    def put(self, key: str, data: bytes | Path, *, durable: bool = True,
            take: bool = False) -> None:
        time.sleep(self.delay)
        super().put(key, data, durable=durable, take=take)


def test_two_processes_on_one_spool_upload_each_blob_once_and_lose_none(
    tmp_path: Path
) -> None:
    """Workers of `serve --workers N` share the data folder's spool, and each queues
    every spooled blob when it opens it (as does a CLI command opening the archive). Two
    uploaders of one blob must not take each other's removal of the spool file for a
    deletion and delete the uploaded object (flock on the spool file decides)."""
    remote = _SlowRemote(tmp_path / "remote")
    blobs = {f"studies/1/series/2/{n}.dcm": os.urandom(3000 + n) for n in range(12)}
    spool = FilesystemStore(tmp_path / "spool")
    for key, data in blobs.items():  # left by a crash: spooled, not uploaded
        spool.put(key, data)
    first = SpooledStore(FilesystemStore(tmp_path / "spool"), remote, workers=2)
    second = SpooledStore(FilesystemStore(tmp_path / "spool"), remote, workers=2)
    try:
        assert first.wait_uploaded(timeout=60) and second.wait_uploaded(timeout=60)
    finally:
        first.close()
        second.close()
    assert list(spool.keys()) == []
    for key, data in blobs.items():
        assert remote.read(key) == data, key


class _SlowToRemove(FilesystemStore):
    """A spool whose first removal of a file pauses between the uploader's check that
    the name still holds the file it uploaded and the removal itself."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.removing = threading.Event()

    def delete(self, key: str) -> None:
        if not self.removing.is_set():
            self.removing.set()
            time.sleep(0.5)
        super().delete(key)


def test_an_instance_sent_again_while_another_process_removes_its_old_copy_is_kept(
    tmp_path: Path
) -> None:
    """Another process (a worker of `serve --workers N`, a CLI command) has uploaded the
    spool file of an instance's first copy and is removing it when the modality sends
    the instance again with new bytes. The new spool file must not be renamed in
    between that process's check of the name and its removal, or the acknowledged new
    bytes would be removed, never uploaded."""
    remote = FilesystemStore(tmp_path / "remote")
    key = "studies/1/series/2/3.dcm"
    old, new = os.urandom(4000), os.urandom(5000)
    FilesystemStore(tmp_path / "spool").put(key, old)  # left by a crash
    spool = _SlowToRemove(tmp_path / "spool")
    other = SpooledStore(spool, remote, workers=1)
    ours: SpooledStore | None = None
    try:
        assert spool.removing.wait(10), "the other process never removed its spool file"
        # Our upload of the new bytes outlasts the other's removal.
        ours = SpooledStore(FilesystemStore(tmp_path / "spool"),
                            _SlowRemote(tmp_path / "remote", delay=1.0), workers=1)
        ours.put(key, new)
        assert ours.read(key) == new  # served from the spool until uploaded
        assert ours.wait_uploaded(timeout=30) and other.wait_uploaded(timeout=30)
    finally:
        other.close()
        if ours is not None:
            ours.close()
    assert remote.read(key) == new
    assert list(FilesystemStore(tmp_path / "spool").keys()) == []
