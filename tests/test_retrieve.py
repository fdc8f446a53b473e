"""C-MOVE and C-GET against the real server: dcmtk and pynetdicom as requesters,
storescp and a pynetdicom storage SCP as move destinations, bytes compared."""

from __future__ import annotations

import io
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from conftest import ServerProcess, require_tool
from dimse_peers import dataset_bytes, run_dcmtk, storescu
from factories import make_instance
from retrieve_peers import StoreSCP, register_ae, start_store_scp


def _store_study(server: ServerProcess, tmp_path: Path, syntaxes: list[str],
                 patient_id: str = "RET-1") -> tuple[str, list[str], dict[str, bytes]]:
    """One study, two series (first two instances, then the rest), sent with storescu.
    Returns (study UID, series UIDs, SOP UID → stored Part-10 bytes)."""
    study, series = generate_uid(), [generate_uid(), generate_uid()]
    stored: dict[str, bytes] = {}
    for number, ts in enumerate(syntaxes, start=1):
        sop = generate_uid()
        data = make_instance(study_uid=study, series_uid=series[0 if number <= 2 else 1],
                             sop_uid=sop, transfer_syntax=ts, patient_id=patient_id,
                             InstanceNumber=number)
        path = tmp_path / f"{number}.dcm"
        path.write_bytes(data)
        stored[sop] = data
    files = sorted(tmp_path.glob("*.dcm"))
    result = storescu(server, *files)
    assert result.returncode == 0, result.stderr
    return study, series, stored


def _send_with_pynetdicom(server: ServerProcess, stored: dict[str, bytes]) -> None:
    ae = AE(ae_title="RETSTORE")
    syntaxes = {dcmread(io.BytesIO(d)).file_meta.TransferSyntaxUID for d in stored.values()}
    for ts in syntaxes:
        ae.add_requested_context(CTImageStorage, [ts])
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        for data in stored.values():
            assert assoc.send_c_store(dcmread(io.BytesIO(data))).Status == 0
    finally:
        assoc.release()


def _study(server: ServerProcess, syntaxes: list[str], patient_id: str = "RET-1"
           ) -> tuple[str, list[str], dict[str, bytes]]:
    """Like _store_study, but sent with pynetdicom in each instance's own syntax."""
    study, series = generate_uid(), [generate_uid(), generate_uid()]
    stored: dict[str, bytes] = {}
    for number, ts in enumerate(syntaxes, start=1):
        sop = generate_uid()
        stored[sop] = make_instance(study_uid=study, series_uid=series[0 if number <= 2 else 1],
                                    sop_uid=sop, transfer_syntax=ts, patient_id=patient_id,
                                    InstanceNumber=number)
    _send_with_pynetdicom(server, stored)
    return study, series, stored


def _move(server: ServerProcess, identifier: Dataset, destination: str,
          model: str = StudyRootQueryRetrieveInformationModelMove
          ) -> tuple[list[Dataset], Dataset, Dataset | None]:
    """(pending statuses, final status, final identifier) of one C-MOVE."""
    ae = AE(ae_title="RETMOVE")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    pending: list[Dataset] = []
    final: tuple[Dataset, Dataset | None] | None = None
    try:
        for status, ds in assoc.send_c_move(identifier, destination, model):
            if status.Status == 0xFF00:
                pending.append(status)
            else:
                final = (status, ds)
    finally:
        assoc.release()
    assert final is not None
    return pending, final[0], final[1]


def _study_identifier(study: str, level: str = "STUDY", **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.StudyInstanceUID = study
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


@pytest.fixture
def destination() -> Iterator[StoreSCP]:
    scp = start_store_scp()
    yield scp
    scp.stop()


def test_cmove_study_sends_every_instance_as_stored_with_pending_counts(
    server: ServerProcess, destination: StoreSCP
) -> None:
    register_ae(server, destination.ae_title, destination.port)
    syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEG2000Lossless]
    study, _, stored = _study(server, syntaxes)
    pending, final, _ = _move(server, _study_identifier(study), destination.ae_title)
    assert final.Status == 0x0000
    assert final.NumberOfCompletedSuboperations == 4
    assert final.NumberOfFailedSuboperations == 0
    remaining = [p.NumberOfRemainingSuboperations for p in pending]
    assert remaining == [3, 2, 1, 0]
    assert set(destination.received) == set(stored)
    for sop, data in stored.items():
        ts, received = destination.received[sop]
        assert ts == dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID
        assert received == dataset_bytes(data)


def test_cmove_series_sends_only_that_series(server: ServerProcess, destination: StoreSCP
                                             ) -> None:
    register_ae(server, destination.ae_title, destination.port)
    study, series, stored = _study(server, [ExplicitVRLittleEndian] * 3)
    identifier = _study_identifier(study, "SERIES", SeriesInstanceUID=series[1])
    _, final, _ = _move(server, identifier, destination.ae_title)
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 1
    (sop,) = destination.received
    assert destination.received[sop][1] == dataset_bytes(stored[sop])


def test_cmove_to_unknown_destination_is_refused_with_a801(server: ServerProcess) -> None:
    study, _, _ = _study(server, [ExplicitVRLittleEndian])
    _, final, _ = _move(server, _study_identifier(study), "NOSUCHAE")
    assert final.Status == 0xA801


def test_cmove_partial_failure_is_b000_listing_the_failed_instances(
    server: ServerProcess
) -> None:
    study, _, stored = _study(server, [ExplicitVRLittleEndian] * 3)
    refused = list(stored)[1]
    scp = start_store_scp(refuse=[refused])
    try:
        register_ae(server, scp.ae_title, scp.port)
        _, final, identifier = _move(server, _study_identifier(study), scp.ae_title)
    finally:
        scp.stop()
    assert final.Status == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 1)
    assert identifier is not None
    assert list(identifier.FailedSOPInstanceUIDList) == [refused] or str(
        identifier.FailedSOPInstanceUIDList) == refused


def test_cmove_transcodes_for_a_destination_without_the_stored_syntax(
    server: ServerProcess
) -> None:
    study, _, stored = _study(server, [RLELossless])
    scp = start_store_scp({CTImageStorage: [ExplicitVRLittleEndian]})
    try:
        register_ae(server, scp.ae_title, scp.port)
        _, final, _ = _move(server, _study_identifier(study), scp.ae_title)
    finally:
        scp.stop()
    assert final.Status == 0x0000
    ((sop, (ts, received)),) = scp.received.items()
    assert ts == ExplicitVRLittleEndian
    original = dcmread(io.BytesIO(stored[sop])).pixel_array
    got = dcmread(io.BytesIO(received), force=True)
    got.file_meta = FileMetaDataset()
    got.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert np.array_equal(got.pixel_array, original)


def test_cmove_instance_that_cannot_be_converted_fails_alone(server: ServerProcess) -> None:
    # The destination takes CT only as JPEG 2000 Lossless: the JPEG 2000 instance goes
    # as stored, the RLE one can be neither sent as is nor decompressed for it.
    study, _, stored = _study(server, [JPEG2000Lossless, RLELossless])
    rle = [s for s, d in stored.items()
           if dcmread(io.BytesIO(d)).file_meta.TransferSyntaxUID == RLELossless][0]
    scp = start_store_scp({CTImageStorage: [JPEG2000Lossless, JPEGBaseline8Bit]})
    try:
        register_ae(server, scp.ae_title, scp.port)
        _, final, identifier = _move(server, _study_identifier(study), scp.ae_title)
    finally:
        scp.stop()
    assert final.Status == 0xB000
    assert identifier is not None and rle in str(identifier.FailedSOPInstanceUIDList)
    assert rle not in scp.received and len(scp.received) == 1
    assert f"not sending {rle}" in server.log()


def test_cmove_patient_root_patient_level_moves_all_the_patients_studies(
    server: ServerProcess, destination: StoreSCP
) -> None:
    register_ae(server, destination.ae_title, destination.port)
    patient_id = "RET-PAT-" + generate_uid()[-8:]
    _, _, first = _study(server, [ExplicitVRLittleEndian], patient_id=patient_id)
    _, _, second = _study(server, [ExplicitVRLittleEndian] * 2, patient_id=patient_id)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "PATIENT"
    identifier.PatientID = patient_id
    _, final, _ = _move(server, identifier, destination.ae_title,
                        PatientRootQueryRetrieveInformationModelMove)
    assert final.Status == 0x0000
    assert set(destination.received) == set(first) | set(second)


def test_cmove_without_the_levels_unique_key_is_refused(
    server: ServerProcess, destination: StoreSCP
) -> None:
    register_ae(server, destination.ae_title, destination.port)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = generate_uid()
    _, final, _ = _move(server, identifier, destination.ae_title)
    assert final.Status == 0xA900
    assert destination.received == {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_movescu_study_to_storescp_delivers_identical_bytes(
    server: ServerProcess, tmp_path: Path
) -> None:
    study, _, stored = _study(server, [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless])
    out = tmp_path / "received"
    out.mkdir()
    port = _free_port()
    storescp = subprocess.Popen(
        [require_tool("storescp"), "+xa", "-aet", "STORESCP", "-od", str(out), str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while run_dcmtk("echoscu", "-aec", "STORESCP", "127.0.0.1", str(port)).returncode:
            assert storescp.poll() is None, storescp.stdout.read() if storescp.stdout else ""
            assert time.monotonic() < deadline, "storescp did not start"
        register_ae(server, "STORESCP", port)
        moved = run_dcmtk(
            "movescu", "-S", "-aec", server.ae_title, "-aem", "STORESCP",
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
            "127.0.0.1", str(server.dicom_port),
        )
        assert moved.returncode == 0, moved.stderr
    finally:
        storescp.terminate()
        storescp.wait(timeout=10)
    received = {dcmread(p).SOPInstanceUID: p.read_bytes() for p in out.iterdir()}
    assert set(received) == set(stored)
    for sop, data in stored.items():
        assert dataset_bytes(received[sop]) == dataset_bytes(data)


def test_getscu_study_arrives_on_the_same_association_byte_exact(
    server: ServerProcess, tmp_path: Path
) -> None:
    study, _, stored = _store_study(server, tmp_path, [ExplicitVRLittleEndian] * 2)
    out = tmp_path / "got"
    out.mkdir()
    result = run_dcmtk(
        "getscu", "-S", "-aec", server.ae_title, "-od", str(out),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
        "127.0.0.1", str(server.dicom_port),
    )
    assert result.returncode == 0, result.stderr
    received = {dcmread(p).SOPInstanceUID: p.read_bytes() for p in out.iterdir()}
    assert set(received) == set(stored)
    for sop, data in stored.items():
        assert dataset_bytes(received[sop]) == dataset_bytes(data)


def _get(server: ServerProcess, identifier: Dataset, syntaxes: list[str]
         ) -> tuple[Dataset, dict[str, tuple[str, bytes]]]:
    received: dict[str, tuple[str, bytes]] = {}

    def on_store(event: Any) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = (
            str(event.context.transfer_syntax), event.encoded_dataset(include_meta=False))
        return 0x0000

    ae = AE(ae_title="RETGET")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for ts in syntaxes:
        ae.add_requested_context(CTImageStorage, [ts])
    roles = [build_role(CTImageStorage, scp_role=True)]
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title,
                         ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    final = None
    try:
        for status, _ds in assoc.send_c_get(identifier,
                                            StudyRootQueryRetrieveInformationModelGet):
            if status.Status != 0xFF00:
                final = status
    finally:
        assoc.release()
    assert final is not None
    return final, received


def test_cget_sends_compressed_instances_as_stored_when_the_peer_takes_them(
    server: ServerProcess
) -> None:
    study, _, stored = _study(server, [RLELossless, JPEG2000Lossless])
    final, received = _get(server, _study_identifier(study),
                           [RLELossless, JPEG2000Lossless, ExplicitVRLittleEndian])
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 2
    for sop, data in stored.items():
        assert received[sop] == (dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID,
                                 dataset_bytes(data))


def test_cget_decompresses_for_a_peer_that_takes_only_implicit_little_endian(
    server: ServerProcess
) -> None:
    study, _, stored = _study(server, [JPEG2000Lossless])
    final, received = _get(server, _study_identifier(study), [ImplicitVRLittleEndian])
    assert final.Status == 0x0000
    ((sop, (ts, _)),) = received.items()
    assert ts == ImplicitVRLittleEndian and sop in stored


def test_ccancel_during_cget_stops_the_remaining_sub_operations(server: ServerProcess) -> None:
    study, _, stored = _study(server, [ExplicitVRLittleEndian] * 4)
    received: list[str] = []
    assoc_box: dict[str, Any] = {}

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        if len(received) == 1:
            # The cancel reaches the server before this C-STORE's response, so it is
            # seen before the next sub-operation (PS3.7 9.3.2.3: cancel names the C-GET).
            get_context = next(cx for cx in event.assoc.accepted_contexts
                               if cx.abstract_syntax == StudyRootQueryRetrieveInformationModelGet)
            assoc_box["assoc"].send_c_cancel(1, get_context.context_id)
        return 0x0000

    ae = AE(ae_title="RETCANCEL")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assoc_box["assoc"] = assoc
    assert assoc.is_established
    try:
        responses = [status for status, _ in assoc.send_c_get(
            _study_identifier(study), StudyRootQueryRetrieveInformationModelGet, msg_id=1)]
    finally:
        assoc.release()
    final = responses[-1]
    assert final.Status == 0xFE00
    assert final.NumberOfCompletedSuboperations == 1
    assert final.NumberOfRemainingSuboperations == 3
    assert received == received[:1] and received[0] in stored
