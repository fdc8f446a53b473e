"""Storage Commitment Push Model SCP (PS3.4 Annex J).

N-ACTION (Request Storage Commitment) is answered at once; each referenced instance is
then checked (indexed, blob present, SHA-256 as recorded at ingest) and the result goes
back in an N-EVENT-REPORT: on a new association to the requester's AE when it is
registered, otherwise on the requester's own association (PS3.4 J.3.3).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID
from pynetdicom import build_context, build_role, evt
from pynetdicom.dimse_messages import N_ACTION_RSP
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    StorageCommitmentPushModelInstance,
)

from minipacs.ae_registry import AERegistry
from minipacs.archive import Archive
from minipacs.dimse.outgoing import OutgoingTransport, send_without_delay
from minipacs.dimse.reactor_pause import install
from minipacs.dimse.status import SUCCESS, status_dataset
from minipacs.dimse.storage_scp import peer_of

log = logging.getLogger(__name__)

REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID (PS3.4 J.3.2.1)
ALL_COMMITTED = 1  # Event Type ID: storage commitment request successful
SOME_FAILED = 2  # Event Type ID: complete, failures exist
# Failure Reason (0008,1197), PS3.3 C.14.1.1
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
# N-ACTION statuses (PS3.7 Annex C)
NO_SUCH_ACTION = 0x0123
MISSING_ATTRIBUTE = 0x0120
_REPORT_TIMEOUT = 10.0  # seconds to wait for N-EVENT-REPORT-RSP on the requester's association


def commitment_result(archive: Archive, request: Dataset) -> tuple[int, Dataset]:
    """(Event Type ID, Event Information) for one commitment request."""
    committed, failed = [], []
    for ref in request.get("ReferencedSOPSequence", []):
        sop_class = str(ref.get("ReferencedSOPClassUID", ""))
        sop_instance = str(ref.get("ReferencedSOPInstanceUID", ""))
        record, problem = archive.verify_instance(sop_instance)
        reason = 0
        if record is None:
            reason = NO_SUCH_OBJECT_INSTANCE
        elif problem:
            reason = PROCESSING_FAILURE
        elif sop_class and record.sop_class_uid != sop_class:
            reason, problem = CLASS_INSTANCE_CONFLICT, f"stored as {record.sop_class_uid}"
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        if reason:
            item.FailureReason = reason
            failed.append(item)
            log.warning("storage commitment: %s not committed: %s", sop_instance,
                        problem or "not in the archive")
        else:
            committed.append(item)
    info = Dataset()
    info.TransactionUID = request.TransactionUID
    if committed:
        info.ReferencedSOPSequence = Sequence(committed)
    if failed:
        info.FailedSOPSequence = Sequence(failed)
    return (SOME_FAILED if failed else ALL_COMMITTED), info


def handle_n_action(
    event: Any, archive: Archive, registry: AERegistry,
    outgoing: OutgoingTransport | None = None,
) -> tuple[int | Dataset, Dataset | None]:
    """EVT_N_ACTION: accept the request, then check and report in the background."""
    peer = peer_of(event)
    if event.request.RequestedSOPClassUID != StorageCommitmentPushModel:
        return status_dataset(NO_SUCH_ACTION, "only Storage Commitment is offered"), None
    if event.action_type != REQUEST_STORAGE_COMMITMENT:
        return status_dataset(NO_SUCH_ACTION, f"action type {event.action_type} unknown"), None
    request = event.action_information
    if "TransactionUID" not in request or "ReferencedSOPSequence" not in request:
        return status_dataset(MISSING_ATTRIBUTE,
                              "TransactionUID and ReferencedSOPSequence are required"), None
    log.info("storage commitment %s from %s: %d instances", request.TransactionUID, peer,
             len(request.ReferencedSOPSequence))
    calling = str(event.assoc.requestor.ae_title).strip()
    answered = _once_answered(event.assoc)
    thread = threading.Thread(
        target=_report_logging_errors,
        args=(event.assoc, archive, registry, request, calling,
              outgoing or OutgoingTransport(), answered),
        name=f"commitment-{request.TransactionUID}", daemon=True,
    )
    thread.start()
    return SUCCESS, None


def _once_answered(assoc: Any) -> threading.Event:
    """Set once our N-ACTION-RSP has been sent on `assoc`.

    pynetdicom marks the reactor paused while a handler runs (so that the handler may
    send on the association itself), so another thread sending the report there could
    slip its PDUs between the N-ACTION-RSP's: the requester then decodes neither.
    The report on the requester's association waits for this instead."""
    answered = threading.Event()

    def on_sent(event: Any) -> None:
        if isinstance(event.message, N_ACTION_RSP):
            answered.set()
            # pynetdicom iterates the live handler list: removing the running (last
            # bound) handler skips none of the others.
            assoc.unbind(evt.EVT_DIMSE_SENT, on_sent)

    assoc.bind(evt.EVT_DIMSE_SENT, on_sent)
    return answered


def _report_logging_errors(*args: Any) -> None:
    try:
        _report(*args)
    except Exception:  # a background thread has no caller to raise to
        log.exception("storage commitment report failed")


def _report(assoc: Any, archive: Archive, registry: AERegistry, request: Dataset,
            calling: str, outgoing: OutgoingTransport, answered: threading.Event) -> None:
    event_type, info = commitment_result(archive, request)
    info.RetrieveAETitle = assoc.ae.ae_title
    transaction = request.TransactionUID
    remote = registry.get(calling)
    if remote is None:
        # PS3.4 J.3.3: an SCU must accept the report on a new association, but we only
        # know where a registered AE listens; otherwise use its own association. (For a
        # registered AE a new association is always used: one that releases right after
        # the N-ACTION response would otherwise race the report on its association.)
        if not assoc.is_established:
            log.error("storage commitment %s: %s closed its association and is not a "
                      "registered AE, so the result cannot be delivered (minipacs ae add)",
                      transaction, calling)
            return
        # A requester that releases while the report is in flight never answers it,
        # and its release waits on us: bound that wait (the answer takes milliseconds).
        assoc.dimse_timeout = min(assoc.dimse_timeout or _REPORT_TIMEOUT, _REPORT_TIMEOUT)
        if not answered.wait(_REPORT_TIMEOUT):
            log.error("storage commitment %s: our N-ACTION-RSP to %s was not sent within "
                      "%s s; no report on its association", transaction, calling,
                      _REPORT_TIMEOUT)
            return
        status, _ = assoc.send_n_event_report(info, event_type, StorageCommitmentPushModel,
                                              StorageCommitmentPushModelInstance)
        log.info("storage commitment %s reported to %s on its association: 0x%04X",
                 transaction, calling, int(status.get("Status", 0xFFFF)))
        return
    report_assoc = assoc.ae.associate(
        remote.host, remote.port, ae_title=remote.ae_title,
        contexts=[build_context(StorageCommitmentPushModel)],
        # PS3.4 J.3.3: on a new association we are the SCP and it the SCU.
        ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)],
        evt_handlers=[(evt.EVT_CONN_OPEN, send_without_delay)],
        **outgoing.associate_options(remote),
    )
    if not report_assoc.is_established:
        log.error("storage commitment %s: could not associate with %s at %s:%d",
                  transaction, remote.ae_title, remote.host, remote.port)
        return
    install(report_assoc)  # pynetdicom's own pause can let its reactor take the answer
    try:
        status, _ = report_assoc.send_n_event_report(
            info, event_type, StorageCommitmentPushModel,
            UID(StorageCommitmentPushModelInstance))
        log.info("storage commitment %s reported to %s on a new association: 0x%04X",
                 transaction, remote.ae_title, int(status.get("Status", 0xFFFF)))
    finally:
        report_assoc.release()
