"""A race-free pause for a pynetdicom association's reactor thread.

Each pynetdicom `Association` runs a reactor thread that takes incoming DIMSE messages
off the queue and serves them. A thread that sends a request on that association
(`send_c_store`, `send_c_echo`, `send_n_event_report`, `release`...) must first stop the
reactor, or the reactor takes the response. pynetdicom 3.0.4 does it with an Event
(`_reactor_checkpoint`) and a flag (`_is_paused`):

    reactor, every turn:                     sender:
        _is_paused = True                        checkpoint.clear()
        checkpoint.wait()                        while not _is_paused: sleep(0.1 ms)
        _is_paused = False                       send the request, wait for the response
        take a message off the queue, serve it   checkpoint.set()

A reactor that is between `wait()` (which the open checkpoint let it through) and
`_is_paused = False` when the sender clears the checkpoint is not paused, yet the
sender reads `_is_paused` True and goes on. The reactor then takes the response, logs
"Received unexpected C-STORE service message" and drops it, and the sender waits out
its DIMSE timeout. The window is a few bytecodes wide; under load it was hit about
once per 10,000 requests (8 C-ECHOs lost in 60 s of back-to-back echoes against our
server with two busy threads in the sender; 0 with this class).

`ReactorCheckpoint` closes it from the checkpoint's side, without changing pynetdicom:
`clear()` called from any thread but the reactor's returns only once the reactor is
actually parked in `wait()`, or serving a request on its own thread (pynetdicom marks
itself paused while a handler runs, so that a handler may send on its own association,
and a thread the handler waits for may do the same), or gone. `install` puts one on an
association.
"""

from __future__ import annotations

import threading
import time
from typing import Any

_LOOK = 0.05  # seconds between looks at the association's kill flag while waiting


class ReactorCheckpoint:
    """`Association._reactor_checkpoint`, with `threading.Event`'s four methods."""

    def __init__(self, assoc: Any, is_open: bool = True) -> None:
        self._assoc = assoc
        self._cond = threading.Condition(threading.Lock())
        self._open = is_open
        self._parked = False  # the reactor is blocked in wait()
        self._serving = 0  # the association is inside _serve_request

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._open = False
            if threading.current_thread() is self._assoc:
                return  # the reactor pausing itself (pynetdicom's timeout release)
            self.nudge()
            while not (self._parked or self._serving or self._reactor_gone()):
                self._cond.wait(_LOOK)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._open:
                return True
            self._parked = True
            self._cond.notify_all()
            try:
                while not self._open:
                    if self._assoc._kill:  # killed while paused: let it see the flag
                        return True
                    left = _LOOK if deadline is None else min(_LOOK,
                                                               deadline - time.monotonic())
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._parked = False

    def nudge(self) -> None:
        """Make a reactor that waits elsewhere between turns come to the checkpoint
        (the event-driven reactor waits for activity; pynetdicom's sleeps 1 ms)."""

    def _reactor_gone(self) -> bool:
        return bool(self._assoc._kill) or not self._assoc.is_alive()

    def serve(self, serve_request: Any, *args: Any) -> None:
        """Run pynetdicom's `_serve_request(*args)`.

        On the reactor's thread it counts as serving (the reactor takes no message until
        it returns). pynetdicom also serves N-EVENT-REPORT requests on a thread of their
        own (dimse.py), whose `_serve_request` sets `_is_paused` True, then False, under
        a reactor that may be parked: that thread does not count, and if the reactor is
        parked when it ends, `_is_paused` is made True again (else a sender that
        polls it would wait for ever)."""
        on_reactor = threading.current_thread() is self._assoc
        if on_reactor:
            with self._cond:
                self._serving += 1
                self._cond.notify_all()
        try:
            serve_request(*args)
        finally:
            with self._cond:
                if on_reactor:
                    self._serving -= 1
                elif self._parked:
                    self._assoc._is_paused = True


def install(assoc: Any, checkpoint: ReactorCheckpoint | None = None) -> ReactorCheckpoint:
    """Give `assoc` a `ReactorCheckpoint` (new, or `checkpoint`), open if its current
    checkpoint is open, and count its `_serve_request` calls. Safe on a running
    association whose checkpoint nobody has cleared (the reactor then passes either)."""
    if checkpoint is None:
        checkpoint = ReactorCheckpoint(assoc)
    if assoc._reactor_checkpoint.is_set():
        checkpoint.set()
    else:
        with checkpoint._cond:
            checkpoint._open = False
    if not isinstance(assoc._reactor_checkpoint, ReactorCheckpoint):
        serve_request = assoc._serve_request

        def counted(*args: Any) -> None:  # by whichever checkpoint is current
            current = assoc._reactor_checkpoint
            if isinstance(current, ReactorCheckpoint):
                current.serve(serve_request, *args)
            else:
                serve_request(*args)

        assoc._serve_request = counted
    assoc._reactor_checkpoint = checkpoint
    return checkpoint
