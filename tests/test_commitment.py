"""Storage Commitment Push Model: what is really stored (and intact) is committed,
everything else is listed as failed with the reason; reports reach the requester."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StorageCommitmentPushModel,
    StorageCommitmentPushModelInstance,
)

from conftest import ServerProcess, open_test_archive
from dimse_peers import storescu
from factories import make_instance
from node_tools import server_settings
from retrieve_peers import register_ae


class Reports:
    """Collects N-EVENT-REPORTs; `wait` blocks on an event, not on time."""

    def __init__(self, answer: int = 0x0000) -> None:
        self.received: list[tuple[int, Dataset]] = []
        self.arrived = threading.Event()
        self.answered = threading.Event()
        self.answer = answer

    def sent(self, event: Any) -> None:
        if type(event.message).__name__ == "N_EVENT_REPORT_RSP":
            self.answered.set()

    def handler(self, event: Any) -> tuple[int, None]:
        if self.answer == 0x0000:
            self.received.append((event.event_type, event.event_information))
            self.arrived.set()
        return self.answer, None

    def wait(self) -> tuple[int, Dataset]:
        assert self.arrived.wait(30), "no N-EVENT-REPORT within 30 s"
        return self.received[0]

    def wait_answered(self) -> None:
        """Until our N-EVENT-REPORT-RSP went out (releasing earlier would drop it)."""
        assert self.answered.wait(30), "N-EVENT-REPORT not answered within 30 s"


def _request(*instances: tuple[str, str]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = generate_uid()
    items = []
    for sop_class, sop_instance in instances:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = Sequence(items)
    return ds


def _stored(server: ServerProcess, tmp_path: Path, count: int) -> list[tuple[str, str]]:
    study = generate_uid()
    refs = []
    for n in range(count):
        sop = generate_uid()
        path = tmp_path / f"{n}.dcm"
        path.write_bytes(make_instance(study_uid=study, sop_uid=sop))
        refs.append((str(CTImageStorage), sop))
        assert storescu(server, path).returncode == 0
    return refs


def _commit(server: ServerProcess, request: Dataset, reports: Reports,
            calling: str = "COMMITTER") -> int:
    ae = AE(ae_title=calling)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title,
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler),
                                       (evt.EVT_DIMSE_SENT, reports.sent)])
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel,
                                        StorageCommitmentPushModelInstance)
        if reports.answer == 0x0000:
            reports.wait()  # on this association: keep it open until the report came
            reports.wait_answered()
    finally:
        assoc.release()
    return int(status.Status)


def _by_uid(info: Dataset, sequence: str) -> dict[str, Dataset]:
    return {str(item.ReferencedSOPInstanceUID): item for item in info.get(sequence, [])}


def test_commitment_reports_stored_instances_and_fails_never_stored_ones(
    server: ServerProcess, tmp_path: Path
) -> None:
    stored = _stored(server, tmp_path, 2)
    missing = (str(CTImageStorage), generate_uid())
    request = _request(*stored, missing)
    reports = Reports()
    assert _commit(server, request, reports) == 0x0000
    event_type, info = reports.wait()
    assert event_type == 2  # complete, failures exist (PS3.4 J.3.3.1)
    assert info.TransactionUID == request.TransactionUID
    assert set(_by_uid(info, "ReferencedSOPSequence")) == {sop for _, sop in stored}
    failed = _by_uid(info, "FailedSOPSequence")
    assert set(failed) == {missing[1]}
    assert failed[missing[1]].FailureReason == 0x0112  # no such object instance


def test_commitment_of_all_stored_instances_is_event_type_1(
    server: ServerProcess, tmp_path: Path
) -> None:
    stored = _stored(server, tmp_path, 1)
    reports = Reports()
    _commit(server, _request(*stored), reports)
    event_type, info = reports.wait()
    assert event_type == 1 and "FailedSOPSequence" not in info


def test_instance_whose_stored_bytes_changed_is_not_committed(
    empty_server: ServerProcess, tmp_path: Path
) -> None:
    (ref,) = _stored(empty_server, tmp_path, 1)
    # Through the server's own blob store (folder or S3), once any spooled upload is done.
    while httpx.get(f"{empty_server.http_url}/admin/storage",
                    headers=empty_server.auth).json()["pending_uploads"]:
        time.sleep(0.05)
    archive = open_test_archive(
        server_settings(empty_server).model_copy(update={"s3_spool": False}))
    (record,) = archive.instances(sop_instance_uid=ref[1])
    data = bytearray(archive.store.read(record.blob_key))
    data[-1] ^= 0xFF  # one flipped bit of pixel data: still DICOM, no longer what was sent
    archive.store.put(record.blob_key, bytes(data))
    archive.close()
    reports = Reports()
    _commit(empty_server, _request(ref), reports)
    event_type, info = reports.wait()
    assert event_type == 2
    assert _by_uid(info, "FailedSOPSequence")[ref[1]].FailureReason == 0x0110
    assert "do not match their recorded SHA-256" in empty_server.log()


def test_class_instance_conflict_is_reported(server: ServerProcess, tmp_path: Path) -> None:
    ((_, sop),) = _stored(server, tmp_path, 1)
    reports = Reports()
    _commit(server, _request(("1.2.840.10008.5.1.4.1.1.4", sop)), reports)  # MR, not CT
    _, info = reports.wait()
    assert _by_uid(info, "FailedSOPSequence")[sop].FailureReason == 0x0119


def test_registered_requester_gets_its_report_on_a_new_association(
    server: ServerProcess, tmp_path: Path
) -> None:
    stored = _stored(server, tmp_path, 1)
    calling = "SC" + uuid.uuid4().hex[:8].upper()
    listener = Reports()
    ae = AE(ae_title=calling)
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    scp = ae.start_server(("127.0.0.1", 0), block=False,
                          evt_handlers=[(evt.EVT_N_EVENT_REPORT, listener.handler)])
    try:
        register_ae(server, calling, scp.server_address[1], rights=["commitment"])
        # released right after the N-ACTION response, as many modalities do
        request = _request(*stored)
        assert _commit(server, request, Reports(answer=0x0110), calling=calling) == 0x0000
        event_type, info = listener.wait()
    finally:
        scp.shutdown()
    assert event_type == 1
    assert info.TransactionUID == request.TransactionUID
    assert set(_by_uid(info, "ReferencedSOPSequence")) == {stored[0][1]}


def test_commitment_request_without_transaction_uid_is_refused(server: ServerProcess) -> None:
    request = _request((str(CTImageStorage), generate_uid()))
    del request.TransactionUID
    status = _commit(server, request, Reports(answer=0x0110))
    assert status == 0x0120
