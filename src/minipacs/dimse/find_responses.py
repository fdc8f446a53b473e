"""C-FIND pending responses, encoded here and written to the peer in batches.

pynetdicom sends every C-FIND-RSP as a DIMSE message of its own: a response primitive,
a command set built and encoded through pydicom, the identifier encoded through pydicom,
one P-DATA primitive per fragment queued to the DUL thread, and each of those sent
through the DUL's state machine with a socket write of its own. With five matches that
was about a third of the server's time for a C-FIND (docs/performance.md, "Seventh
pass").

`serve_find` serves a C-FIND request as pynetdicom's service class does, with one
difference: the pending responses (status 0xFF00 or 0xFF01 with an identifier) and the
final success are encoded here as whole P-DATA-TF PDUs and handed to the DUL a batch at
a time (`EventDrivenDUL.send_encoded`), which writes each batch with one send: a query
with a few matches is answered with one write. Other statuses (cancel, failures,
warnings) go through pynetdicom's encoding, queued behind the batches, so the peer sees
the same messages in the same order. The bytes are those pynetdicom would send
(tests/test_find_responses.py compares them): one PDV per P-DATA-TF PDU, fragments
within the peer's maximum PDU length (PS3.8 §9.3.5), the command set in implicit VR
little endian (PS3.7 §6.3.1) with pynetdicom's elements and order.

A batch is written after every `CANCEL_CHECK_EVERY` pending responses, before the
handler is asked for more: a handler that waits for the outgoing queue to drain before
it looks for a C-CANCEL (`query_scp.let_requests_in`) still waits for what it yielded.
"""

from __future__ import annotations

import logging
from io import BytesIO
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import QueryRetrieveServiceClass
from pynetdicom.status import QR_FIND_SERVICE_CLASS_STATUS, STATUS_PENDING

from minipacs.dicom.plain_encoding import encode_plain
from minipacs.dimse.cancel import CANCEL_CHECK_EVERY
from minipacs.dimse.response_encoding import UID_PATTERN, p_data_pdus, response_command_set

log = logging.getLogger(__name__)

_C_FIND_RSP = 0x8020
# A batch is written once it holds this many bytes, even before CANCEL_CHECK_EVERY
# responses: bounds what waits in memory for the DUL.
_BATCH_BYTES = 1 << 20


def command_set(sop_class_uid: str, message_id: int, status: int, has_identifier: bool
                ) -> bytes:
    """A C-FIND-RSP command set (PS3.7 §9.3.2.2), implicit VR little endian."""
    return response_command_set(_C_FIND_RSP, sop_class_uid, message_id, status,
                                has_identifier)


def identifier_bytes(identifier: Dataset, implicit_vr: bool) -> bytes:
    """The identifier encoded as pydicom would, quickly when it is plain text."""
    encoded = encode_plain(identifier, implicit_vr)
    if encoded is None:
        encoded = encode(identifier, implicit_vr, True, False)
    if not encoded:  # pynetdicom refuses to send an empty identifier too
        raise ValueError("the response identifier is empty or could not be encoded")
    return bytes(encoded)


def pending_response(context_id: int, sop_class_uid: str, message_id: int, status: int,
                     identifier: bytes, max_pdu_length: int) -> bytes:
    """One pending C-FIND-RSP with its identifier, as P-DATA-TF PDUs."""
    command = command_set(sop_class_uid, message_id, status, True)
    return b"".join(p_data_pdus(context_id, command, True, max_pdu_length)
                    + p_data_pdus(context_id, identifier, False, max_pdu_length))


def _final_response(context_id: int, sop_class_uid: str, message_id: int, max_pdu: int
                    ) -> bytes:
    """The C-FIND-RSP that ends a query, Success with no identifier, as P-DATA-TF."""
    return b"".join(p_data_pdus(context_id, command_set(sop_class_uid, message_id, 0x0000,
                                                         False), True, max_pdu))


def serve_find(assoc: Any, request: C_FIND, context: PresentationContext) -> bool:
    """Serve one C-FIND request of a Query/Retrieve or worklist model as pynetdicom's
    `ServiceClass._c_find_scp` does (the same event, the handler's yields checked the
    same way, the same responses), with the pending responses and the final success
    encoded here and written in batches (module docstring). Statuses other than
    pending and success go through pynetdicom's own message encoding and end the query
    (a warning too: it is a final response).

    Returns False, having sent nothing, when pynetdicom must serve the request (a DUL
    that cannot take encoded PDUs, a deflated or big endian transfer syntax)."""
    send_encoded = getattr(assoc.dul, "send_encoded", None)
    syntax = UID(context.transfer_syntax[0])
    if send_encoded is None or syntax.is_deflated or not syntax.is_little_endian:
        return False
    if not UID_PATTERN.fullmatch(str(request.AffectedSOPClassUID)):
        return False  # a malformed request: pynetdicom answers it as it always did
    implicit = syntax.is_implicit_VR
    context_id = cast(int, context.context_id)
    sop_class = str(request.AffectedSOPClassUID)
    message_id = cast(int, request.MessageID)
    max_pdu = int(assoc.dimse.maximum_pdu_size or 0)
    service = QueryRetrieveServiceClass(assoc)  # for its status checks and cancel lookup
    # The statuses pynetdicom's Q/R and worklist service classes check C-FIND's against.
    service.statuses = QR_FIND_SERVICE_CLASS_STATUS
    batch: list[bytes] = []
    size = 0

    def write() -> None:
        nonlocal size
        if batch:
            send_encoded(b"".join(batch))
            # What EVT_DIMSE_SENT did for pynetdicom's messages (transport_limits.
            # restart_idle_timer): the network timeout measures the peer's silence.
            assoc.dul._idle_timer.restart()
            batch.clear()
            size = 0

    def through_pynetdicom(status: Any, identifier: bytes | None = None) -> None:
        write()
        rsp = C_FIND()
        rsp.MessageIDBeingRespondedTo = message_id
        rsp.AffectedSOPClassUID = request.AffectedSOPClassUID
        rsp.Identifier = BytesIO(identifier) if identifier else None
        rsp = service.validate_status(status, rsp)
        assoc.dimse.send_msg(rsp, context_id)

    try:
        results = evt.trigger(assoc, evt.EVT_C_FIND, {
            "request": request, "context": context.as_tuple,
            "_is_cancelled": service.is_cancelled})
    except Exception:
        log.exception("C-FIND handler failed to start")
        through_pynetdicom(0xC311)  # pynetdicom's status for the same failure
        return True
    if not assoc.is_established:
        return True
    answers = iter(results if results is not None else ())
    while True:
        try:
            result = next(answers)
        except StopIteration:
            break
        except Exception:  # as pynetdicom's handler wrapper: a failure, not an abort
            log.exception("C-FIND handler failed")
            through_pynetdicom(0xC311)
            return True
        # As pynetdicom's handler wrapper: an abort or release request ends the query
        # (what was answered so far still goes out, as pynetdicom had sent it).
        if assoc.acse.is_aborted() or assoc.acse.is_release_requested():
            write()
            return True
        try:
            status, identifier = result
        except (TypeError, ValueError):
            log.error("C-FIND handler yielded %r, not (status, identifier)", result)
            through_pynetdicom(0xC311)
            return True
        if not assoc.is_established:
            return True
        rsp = service.validate_status(status, C_FIND())
        category = service.statuses.get(cast(int, rsp.Status), ("", ""))[0]
        if category == STATUS_PENDING:
            try:
                if not isinstance(identifier, Dataset):
                    raise ValueError(f"a pending response needs an identifier, not {identifier!r}")
                encoded = identifier_bytes(identifier, implicit)
            except Exception as exc:
                log.error("C-FIND response identifier not encodable: %s", exc)
                through_pynetdicom(0xC312)  # pynetdicom's status for the same failure
                return True
            if not isinstance(status, int):  # a status data set: pynetdicom's encoding
                through_pynetdicom(status, encoded)
                continue
            pdus = pending_response(context_id, sop_class, message_id, status, encoded,
                                    max_pdu)
            batch.append(pdus)
            size += len(pdus)
            if len(batch) >= CANCEL_CHECK_EVERY or size >= _BATCH_BYTES:
                write()
            continue
        # Cancel, failure, warning, success or an unknown status: pynetdicom's encoding,
        # and the end of the query. (pynetdicom's SCP goes on after a warning and ends
        # with a success: two final responses, where every SCU, pynetdicom's and dcmtk's,
        # takes the warning as the last.)
        through_pynetdicom(status)
        return True
    if assoc.is_established:
        batch.append(_final_response(context_id, sop_class, message_id, max_pdu))
        write()
    return True
