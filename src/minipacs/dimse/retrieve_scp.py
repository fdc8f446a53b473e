"""C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3): instances leave as they were stored.

pynetdicom runs the sub-operation bookkeeping (pending responses with remaining,
completed, failed and warning counts; 0xB000 with FailedSOPInstanceUIDList when some
sub-operations failed, 0xA702 when all did). The handlers here decide what to send:

* the stored bytes, when the peer accepted the stored transfer syntax;
* otherwise a copy transcoded to Explicit or Implicit VR Little Endian, when the peer
  accepted one of those (PS3.5 §10.1: every peer must accept Implicit VR LE);
* otherwise nothing: that sub-operation fails, with the reason logged.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, evt
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import PresentationContext

from minipacs.ae_registry import AERegistry
from minipacs.archive import Archive, InstanceRecord
from minipacs.dicom.transcode import transcode
from minipacs.dimse.access import AccessPolicy
from minipacs.dimse.cancel import cancelled
from minipacs.dimse.outgoing import OutgoingTransport, send_without_delay
from minipacs.dimse.reactor_pause import ReactorCheckpoint, install
from minipacs.dimse.status import CANCEL, PENDING, status_dataset
from minipacs.dimse.storage_scp import peer_of
from minipacs.errors import MinipacsError, NotAcceptable, QueryError
from minipacs.index.query import LEVELS

log = logging.getLogger(__name__)

MOVE_UNKNOWN_DESTINATION = 0xA801  # PS3.4 C.4.2.1.5: Refused, move destination unknown
RETRIEVE_IDENTIFIER_MISMATCH = 0xA900  # Failed: identifier does not match SOP class
RETRIEVE_UNABLE_TO_PROCESS = 0xC000  # Failed: unable to process
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_MAX_CONTEXTS = 128  # PS3.8 §9.3.2.2: presentation context IDs are odd numbers 1-255

# Unique keys per level (PS3.4 C.4.2.2.1); keys of higher levels narrow the selection.
_UNIQUE_KEYS = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


def _values(identifier: Dataset, keyword: str) -> list[str]:
    value = identifier.get(keyword)
    if value is None or value == "":
        return []
    items = value if isinstance(value, MultiValue | list) else str(value).split("\\")
    return [str(v).strip() for v in items if str(v).strip()]


def select_instances(identifier: Dataset, archive: Archive) -> list[InstanceRecord]:
    """The instances a C-MOVE/C-GET identifier asks for.

    Raises `QueryError` when the level is missing or its unique key is empty.
    """
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in LEVELS:
        raise QueryError(f"QueryRetrieveLevel {level!r} is not PATIENT/STUDY/SERIES/IMAGE")
    if not _values(identifier, _UNIQUE_KEYS[level]):
        raise QueryError(f"a {level} level retrieve needs {_UNIQUE_KEYS[level]}")
    return archive.instances_matching(
        patient_ids=_values(identifier, "PatientID"),
        study_uids=_values(identifier, "StudyInstanceUID"),
        series_uids=_values(identifier, "SeriesInstanceUID"),
        sop_uids=_values(identifier, "SOPInstanceUID") if level == "IMAGE" else (),
    )


def accepted_syntaxes(assoc: Any) -> dict[str, set[str]]:
    """SOP class → transfer syntaxes in which we may send C-STORE on `assoc`."""
    out: dict[str, set[str]] = {}
    for cx in assoc.accepted_contexts:
        if cx.as_scu and cx.abstract_syntax:
            out.setdefault(str(cx.abstract_syntax), set()).update(
                str(ts) for ts in cx.transfer_syntax)
    return out


def outgoing_dataset(record: InstanceRecord, data: bytes, accepted: set[str]) -> Dataset:
    """What to send for `record`: as stored if accepted, else transcoded.

    Raises `NotAcceptable` with the reason when neither is possible.
    """
    if record.transfer_syntax_uid in accepted:
        return dcmread(io.BytesIO(data))
    targets = [ts for ts in _UNCOMPRESSED if ts in accepted]
    if not targets:
        raise NotAcceptable(
            f"the peer accepted {record.sop_class_uid} only in "
            f"{', '.join(sorted(accepted)) or 'no transfer syntax'}; instance is stored in "
            f"{record.transfer_syntax_uid} and can only be converted to Explicit/Implicit "
            "VR Little Endian"
        )
    return dcmread(io.BytesIO(transcode(data, targets[0])))


def unsendable(record: InstanceRecord) -> Dataset:
    """A dataset pynetdicom cannot send (no file meta, hence no transfer syntax).

    Yielding it makes pynetdicom count a failed sub-operation and list the SOP Instance
    UID in FailedSOPInstanceUIDList (PS3.4 C.4.2.1.6), without touching the peer.
    """
    ds = Dataset()
    ds.SOPClassUID = record.sop_class_uid
    ds.SOPInstanceUID = record.sop_instance_uid
    return ds


class StoredFile(Dataset):  # type: ignore[misc]
    """A sub-operation to send from a file as it is, never loaded into memory.

    pynetdicom's C-GET/C-MOVE service classes take only datasets from the handler, and
    send a dataset by encoding it whole; its `send_c_store` can also stream a Part-10
    file in PDU-sized pieces. `send_files_as_they_are` makes an association's
    `send_c_store` do that for a `StoredFile`, which carries just the SOP UIDs that
    pynetdicom reports on (FailedSOPInstanceUIDList, PS3.4 C.4.2.1.6)."""

    def __init__(self, record: InstanceRecord, path: Path) -> None:
        super().__init__()
        self.SOPClassUID = record.sop_class_uid
        self.SOPInstanceUID = record.sop_instance_uid
        self.source_path = path


_QUEUED_BYTES = 4 * 1024 * 1024  # P-DATA an association may have waiting to be sent
_QUEUED_PDUS_MIN = 8


def queued_pdu_limit(max_pdu_size: int | None) -> int:
    """How many P-DATA PDUs may wait to be sent: about `_QUEUED_BYTES` of them.

    A count alone does not bound the bytes (peers accept PDUs from 4 KiB to unlimited,
    PS3.8 §D.1), and a small count starves the DUL thread when the peer's PDUs are small
    (dcmtk's default is 16 KiB: a 512x512 CT slice is 32 PDUs, and the sender polls)."""
    if not max_pdu_size:  # 0: the peer set no limit, so PDUs may be as large as a message
        return _QUEUED_PDUS_MIN
    return max(_QUEUED_PDUS_MIN, _QUEUED_BYTES // max_pdu_size)


def _ends_data_set(primitive: P_DATA) -> bool:
    """Does this P-DATA carry the last fragment of a data set? (PS3.8 §E.2: the message
    control header's bit 0 is 0 for a data set fragment, bit 1 is 1 for the last one.)"""
    return any(pdv[1][:1] and pdv[1][0] & 0x03 == 0x02
               for pdv in primitive.presentation_data_value_list)


def _pdu_bytes(primitive: P_DATA) -> int:
    return sum(len(pdv[1]) for pdv in primitive.presentation_data_value_list)


class HeldCheckpoint(ReactorCheckpoint):
    """The reactor checkpoint of a C-MOVE's store association, kept closed between
    sub-operations.

    pynetdicom's `send_c_store` pauses the association's own reactor thread (clears its
    checkpoint and waits until the thread, which sleeps 1 ms per turn, is parked there)
    and lets it run again afterwards. Back to back, each sub-operation waited up to a
    millisecond for that pause. While `held`, the reopening at the end of a
    sub-operation is skipped, so the reactor stays paused for the whole retrieve (it
    would only look for requests from the destination, which sends none, and for a
    release it asks for; aborts reach `send_c_store` through the DUL). `release`
    reopens it. A reactor parked here still looks at its association's kill flag
    (pynetdicom kills by opening the checkpoint, which a hold would skip)."""

    def __init__(self, assoc: Any) -> None:
        super().__init__(assoc)
        self.held = False
        self.ended = False  # a sub-operation got no response: the association is gone

    def set(self) -> None:
        if not self.held:
            super().set()

    def release(self) -> None:
        self.held = False
        super().set()


def hold_reactor(assoc: Any) -> HeldCheckpoint | None:
    """Give a store association we opened (requestor; its reactor not yet started) a
    `HeldCheckpoint`. On an acceptor's association (C-GET) the handler already runs in
    the reactor thread, which does not need pausing."""
    if not assoc.is_requestor:
        return None
    checkpoint = HeldCheckpoint(assoc)
    install(assoc, checkpoint)
    return checkpoint


def send_files_as_they_are(assoc: Any) -> None:
    """Let `assoc.send_c_store` stream a `StoredFile` from its file (per association).

    pynetdicom queues every P-DATA PDU of a message before its DUL thread sends the
    first: a file read in pieces would still end up whole in the queue. So the queue is
    bounded here: the sender waits while `queued_pdu_limit` PDUs are already waiting.

    A C-STORE-RQ's PDUs are handed to the DUL together (up to half the byte budget at a
    time), not one by one as they are encoded: pynetdicom's DUL thread sleeps a
    millisecond whenever it finds its queue empty, and with the encoder and the DUL
    taking turns on the GIL it found it empty before nearly every PDU (32 sleeps for a
    512x512 CT slice in dcmtk's 16 KiB PDUs)."""
    send = assoc.send_c_store
    dul = assoc.dul
    queue_pdu = dul.send_pdu
    batch: list[P_DATA] = []
    batched = 0
    storing = False

    def hand_over(primitives: list[P_DATA]) -> None:
        limit = queued_pdu_limit(assoc.dimse.maximum_pdu_size)
        while (len(dul.to_provider_queue.queue) >= limit and dul.is_alive()
               and not assoc.is_aborted):
            time.sleep(0.0005)
        for primitive in primitives:
            queue_pdu(primitive)

    def send_pdu(primitive: Any) -> None:
        nonlocal batched
        if not isinstance(primitive, P_DATA):
            queue_pdu(primitive)
            return
        if not storing:
            hand_over([primitive])
            return
        batch.append(primitive)
        batched += _pdu_bytes(primitive)
        if _ends_data_set(primitive) or batched >= _QUEUED_BYTES // 2:
            pending = batch[:]
            batch.clear()
            batched = 0
            hand_over(pending)

    dul.send_pdu = send_pdu

    held = hold_reactor(assoc)

    def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal storing, batched
        storing = True
        if held is not None:
            if held.ended:
                # The paused reactor has not marked the association ended yet; pynetdicom
                # would send into it and wait out its DIMSE timeout. Fails this one.
                raise RuntimeError("the store association has ended (aborted or timed out)")
            held.held = True
        try:
            status = send(dataset.source_path if isinstance(dataset, StoredFile) else dataset,
                          *args, **kwargs)
            if held is not None and "Status" not in status:
                # No C-STORE-RSP: aborted by the peer, connection lost, or DIMSE timeout
                # (pynetdicom then aborts). The reactor runs again to clean up.
                held.ended = True
                held.release()
            return status
        except BaseException:
            if held is not None:
                held.ended = True
                held.release()
            raise
        finally:
            storing = False
            if batch:  # the message ended without a data set fragment: send what is held
                pending = batch[:]
                batch.clear()
                batched = 0
                hand_over(pending)

    assoc.send_c_store = send_c_store


def _spooled_copy(archive: Archive, record: InstanceRecord) -> Path:
    """The stored file copied in 1 MiB pieces to a temporary file (the blob store may
    be S3, and the door does not reach into it)."""
    with archive.open_instance(record) as source, tempfile.NamedTemporaryFile(
        "wb", suffix=".dcm", delete=False
    ) as copy:
        shutil.copyfileobj(source, copy, 1024 * 1024)
    return Path(copy.name)


def _sub_operations(
    event: Any, archive: Archive, records: list[InstanceRecord],
    accepted: Callable[[], dict[str, set[str]]], service: str,
) -> Iterator[tuple[int, Dataset | None]]:
    peer = peer_of(event)
    sent = failed = 0

    def as_stored(record: InstanceRecord) -> bool:
        return record.transfer_syntax_uid in accepted().get(record.sop_class_uid, set())

    # The next file sent as stored is copied by a reader thread while the current one is
    # on the wire (issue #13: "read the next blob while the current one is on the wire"):
    # at most one copy ahead, so at most two temporary files per retrieve.
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retrieve-read")
    ahead: dict[int, Future[Path]] = {}
    try:
        for index, record in enumerate(records):
            if cancelled(event):
                log.info("%s from %s cancelled after %d of %d instances", service, peer,
                         sent + failed, len(records))
                yield CANCEL, None
                return
            if as_stored(record):
                # As stored: streamed from a file, so memory does not grow with its size.
                copy = ahead.pop(index, None) or reader.submit(_spooled_copy, archive, record)
                following = index + 1
                if following < len(records) and as_stored(records[following]):
                    ahead[following] = reader.submit(_spooled_copy, archive,
                                                     records[following])
                try:
                    path = copy.result()
                except (MinipacsError, OSError) as exc:
                    failed += 1
                    log.warning("%s from %s: not sending %s: %s", service, peer,
                                record.sop_instance_uid, exc)
                    yield PENDING, unsendable(record)
                    continue
                try:
                    sent += 1
                    yield PENDING, StoredFile(record, path)
                finally:
                    path.unlink(missing_ok=True)
                continue
            try:
                data = archive.read_instance(record)
                dataset = outgoing_dataset(record, data, accepted().get(record.sop_class_uid,
                                                                        set()))
            except MinipacsError as exc:
                failed += 1
                log.warning("%s from %s: not sending %s: %s", service, peer,
                            record.sop_instance_uid, exc)
                yield PENDING, unsendable(record)
                continue
            sent += 1
            yield PENDING, dataset
    finally:
        # Cancelled, aborted or failed: the copy made ahead is not sent; remove it.
        for pending in ahead.values():
            pending.cancel()
        reader.shutdown(wait=True)
        for pending in ahead.values():
            if not pending.cancelled() and pending.exception() is None:
                pending.result().unlink(missing_ok=True)
    log.info("%s from %s: %d instances offered, %d could not be sent", service, peer, sent,
             failed)


def destination_contexts(records: list[InstanceRecord]) -> list[PresentationContext]:
    """Contexts to propose to a move destination: each stored (SOP class, transfer syntax)
    as is, plus the SOP class in the uncompressed syntaxes as a fallback."""
    wanted: list[tuple[str, tuple[str, ...]]] = []
    for record in records:
        # One syntax per context for the stored one: acceptors pick by their own
        # preference within a context, and would take Implicit VR LE over what we hold.
        pairs = [(record.sop_class_uid, (record.transfer_syntax_uid,)),
                 (record.sop_class_uid, _UNCOMPRESSED)]
        for pair in pairs:
            if pair not in wanted:
                wanted.append(pair)
    if len(wanted) > _MAX_CONTEXTS:
        log.warning("C-MOVE needs %d presentation contexts, more than the %d allowed; "
                    "instances of the rest will fail", len(wanted), _MAX_CONTEXTS)
    return [build_context(sop, list(syntaxes)) for sop, syntaxes in wanted[:_MAX_CONTEXTS]]


def handle_move(
    event: Any, archive: Archive, registry: AERegistry, access: AccessPolicy | None = None,
    outgoing: OutgoingTransport | None = None,
) -> Iterator[Any]:
    """EVT_C_MOVE: destination from the AE registry, then one C-STORE per instance."""
    peer = peer_of(event)
    refused = access.refusal(event, "retrieve") if access is not None else None
    destination_title = event.move_destination
    if isinstance(destination_title, bytes):
        destination_title = destination_title.decode("ascii", "replace")
    destination = registry.get(str(destination_title).strip())
    if destination is None:
        log.warning("C-MOVE from %s: destination %r is not a registered AE "
                    "(minipacs ae add ...)", peer, destination_title)
        yield None, None  # pynetdicom answers 0xA801, move destination unknown
        return
    records: list[InstanceRecord] = []
    error: Dataset | None = refused
    try:
        if refused is None:
            records = select_instances(event.identifier, archive)
    except QueryError as exc:
        error = status_dataset(RETRIEVE_IDENTIFIER_MISMATCH, str(exc))
    except MinipacsError as exc:
        error = status_dataset(RETRIEVE_UNABLE_TO_PROCESS, str(exc))
    store_assoc: dict[str, Any] = {}

    def remember(ev: Any) -> None:
        store_assoc["assoc"] = ev.assoc
        send_files_as_they_are(ev.assoc)

    yield destination.host, destination.port, {
        "contexts": destination_contexts(records) or [build_context("1.2.840.10008.1.1")],
        "evt_handlers": [(evt.EVT_CONN_OPEN, send_without_delay),
                         (evt.EVT_ACCEPTED, remember)],
        **(outgoing or OutgoingTransport()).associate_options(destination),
    }
    if error is not None:
        # pynetdicom needs a count before a status; it associates with the destination
        # first (with Verification only, so nothing is sent).
        log.warning("C-MOVE from %s refused: %s", peer, error.get("ErrorComment", ""))
        yield 1
        yield error, None
        return
    log.info("C-MOVE from %s: %d instances to %s (%s:%d%s)", peer, len(records),
             destination.ae_title, destination.host, destination.port,
             ", TLS" if destination.tls else "")
    yield len(records)
    try:
        yield from _sub_operations(
            event, archive, records,
            lambda: accepted_syntaxes(store_assoc["assoc"]) if "assoc" in store_assoc else {},
            "C-MOVE",
        )
    finally:
        # Sub-operations done (or abandoned): the store association's reactor runs again
        # before pynetdicom releases it.
        checkpoint = getattr(store_assoc.get("assoc"), "_reactor_checkpoint", None)
        if isinstance(checkpoint, HeldCheckpoint):
            checkpoint.release()


def handle_get(event: Any, archive: Archive) -> Iterator[Any]:
    """EVT_C_GET: C-STORE sub-operations on the requester's own association."""
    peer = peer_of(event)
    try:
        records = select_instances(event.identifier, archive)
    except MinipacsError as exc:
        log.warning("C-GET from %s refused: %s", peer, exc)
        yield 1
        code = (RETRIEVE_IDENTIFIER_MISMATCH if isinstance(exc, QueryError)
                else RETRIEVE_UNABLE_TO_PROCESS)
        yield status_dataset(code, str(exc)), None
        return
    log.info("C-GET from %s: %d instances", peer, len(records))
    send_files_as_they_are(event.assoc)
    yield len(records)
    accepted = accepted_syntaxes(event.assoc)
    yield from _sub_operations(event, archive, records, lambda: accepted, "C-GET")
