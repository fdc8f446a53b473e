"""No stalled associations: a request that takes us longer than the network timeout to
answer still gets its answer, and the association is not aborted under the peer.

The network timeout (pynetdicom's DUL idle timer) measures the peer's silence. A peer
that sent a C-STORE-RQ says nothing until we answer, so the time our C-STORE handler
takes (here: an index commit waiting for SQLite's write lock, held by another process)
must not count as its silence. Before the fix the association was aborted right after
the C-STORE-RSP was queued, racing it, and a pynetdicom SCU waited its whole DIMSE
timeout for an answer that never came (docs/performance.md "No stalled associations").
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from conftest import ServerProcess
from factories import make_dataset

pytestmark = pytest.mark.door_only  # the DICOM transport's timers

NETWORK_TIMEOUT = 1.0  # seconds, the server's --dicom-network-timeout here
LOCK_HELD = 4 * NETWORK_TIMEOUT  # how long the index stays locked: well past it
ANSWER_WAIT = 15.0  # the SCU's DIMSE timeout: how long it waits for each answer


@pytest.fixture
def impatient_server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", [
        "--no-load-samples", "--dicom-network-timeout", str(NETWORK_TIMEOUT)])
    proc.data_dir.mkdir()
    proc.start()
    yield proc
    proc.stop()


def store_in_thread(server: ServerProcess, datasets: list[Any], outcome: dict[str, Any]
                    ) -> tuple[threading.Thread, threading.Event, threading.Event]:
    associated, answered = threading.Event(), threading.Event()

    def send() -> None:
        ae = AE(ae_title="PATIENTSCU")
        # Our side waits long: only the server's network timeout is under test.
        ae.acse_timeout = ae.network_timeout = 60
        ae.dimse_timeout = ANSWER_WAIT
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
        outcome["established"] = assoc.is_established
        associated.set()
        if assoc.is_established:
            statuses = []
            for dataset in datasets:
                status = assoc.send_c_store(dataset)
                statuses.append(int(status.Status) if status and "Status" in status
                                else None)
                answered.set()
            outcome["statuses"] = statuses
            outcome["aborted"] = assoc.is_aborted
            if assoc.is_established:
                assoc.release()
        associated.set()
        answered.set()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread, associated, answered


def test_a_store_slower_than_the_network_timeout_is_answered_not_aborted(
    impatient_server: ServerProcess,
) -> None:
    server = impatient_server
    study = generate_uid()
    first, second = (make_dataset(sop_uid=generate_uid(), study_uid=study)
                     for _ in range(2))
    # Another process takes SQLite's write lock: the server's index commit waits for it
    # (busy_timeout), so the first C-STORE's handler takes LOCK_HELD seconds.
    index = sqlite3.connect(server.data_dir / "index.sqlite", timeout=30,
                            isolation_level=None)
    index.execute("BEGIN IMMEDIATE")
    outcome: dict[str, Any] = {}
    try:
        thread, associated, answered = store_in_thread(server, [first, second], outcome)
        assert associated.wait(60), "no association within 60 s"
        # Durability: no answer while the index row cannot be committed; meanwhile the
        # first store's handler waits far longer than the network timeout.
        assert not answered.wait(LOCK_HELD), outcome
    finally:
        index.execute("COMMIT")
        index.close()
    thread.join(timeout=2 * ANSWER_WAIT + 30)
    assert not thread.is_alive(), "the SCU is still waiting for a C-STORE-RSP"
    # Both answered on the same association: the slow first store did not get the
    # association aborted under the second (whose request would then dangle).
    assert outcome == {"established": True, "statuses": [0x0000, 0x0000],
                       "aborted": False}
    found = server.http.get(f"/dicom-web/studies/{study}/instances")
    assert found.status_code == 200
    assert sorted(i["00080018"]["Value"][0] for i in found.json()) == sorted(
        [first.SOPInstanceUID, second.SOPInstanceUID])

def test_a_silent_peer_is_still_dropped_after_the_network_timeout(
    impatient_server: ServerProcess,
) -> None:
    """The other half: the timeout still applies to the peer's own silence."""
    ae = AE(ae_title="SILENTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", impatient_server.dicom_port,
                         ae_title=impatient_server.ae_title)
    assert assoc.is_established
    deadline = time.monotonic() + 30 * NETWORK_TIMEOUT
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the association's state
    assert assoc.is_aborted, "the server kept a silent association open"
