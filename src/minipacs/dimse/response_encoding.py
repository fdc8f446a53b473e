"""DIMSE responses encoded here, as pynetdicom would encode them, for the hot paths.

pynetdicom turns every response primitive into a message object, builds its command set
with pydicom `setattr`s, encodes it (twice, for the group length), and queues one P-DATA
primitive per fragment for its DUL thread. For the answers sent most (C-FIND's, see
`find_responses`; C-STORE-RSP, one per stored instance; C-ECHO-RSP) that was a sizeable
share of the server's time, and the hand-over to the DUL thread a thread wake-up each.

Here: the command set of a response with just its fixed elements (PS3.7 §9.3, implicit
VR little endian, §6.3.1), in pynetdicom's elements and order; P-DATA-TF PDUs of one PDV
each, fragments within the peer's maximum PDU length (PS3.8 §9.3.5); and
`plain_responses`, which makes an acceptor association send C-STORE-RSP and C-ECHO-RSP
that way (`EventDrivenDUL.send_encoded`). A response with anything more (an error
comment, an offending element: failures) still goes through pynetdicom.
tests/test_find_responses.py compares the bytes with pynetdicom's.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from pynetdicom.dimse_primitives import C_ECHO, C_STORE

UID_PATTERN = re.compile(r"[0-9.]{1,64}")  # PS3.5 §9.1
_DATA_SET_PRESENT = 0x0001  # pynetdicom's value; any but 0x0101 means present (PS3.7 E.1)
_NO_DATA_SET = 0x0101
_C_STORE_RSP = 0x8001
_C_ECHO_RSP = 0x8030

_US = struct.Struct("<HHIH")  # implicit VR little endian element with a 2-byte value
_UI_HEADER = struct.Struct("<HHI")
_PDU_HEADER = struct.Struct(">BBI")
_PDV_HEADER = struct.Struct(">IBB")


def _ui(element: int, uid: str) -> bytes:
    value = uid.encode("ascii")
    if len(value) % 2:
        value += b"\0"
    return _UI_HEADER.pack(0x0000, element, len(value)) + value


def response_command_set(command_field: int, sop_class_uid: str, message_id: int,
                         status: int, has_data_set: bool,
                         sop_instance_uid: str | None = None) -> bytes:
    """A response's command set: group length, Affected SOP Class UID, Command Field,
    Message ID Being Responded To, Command Data Set Type, Status and, when given,
    Affected SOP Instance UID (PS3.7 §9.3), in tag order."""
    body = b"".join((
        _ui(0x0002, sop_class_uid),
        _US.pack(0x0000, 0x0100, 2, command_field),
        _US.pack(0x0000, 0x0120, 2, message_id),
        _US.pack(0x0000, 0x0800, 2, _DATA_SET_PRESENT if has_data_set else _NO_DATA_SET),
        _US.pack(0x0000, 0x0900, 2, status),
        _ui(0x1000, sop_instance_uid) if sop_instance_uid is not None else b"",
    ))
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def p_data_pdus(context_id: int, data: bytes, is_command: bool, max_pdu_length: int
                ) -> list[bytes]:
    """`data` as P-DATA-TF PDUs of one PDV each, fragments cut so that no PDU's
    variable field is longer than the peer's `max_pdu_length` (0: no limit)."""
    if not data:
        raise ValueError("a PDV carries at least one byte")
    room = max_pdu_length - 6 if max_pdu_length else len(data)
    if room <= 0:
        raise ValueError(f"maximum PDU length {max_pdu_length} leaves no room for data")
    pdus = []
    start = 0
    while True:
        fragment = data[start:start + room]
        start += room
        last = start >= len(data)
        header = (0x01 if is_command else 0x00) | (0x02 if last else 0x00)
        pdus.append(b"".join((
            _PDU_HEADER.pack(0x04, 0x00, len(fragment) + 6),
            _PDV_HEADER.pack(len(fragment) + 2, context_id, header),
            fragment,
        )))
        if last:
            return pdus


def _plain_uid(value: Any) -> str | None:
    text = str(value) if value is not None else ""
    return text if UID_PATTERN.fullmatch(text) else None


def encoded_response(primitive: Any, context_id: int, max_pdu_length: int) -> bytes | None:
    """A C-STORE-RSP or C-ECHO-RSP primitive as P-DATA-TF PDUs, or None when pynetdicom
    must encode it: another message, a request, a status with an error comment or an
    offending element, UIDs that are not plain UIDs (pynetdicom echoes what the peer
    sent)."""
    if type(primitive) is C_STORE:
        command_field = _C_STORE_RSP
        instance = _plain_uid(primitive.AffectedSOPInstanceUID)
        if instance is None:
            return None
    elif type(primitive) is C_ECHO:
        command_field, instance = _C_ECHO_RSP, None
    else:
        return None
    sop_class = _plain_uid(primitive.AffectedSOPClassUID)
    message_id = primitive.MessageIDBeingRespondedTo
    status = primitive.Status
    if (sop_class is None or message_id is None or not isinstance(status, int)
            or primitive.ErrorComment is not None
            or getattr(primitive, "OffendingElement", None) is not None):
        return None
    command = response_command_set(command_field, sop_class, int(message_id), status,
                                   False, instance)
    return b"".join(p_data_pdus(context_id, command, True, max_pdu_length))


def plain_responses(assoc: Any) -> None:
    """Have `assoc` (an acceptor whose DUL has `send_encoded`) send its C-STORE-RSP and
    C-ECHO-RSP messages encoded here; any other message goes to pynetdicom's `send_msg`.

    pynetdicom fires EVT_DIMSE_SENT for each message it sends; for these two it is not
    fired. Our one handler of it for every association, `restart_idle_timer`, is done
    here instead (the network timeout measures the peer's silence); the other, Storage
    Commitment's, waits for an N-ACTION-RSP, which still goes through pynetdicom."""
    dimse = assoc.dimse
    send = dimse.send_msg

    def send_msg(primitive: Any, context_id: int) -> None:
        encoded = encoded_response(primitive, context_id, int(dimse.maximum_pdu_size or 0))
        if encoded is None:
            send(primitive, context_id)
            return
        assoc.dul._idle_timer.restart()
        assoc.dul.send_encoded(encoded)

    dimse.send_msg = send_msg
