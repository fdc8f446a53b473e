"""C-CANCEL-RQ (PS3.7 §9.1.2.1.3, §9.3.2.3), noticed however early it arrives.

pynetdicom files each C-CANCEL-RQ as it is decoded, but forgets those filed before the
service class starts on the request they cancel: a cancel sent right behind its C-FIND-RQ
(as an SCU that changes its mind at once does) was lost, and every match was sent.
Here each association remembers the Message IDs cancelled since the request with that
Message ID arrived; `cancelled(event)` reads both records.
"""

from __future__ import annotations

import threading
from typing import Any
from weakref import WeakKeyDictionary

_C_CANCEL_RQ = 0x0FFF  # CommandField (0000,0100), PS3.7 Table 9.3-5
# A C-FIND handler looks for a cancel before every this many pending responses (after
# letting what it sent drain: query_scp.let_requests_in); `find_responses` writes its
# batches at the same pace.
CANCEL_CHECK_EVERY = 8

_lock = threading.Lock()
# association -> Message IDs cancelled since their request arrived
_cancelled: WeakKeyDictionary[Any, set[int]] = WeakKeyDictionary()


def record_cancel(event: Any) -> None:
    """EVT_DIMSE_RECV (the DUL thread, in arrival order): remember C-CANCEL-RQs; a new
    request forgets an older cancel for a Message ID now used again."""
    command = event.message.command_set
    with _lock:
        seen = _cancelled.setdefault(event.assoc, set())
        if command.CommandField == _C_CANCEL_RQ:
            seen.add(int(command.MessageIDBeingRespondedTo))
        elif "MessageID" in command:
            seen.discard(int(command.MessageID))


def cancelled(event: Any) -> bool:
    """Has the request of this C-FIND/C-GET/C-MOVE event been cancelled?"""
    if event.is_cancelled:
        return True
    with _lock:
        seen = _cancelled.get(event.assoc)
        return seen is not None and int(event.request.MessageID) in seen
