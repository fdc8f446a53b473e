"""C-CANCEL sent right behind its C-FIND-RQ, before any pending response (PS3.7 §9.3.2.3)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_CANCEL, C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    ModalityWorklistInformationFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from conftest import ServerProcess
from factories import make_dataset

pytestmark = pytest.mark.door_only  # the DICOM door's C-CANCEL handling

MATCHES = 50


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """50 studies and 50 worklist items."""
    data = tmp_path_factory.mktemp("cancel") / "data"
    data.mkdir()
    proc = ServerProcess(data, ["--no-load-samples"]).start()
    ae = AE(ae_title="LOADER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", proc.dicom_port, ae_title=proc.ae_title)
    assert assoc.is_established
    for n in range(MATCHES):
        ds = make_dataset(patient_id="CANCEL-1", study_uid=generate_uid(),
                          accession_number=f"C{n:04d}")
        assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    for n in range(MATCHES):
        response = httpx.post(f"{proc.http_url}/admin/worklist", json={
            "patient_id": "CANCEL-1", "patient_name": "Cancel^Test", "modality": "CT",
            "scheduled_start_date": "20250301", "scheduled_start_time": "0900",
            "accession_number": f"WL{n:04d}", "requested_procedure_description": "CT",
        }, headers=proc.auth)
        assert response.status_code == 201, response.text
    yield proc
    proc.stop()


def find_then_cancel_at_once(server: ServerProcess, identifier: Dataset, model: str,
                             *, cancel: bool) -> tuple[int, int]:
    """C-FIND-RQ, then (with `cancel`) its C-CANCEL-RQ in the very next PDU, before
    reading anything; returns (pending responses, final status)."""
    ae = AE(ae_title="CANCELER")
    ae.add_requested_context(model, "1.2.840.10008.1.2")
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    # Hold pynetdicom's reactor (as its own send_c_* do) so the responses come to us.
    assoc._reactor_checkpoint.clear()
    deadline = time.monotonic() + 5
    while not assoc._is_paused and time.monotonic() < deadline:
        time.sleep(0.0001)
    try:
        context_id = assoc.accepted_contexts[0].context_id
        request = C_FIND()
        request.MessageID = 11
        request.AffectedSOPClassUID = model
        request.Priority = 2
        request.Identifier = io.BytesIO(encode(identifier, True, True))  # Implicit VR LE
        assoc.dimse.send_msg(request, context_id)
        if cancel:
            cancel_rq = C_CANCEL()
            cancel_rq.MessageIDBeingRespondedTo = 11
            assoc.dimse.send_msg(cancel_rq, context_id)
        pending = 0
        for _ in range(10 * MATCHES):
            _, response = assoc.dimse.get_msg(block=True)
            assert response is not None, "no response from the server"
            if response.Status in (0xFF00, 0xFF01):
                pending += 1
                continue
            return pending, int(response.Status)
        raise AssertionError("more responses than matches")
    finally:
        assoc._reactor_checkpoint.set()
        assoc.release()


def _study_query() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = "CANCEL-1"
    ds.StudyInstanceUID = ""
    return ds


def _worklist_query() -> Dataset:
    sps = Dataset()
    sps.Modality = "CT"
    sps.ScheduledProcedureStepStartDate = ""
    ds = Dataset()
    ds.PatientID = "CANCEL-1"
    ds.AccessionNumber = ""
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


@pytest.mark.parametrize("query, model", [
    (_study_query, StudyRootQueryRetrieveInformationModelFind),
    (_worklist_query, ModalityWorklistInformationFind),
], ids=["study-root", "worklist"])
def test_ccancel_right_behind_the_cfind_request_ends_it_with_fe00(
    busy_server: ServerProcess, query: object, model: str, tmp_path: Path,
) -> None:
    identifier = query()  # type: ignore[operator]
    total, status = find_then_cancel_at_once(busy_server, identifier, model, cancel=False)
    assert (total, status) == (MATCHES, 0x0000)
    for _ in range(3):  # every try must be cancelled, not one in three
        sent, status = find_then_cancel_at_once(busy_server, identifier, model, cancel=True)
        assert status == 0xFE00
        assert sent < MATCHES


def test_a_cancel_for_a_finished_request_does_not_cancel_the_next_one_with_its_id(
    busy_server: ServerProcess,
) -> None:
    model = StudyRootQueryRetrieveInformationModelFind
    # The first query's cancel arrives; the second query reuses Message ID 11.
    find_then_cancel_at_once(busy_server, _study_query(), model, cancel=True)
    assert find_then_cancel_at_once(busy_server, _study_query(), model, cancel=False) == (
        MATCHES, 0x0000)
