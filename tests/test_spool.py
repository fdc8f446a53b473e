"""The S3 ingest spool: acknowledged once durable locally, uploaded in the background,
served from the spool meanwhile, resumed after a restart."""

from __future__ import annotations

import fcntl
import os
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

    def put(self, key: str, data: bytes | Path, *, durable: bool = True,
            take: bool = False) -> None:
        time.sleep(0.05)
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


class _SlowerRemote(FilesystemStore):
    """A remote store whose uploads take long enough to put something in between."""

    def put(self, key: str, data: bytes | Path, *, durable: bool = True,
            take: bool = False) -> None:
        time.sleep(0.4)
        super().put(key, data, durable=durable, take=take)


def _upload_under_way(path: Path) -> bool:
    """Does some uploader hold the spool file's lock?"""
    with open(path, "rb") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def test_an_instance_sent_again_waits_for_another_process_uploading_the_old_one(
    tmp_path: Path
) -> None:
    """A modality sends an instance again while another process (a worker of `serve
    --workers N`, a CLI command) uploads the spool file of its first copy. That
    uploader removes the spool file once uploaded; the new spool file must not be
    renamed in between its check and its removal, or the acknowledged new bytes would go
    with it. So the put waits until the other upload is over, then spools the new
    bytes, which are uploaded in turn."""
    remote = _SlowerRemote(tmp_path / "remote")
    key = "studies/1/series/2/3.dcm"
    old, new = os.urandom(4000), os.urandom(5000)
    FilesystemStore(tmp_path / "spool").put(key, old)  # left by a crash
    other = SpooledStore(FilesystemStore(tmp_path / "spool"), remote, workers=1)
    ours: SpooledStore | None = None
    try:
        deadline = time.monotonic() + 10
        while not _upload_under_way(tmp_path / "spool" / key):
            assert time.monotonic() < deadline, "the other process never began its upload"
            time.sleep(0.002)
        ours = SpooledStore(FilesystemStore(tmp_path / "spool"), remote, workers=1)
        ours.put(key, new)
        # The first copy's upload finished before the new bytes were spooled.
        assert remote.read(key) == old
        assert ours.read(key) == new  # served from the spool until uploaded
        assert ours.wait_uploaded(timeout=30) and other.wait_uploaded(timeout=30)
    finally:
        other.close()
        if ours is not None:
            ours.close()
    assert remote.read(key) == new
    assert list(FilesystemStore(tmp_path / "spool").keys()) == []
