"""Memory of one association moving a large instance: C-STORE is spooled to disk as it
arrives, and stored byte-exact (the dataset as sent, file meta from the context)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.dsutils import create_file_meta, encode, encode_file_meta
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)

from conftest import ServerProcess, open_test_archive
from dimse_peers import dataset_bytes, storescu
from factories import make_dataset, make_instance
from node_tools import server_settings
from test_dimse_hostile import MiB, proc_status, server_pid

# Peak memory one association may add while storing a large instance over C-STORE
# (documented in docs/conformance.md §1.10).
CSTORE_PEAK_BOUND = 64 * MiB
CGET_PEAK_BOUND = 64 * MiB
BIG_FRAMES = 400  # 512 x 512 x 16 bit: 200 MiB of pixel data


@pytest.fixture
def plain_server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", ["--no-load-samples"])
    proc.data_dir.mkdir()
    proc.start()
    yield proc
    proc.stop()


def expected_part10(sop_class: str, sop_instance: str, dataset_bytes: bytes) -> bytes:
    """What `event.encoded_dataset(include_meta=True)` (the in-memory path) gives."""
    meta = create_file_meta(sop_class_uid=sop_class, sop_instance_uid=sop_instance,
                            transfer_syntax=ExplicitVRLittleEndian)
    return b"\x00" * 128 + b"DICM" + encode_file_meta(meta) + dataset_bytes


def stored_sha256(server: ServerProcess, sop_uid: str) -> tuple[str, bytes | None]:
    archive = open_test_archive(server_settings(server))
    try:
        records = archive.instances_matching(sop_uids=[sop_uid])
        assert len(records) == 1
        record = records[0]
        small = archive.read_instance(record) if record.size < 10 * MiB else None
        return record.sha256, small
    finally:
        archive.engine.dispose()


def test_cstore_stores_the_dataset_as_sent_with_file_meta_from_the_context(
    plain_server: ServerProcess,
) -> None:
    ds = make_dataset(sop_uid=generate_uid(), study_uid=generate_uid())
    ae = AE(ae_title="BYTES")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", plain_server.dicom_port,
                         ae_title=plain_server.ae_title)
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0x0000
    sent = encode(ds, False, True)
    assert sent is not None
    expected = expected_part10(ds.SOPClassUID, ds.SOPInstanceUID, sent)
    sha, stored = stored_sha256(plain_server, ds.SOPInstanceUID)
    assert stored == expected
    assert sha == hashlib.sha256(expected).hexdigest()
    # Nothing left behind in the spool of incoming datasets: only the empty files made
    # ahead for the next C-STOREs (dimse/spool_files.py).
    left = list((plain_server.data_dir / "incoming").iterdir())
    assert [path for path in left if path.stat().st_size] == []
    assert len(left) <= 4


def big_instance(folder: Path) -> Path:
    """A 200 MiB multi-frame CT (400 frames of 512 x 512 x 16 bit), Explicit VR LE."""
    small = make_instance(rows=512, columns=512, sop_uid=generate_uid(),
                          study_uid=generate_uid())
    ds = dcmread(io.BytesIO(small))
    ds.NumberOfFrames = BIG_FRAMES
    ds.PixelData = (np.arange(512 * 512 * BIG_FRAMES, dtype=np.uint16) % 4096).tobytes()
    big = folder / "big.dcm"
    ds.save_as(big, enforce_file_format=True)
    return big


def test_cstore_of_a_200_mib_instance_is_spooled_with_bounded_memory(
    plain_server: ServerProcess, tmp_path: Path,
) -> None:
    big = big_instance(tmp_path)

    pid = server_pid(plain_server)
    before = proc_status(pid)
    done = storescu(plain_server, big, extra=("-xe",))
    assert done.returncode == 0, done.stdout + done.stderr
    after = proc_status(pid)
    peak = after["VmHWM"] - before["VmRSS"]
    assert peak < CSTORE_PEAK_BOUND, f"C-STORE of {big.stat().st_size} bytes: +{peak} bytes"

    # Byte-exact: the dataset as it was in the file (storescu sends it unchanged in
    # Explicit VR Little Endian), file meta from the presentation context.
    sop = dcmread(big, stop_before_pixels=True)
    expected = expected_part10(sop.SOPClassUID, sop.SOPInstanceUID,
                               dataset_bytes(big.read_bytes()))
    sha, _ = stored_sha256(plain_server, str(sop.SOPInstanceUID))
    assert sha == hashlib.sha256(expected).hexdigest()


def test_cget_of_a_200_mib_instance_streams_it_from_a_file_with_bounded_memory(
    plain_server: ServerProcess, tmp_path: Path,
) -> None:
    big = big_instance(tmp_path)
    done = storescu(plain_server, big, extra=("-xe",))
    assert done.returncode == 0, done.stdout + done.stderr
    header = dcmread(big, stop_before_pixels=True)
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(hashlib.sha256(event.encoded_dataset(include_meta=False)).hexdigest())
        return 0x0000

    ae = AE(ae_title="BIGGET")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.maximum_pdu_size = 1024 * 1024
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = header.StudyInstanceUID
    pid = server_pid(plain_server)
    before = proc_status(pid)
    assoc = ae.associate("127.0.0.1", plain_server.dicom_port,
                         ae_title=plain_server.ae_title,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    statuses = [int(status.Status) for status, _ in assoc.send_c_get(
        identifier, StudyRootQueryRetrieveInformationModelGet)]
    assoc.release()
    after = proc_status(pid)
    assert statuses[-1] == 0x0000, statuses
    assert received == [hashlib.sha256(dataset_bytes(big.read_bytes())).hexdigest()]
    peak = after["VmHWM"] - before["VmRSS"]
    assert peak < CGET_PEAK_BOUND, f"C-GET of {big.stat().st_size} bytes: +{peak} bytes"
