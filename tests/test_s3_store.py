"""`S3Store` against a real S3 server on loopback (moto_server), and an archive on S3
whose endpoint goes away."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from backends import Backends, MotoServer
from conftest import ServerProcess
from dimse_peers import storescu
from factories import make_instance
from minipacs.errors import NotFound, StorageError
from minipacs.storage.s3 import PART_SIZE, S3Store
from node_tools import c_store_status
from postgres_cluster import free_port


@pytest.fixture
def s3(backends: Backends) -> S3Store:
    values = backends.s3_settings()
    return S3Store(values["s3_endpoint"], values["s3_access_key"], values["s3_secret_key"],
                   values["s3_bucket"])


def test_missing_bucket_is_created_and_blobs_round_trip(s3: S3Store) -> None:
    assert list(s3.keys()) == []
    data = os.urandom(100_000)
    s3.put("studies/1.2/series/3.4/5.6.dcm", data)
    assert s3.exists("studies/1.2/series/3.4/5.6.dcm")
    assert s3.read("studies/1.2/series/3.4/5.6.dcm") == data
    with s3.open("studies/1.2/series/3.4/5.6.dcm") as fh:
        assert fh.read(10) == data[:10]
        assert fh.read() == data[10:]
    assert s3.read_range("studies/1.2/series/3.4/5.6.dcm", 1000, 500) == data[1000:1500]
    assert s3.stat("studies/1.2/series/3.4/5.6.dcm").size == len(data)
    assert list(s3.keys("studies/1.2/")) == ["studies/1.2/series/3.4/5.6.dcm"]
    s3.delete("studies/1.2/series/3.4/5.6.dcm")
    s3.delete("studies/1.2/series/3.4/5.6.dcm")  # deleting twice is not an error
    assert not s3.exists("studies/1.2/series/3.4/5.6.dcm")


def test_an_opened_object_seeks_and_reads_only_what_it_is_asked(s3: S3Store) -> None:
    # Frames of a large multi-frame on S3 are read at their offsets (dicom/frames.py),
    # not after fetching the object whole into memory (Archive.open_instance).
    data = os.urandom(3 * 1024 * 1024 + 17)
    s3.put("seek/object.dcm", data)
    with s3.open("seek/object.dcm") as fh:
        assert fh.seekable()
        fh.seek(2 * 1024 * 1024)
        assert fh.read(100) == data[2 * 1024 * 1024:2 * 1024 * 1024 + 100]
        fh.seek(5)
        assert fh.read(10) == data[5:15]
        assert fh.tell() == 15
        fh.seek(-7, os.SEEK_END)
        assert fh.read() == data[-7:]
        assert fh.read(1) == b""
        fh.seek(0)
        assert fh.read() == data


def test_missing_blob_is_not_found_naming_key_and_bucket(s3: S3Store) -> None:
    with pytest.raises(NotFound, match=f"no/such.dcm is missing from bucket {s3.bucket}"):
        s3.read("no/such.dcm")
    with pytest.raises(NotFound):
        s3.stat("no/such.dcm")


def test_large_file_goes_up_in_parts_and_streams_back_in_bounded_chunks(
    s3: S3Store, tmp_path: Path
) -> None:
    big = tmp_path / "multiframe.dcm"
    digest = hashlib.sha256()
    with open(big, "wb") as out:  # just over two parts: a multipart upload
        for _ in range(2 * PART_SIZE // (1024 * 1024) + 1):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            out.write(block)
    s3.put("big/multiframe.dcm", big)
    streamed = hashlib.sha256()
    largest = 0
    for chunk in s3.iter_chunks("big/multiframe.dcm", 256 * 1024):
        largest = max(largest, len(chunk))
        streamed.update(chunk)
    assert streamed.hexdigest() == digest.hexdigest()
    assert largest <= 256 * 1024
    assert s3.stat("big/multiframe.dcm").size == big.stat().st_size


def test_unreachable_endpoint_is_a_storage_error_that_names_it() -> None:
    endpoint = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(StorageError, match=f"at {endpoint}.*S3 endpoint is up"):
        S3Store(endpoint, "k", "s", "minipacs", connect_timeout=1, retries=1)


@pytest.fixture
def own_moto(tmp_path: Path) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path).start()
    yield server
    server.stop()


def test_without_spool_cstore_while_s3_is_down_fails_and_nothing_becomes_visible(
    own_moto: MotoServer, tmp_path: Path
) -> None:
    """PS3.4 B.2.3: Refused, out of resources (A700) when the blob cannot be written."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = ServerProcess(data_dir, [
        "--no-load-samples", "--storage", "s3", "--s3-endpoint", own_moto.endpoint,
        "--s3-access-key", own_moto.access_key, "--s3-secret-key", own_moto.secret_key,
        "--s3-bucket", "down-test", "--no-s3-spool",
    ]).start()
    try:
        study = generate_uid()
        before = tmp_path / "before.dcm"
        before.write_bytes(make_instance(study_uid=study))
        assert storescu(server, before).returncode == 0
        own_moto.stop()
        status = c_store_status(server, make_instance(study_uid=study))
        assert status == 0xA700
        found = httpx.get(f"{server.dicomweb_url}/studies/{study}/instances", timeout=30,
                          headers=server.auth)
        assert len(found.json()) == 1  # only the instance stored before S3 went away
    finally:
        server.stop()
