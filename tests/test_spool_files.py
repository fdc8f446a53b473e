"""C-STORE spool files made ahead (dimse/spool_files.py): real files, a real server."""

from __future__ import annotations

import os
import time
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES
from pynetdicom.dsutils import create_file_meta
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from conftest import ServerProcess
from factories import make_dataset
from minipacs.dimse.spool_files import (
    SpoolFilePool,
    encode_file_meta,
    sweep_incoming_datasets,
)

pytestmark = pytest.mark.door_only  # no index or blob store involved: one pass is enough

AS_PYNETDICOM_ASKS = {"delete": False, "mode": "wb", "suffix": ".dcm"}


def files_in(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def wait_for_files(folder: Path, count: int) -> set[str]:
    deadline = time.monotonic() + 5
    while len(names := files_in(folder)) < count:
        assert time.monotonic() < deadline, f"{count} files not made ahead in {folder}"
        time.sleep(0.01)  # polling the folder the pool's thread fills
    return names


def test_the_pool_hands_out_the_files_it_made_ahead_then_makes_more(
        tmp_path: Path) -> None:
    pool = SpoolFilePool(tmp_path, depth=2)
    try:
        ahead = wait_for_files(tmp_path, 2)
        assert len(ahead) == 2 and all(name.endswith(".dcm") for name in ahead)
        taken = [pool.named_temporary_file(**AS_PYNETDICOM_ASKS) for _ in range(3)]
        names = [Path(file.name).name for file in taken]
        assert len(set(names)) == 3
        assert set(names) & ahead  # at least the first was one made ahead
        for file in taken:
            assert Path(file.name).parent == tmp_path
            file.write(b"DICM")  # writable, as pynetdicom opens it ("wb")
            file.close()
            assert Path(file.name).read_bytes() == b"DICM"  # kept on close (delete=False)
        wait_for_files(tmp_path, 3 + 2)  # the pool is full again
    finally:
        pool.close()
    assert files_in(tmp_path) == set(names)  # closing removed only the unused ones


def test_files_kept_ready_stay_fresh_so_no_age_sweep_takes_them(tmp_path: Path) -> None:
    pool = SpoolFilePool(tmp_path, depth=2, keep_fresh=0.1)
    try:
        ready = wait_for_files(tmp_path, 2)
        an_hour_ago = time.time() - 3600
        for name in ready:  # as if they had waited an hour untouched
            os.utime(tmp_path / name, (an_hour_ago, an_hour_ago))
        time.sleep(0.3)  # a few of the pool's rounds
        assert all(time.time() - (tmp_path / name).stat().st_mtime < 60 for name in ready)
        assert sweep_incoming_datasets(tmp_path, network_timeout=1) == 0
        assert files_in(tmp_path) == ready
    finally:
        pool.close()
    assert files_in(tmp_path) == set()
    # A killed process's files are not kept fresh: the sweep takes them.
    left = tmp_path / "tmpleftbehind.dcm"
    left.write_bytes(b"")
    os.utime(left, (time.time() - 3600, time.time() - 3600))
    assert sweep_incoming_datasets(tmp_path, network_timeout=1) == 1
    assert not left.exists()


def test_other_temporary_files_are_made_as_asked(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pool = SpoolFilePool(tmp_path, depth=1)
    try:
        file = pool.named_temporary_file(suffix=".part", dir=elsewhere)
        assert Path(file.name).parent == elsewhere and file.name.endswith(".part")
        file.close()
        assert not Path(file.name).exists()  # delete=True by default, as tempfile's
    finally:
        pool.close()


def test_a_stopped_server_leaves_no_spool_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    server = ServerProcess(data, ["--no-load-samples"]).start()
    try:
        ae = AE(ae_title="SPOOLER")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
        assert assoc.is_established
        for _ in range(3):
            status = assoc.send_c_store(make_dataset(sop_uid=generate_uid(),
                                                     study_uid=generate_uid()))
            assert status.Status == 0x0000
        assoc.release()
        incoming = data / "incoming"
        ready = wait_for_files(incoming, 1)
        assert all((incoming / name).stat().st_size == 0 for name in ready)
    finally:
        server.stop()
    assert files_in(data / "incoming") == set()


def pydicom_file_meta(sop_class: str, sop_instance: str, syntax: str) -> bytes:
    """What pynetdicom writes before a spooled data set, by pydicom's own code."""
    written = BytesIO()
    write_file_meta_info(written, create_file_meta(
        sop_class_uid=sop_class, sop_instance_uid=sop_instance, transfer_syntax=syntax))
    return written.getvalue()


def test_file_meta_is_encoded_byte_for_byte_as_pydicom_encodes_it() -> None:
    # Every UID length (odd ones are padded), every transfer syntax we accept.
    for length in range(1, 65):
        uid = ("1." + "23456789" * 8)[:length].rstrip(".") or "1"
        for syntax in ALL_TRANSFER_SYNTAXES:
            expected = pydicom_file_meta(CTImageStorage, uid, syntax)
            assert encode_file_meta(CTImageStorage, uid, syntax) == expected, (uid, syntax)
            assert encode_file_meta(uid, CTImageStorage, syntax) == \
                pydicom_file_meta(uid, CTImageStorage, syntax)


@pytest.mark.parametrize("odd", ["", "1.2.3 ", "1.2.abc", "1." + "2" * 64, "1.2\x00"])
def test_file_meta_of_an_unusual_uid_is_left_to_pydicom(odd: str) -> None:
    assert encode_file_meta(CTImageStorage, odd, ExplicitVRLittleEndian) is None
