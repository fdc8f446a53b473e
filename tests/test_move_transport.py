"""C-MOVE's sending path under the transport it meets: a destination that takes only
small PDUs, one that aborts in the middle, and moves back to back on one server (the
store association's DUL is woken by traffic and its reactor held paused between
sub-operations: dimse/outgoing.py, dimse/retrieve_scp.py). Real peers over sockets."""

from __future__ import annotations

import io
import time
import uuid
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
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from conftest import ServerProcess
from dimse_peers import dataset_bytes
from factories import make_instance
from retrieve_peers import register_ae, start_store_scp
from test_retrieve import _send_with_pynetdicom

# The subject is the DIMSE door's sending path: the same storage calls on every backend.
pytestmark = pytest.mark.door_only

SMALL_PDU = 4096  # PS3.8 §D.1: a receiver may announce a maximum PDU length this small


def _store(server: ServerProcess, syntaxes: list[str], rows: int = 256
           ) -> tuple[str, dict[str, bytes]]:
    study, series = generate_uid(), generate_uid()
    stored = {}
    for number, ts in enumerate(syntaxes, start=1):
        sop = generate_uid()
        stored[sop] = make_instance(study_uid=study, series_uid=series, sop_uid=sop,
                                    transfer_syntax=ts, patient_id="MOVE-T",
                                    rows=rows, columns=rows, InstanceNumber=number)
    _send_with_pynetdicom(server, stored)
    return study, stored


def _move(server: ServerProcess, study: str, destination: str) -> tuple[Dataset, float]:
    """(final status, seconds) of a C-MOVE of `study`."""
    ae = AE(ae_title="MOVEREQ")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.dimse_timeout = 30
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    started = time.monotonic()
    final = None
    try:
        for status, _ in assoc.send_c_move(identifier, destination,
                                           StudyRootQueryRetrieveInformationModelMove):
            if status and status.Status != 0xFF00:
                final = status
    finally:
        assoc.release()
    assert final is not None
    return final, time.monotonic() - started


def test_a_destination_with_small_pdus_gets_every_instance_intact_move_after_move(
    server: ServerProcess,
) -> None:
    """256x256 slices in 4 KiB PDUs (~32 PDUs each): as stored, byte-exact, in each
    syntax the destination accepts; transcoded (RLE → Explicit VR LE) where it does not.
    Three moves in a row on one server: each store association ends and the next works."""
    syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless,
                RLELossless, ExplicitVRLittleEndian]
    study, stored = _store(server, syntaxes)
    accepted = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless]
    scp = start_store_scp({CTImageStorage: accepted}, maximum_pdu_size=SMALL_PDU)
    try:
        register_ae(server, scp.ae_title, scp.port)
        for _ in range(3):
            scp.received.clear()
            final, _ = _move(server, study, scp.ae_title)
            assert final.Status == 0x0000, final
            assert final.NumberOfCompletedSuboperations == len(stored)
            assert set(scp.received) == set(stored)
            for sop, data in stored.items():
                ts, received = scp.received[sop]
                original = dcmread(io.BytesIO(data))
                if original.file_meta.TransferSyntaxUID in accepted:
                    assert ts == original.file_meta.TransferSyntaxUID
                    assert received == dataset_bytes(data)
                    continue
                assert ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
                got = dcmread(io.BytesIO(received), force=True)
                got.file_meta = FileMetaDataset()
                got.file_meta.TransferSyntaxUID = ts
                assert np.array_equal(got.pixel_array, original.pixel_array)
    finally:
        scp.stop()


def test_a_destination_that_aborts_mid_move_fails_the_rest_and_the_server_serves_on(
    server: ServerProcess,
) -> None:
    """The destination aborts its association on the second C-STORE: one completed, the
    other three failed (0xB000), at once rather than after a timeout; then a move to a
    working destination delivers everything."""
    study, stored = _store(server, [ExplicitVRLittleEndian] * 4, rows=128)
    title = "A" + uuid.uuid4().hex[:10].upper()
    seen: list[str] = []

    def on_store(event: Any) -> int:
        seen.append(str(event.request.AffectedSOPInstanceUID))
        if len(seen) == 2:
            event.assoc.abort()
        return 0x0000

    ae = AE(ae_title=title)
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    aborting = ae.start_server(("127.0.0.1", 0), block=False,
                               evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert aborting is not None
    try:
        register_ae(server, title, int(aborting.server_address[1]))
        final, seconds = _move(server, study, title)
    finally:
        aborting.shutdown()
    assert final.Status == 0xB000, final
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (1, 3)
    assert seconds < 30, f"the move took {seconds:.1f} s after the destination aborted"
    working = start_store_scp()
    try:
        register_ae(server, working.ae_title, working.port)
        final, _ = _move(server, study, working.ae_title)
        assert final.Status == 0x0000 and set(working.received) == set(stored)
    finally:
        working.stop()
