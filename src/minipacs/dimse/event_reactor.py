"""Event-driven reactors for the associations our DICOM server accepts.

pynetdicom runs two polling loops per association: the DUL thread sleeps 1 ms whenever
it finds nothing on the socket nor in its queue of primitives to send
(`DULServiceProvider.run_reactor`), and the association thread sleeps 1 ms on every turn
before looking for a decoded DIMSE message (`Association._run_reactor`). Each hop between
the two threads so waits up to 1 ms, and the polling itself was about a third of the
server's CPU samples while ingesting (docs/performance.md, "Event-driven associations").

Here both threads block until something happens instead:

* the DUL waits in `poll` on the peer's socket and on a wake-up eventfd, written to
  when another thread queues a primitive to send or an event, or stops the reactor;
  the wait is bounded by the ARTIM timer (PS3.8 §9.1.5) when it runs;
* the association waits on a `threading.Event` set whenever the DUL hands it something
  (a DIMSE message, an A-RELEASE or A-ABORT primitive) or stops, and when another thread
  asks it to pause (to send on the association itself); the wait is bounded by the
  network (idle) timer, so a silent peer is still aborted on time.

Every check of the two loops is pynetdicom's own, in pynetdicom's order; only the sleeps
are replaced. Nothing is patched globally: `make_event_driven` narrows the class of one
acceptor `Association` and its DUL (as `transport_limits` does for its socket), before
their threads start.

pynetdicom internals relied on (`require_supported_pynetdicom` checks them at start-up
and refuses to run on a pynetdicom whose internals differ):

* `DULServiceProvider`: `to_provider_queue`, `event_queue`, `to_user_queue`,
  `_kill_thread`, `_idle_timer`, `artim_timer`, `state_machine`, `socket`,
  `_process_recv_primitive`, `_is_transport_event`; fsm actions take primitives off
  `to_provider_queue` with `get(False)` and put onto `to_user_queue` with `put`.
* `Association`: `_run_reactor` (called by `run_reactor` once established), `_kill`,
  `_reactor_checkpoint` (a `threading.Event` others clear, then poll `_is_paused`;
  replaced by a `reactor_pause.ReactorCheckpoint`),
  `_serve_request`, `kill`; the DIMSE provider's `msg_queue`, which the DUL thread
  fills with decoded messages and, on abort, with `(None, None)`.
* For the C-STORE datasets spooled to files (`STORE_RECV_CHUNKED_DATASET`): the DIMSE
  provider's `message` (the one being decoded, None between messages), its
  `_data_set_file` and a decoded primitive's `_dataset_file` (the open spool file).
* For C-FIND, served by `find_responses.serve_find` instead of pynetdicom's service
  class: `Association._accepted_cx`, `_sent_release`, the DIMSE provider's
  `cancel_req`, and `QueryRetrieveServiceClass.validate_status` and `is_cancelled`.
* `queue.Queue.put` is how every item enters those queues (`put_nowait` calls it).
"""

from __future__ import annotations

import logging
import os
import queue
import select
import ssl
import threading
from collections.abc import Callable
from typing import Any

import pynetdicom
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.service_class import QueryRetrieveServiceClass
from pynetdicom.utils import make_target

from minipacs.dimse.find_responses import serve_find
from minipacs.dimse.reactor_pause import ReactorCheckpoint, install
from minipacs.dimse.response_encoding import plain_responses

log = logging.getLogger(__name__)

# C-FIND models served by `find_responses.serve_find` (pynetdicom's generic C-FIND
# service: Query/Retrieve and Modality Worklist).
_FIND_MODELS = {
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Query/Retrieve - FIND
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Query/Retrieve - FIND
    "1.2.840.10008.5.1.4.31",  # Modality Worklist - FIND
}

# States in which a P-DATA request is sent as it is (PS3.8 Table 9-10: DT-1, AR-7).
_SENDS_P_DATA = ("Sta6", "Sta8")

# The pynetdicom releases whose internals (listed in the module docstring) were read.
SUPPORTED_PYNETDICOM = ("3.0.4",)
# Longest wait with no timer running: a safety net only, every state change wakes the
# waiter itself (tests check that answers come at once, not after this).
_MAX_WAIT = 1.0


class _WakingQueue(queue.Queue[Any]):
    """A queue that calls `wake` after every put from a thread other than `owner`'s.

    After the put, not inside it: `wake` is a system call (eventfd) or an Event's lock,
    and made while holding the queue's mutex it let the woken reactor block on that
    mutex at once, a thread hand-off per PDU (~15 % of a C-FIND's time in the sender's
    `Queue.put`). A reactor that reads its queues between the put and the wake-up
    finds the item, then wakes once for nothing."""

    wake: Callable[[], None]
    owner: int | None

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        if threading.get_ident() != self.owner:
            self.wake()


def _waking_copy(original: queue.Queue[Any], wake: Callable[[], None]) -> _WakingQueue:
    """A `_WakingQueue` holding what `original` holds (nothing, before threads start)."""
    waking = _WakingQueue()
    waking.wake = wake
    waking.owner = None  # every put wakes until the owning thread says who it is
    for item in list(original.queue):
        waking.put(item)
    return waking


class _PauseWakingCheckpoint(ReactorCheckpoint):
    """`Association._reactor_checkpoint`: a thread that pauses the reactor (pynetdicom's
    send_* methods, `release`, our storage commitment report) clears it and waits until
    the reactor is parked there (`ReactorCheckpoint`); clearing it also wakes the
    reactor so that it gets there at once rather than at its next timeout."""

    wake: Callable[[], None]

    def nudge(self) -> None:
        self.wake()


class EncodedPData:
    """P-DATA-TF PDUs already encoded (`find_responses`), queued among the primitives
    for the DUL thread to write as they are, in their turn."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class EventDrivenDUL(DULServiceProvider):
    """pynetdicom's DUL reactor, waiting in `poll` where it slept 1 ms; it also writes
    `EncodedPData` handed to it with `send_encoded`."""

    _wake_fd: int
    reactor_done: bool
    _wake_lock: threading.Lock
    _may_wait: bool
    _event_target: Callable[[], None]
    _on_stop: Callable[[], None]

    def _prepare(self, on_stop: Callable[[], None]) -> None:
        # The eventfd exists only while the reactor runs (made and closed by its thread):
        # a connection whose DUL never starts holds no extra descriptor.
        self._wake_fd = -1
        self._wake_lock = threading.Lock()
        # Held while the state machine acts (every PDU the DUL thread sends is sent in
        # an action) and while the reactor sends its own A-ABORT: `send_encoded` writes
        # only between them.
        self._action_lock = threading.Lock()
        self._may_wait = False
        self.reactor_done = False
        self._on_stop = on_stop
        self.to_provider_queue = _waking_copy(self.to_provider_queue, self.wake)
        self.event_queue = _waking_copy(self.event_queue, self.wake)
        # Thread.__init__ bound pynetdicom's run_reactor as the target; run() below
        # calls ours instead, through the same contextvars wrapper.
        self._event_target = make_target(self.run_reactor)

    def run(self) -> None:
        self._event_target()

    def wake(self) -> None:
        """Make the reactor's wait return (from any thread). Before the reactor runs
        there is nothing to wake: it looks at its queues before it first waits. Nor
        while it is busy: it sets `_may_wait` before its last look at its queues and
        kill flag, so a put or kill before that look is seen by it, and one after it
        finds the flag set and writes. (An eventfd write per PDU handed over was ~8 %
        of a C-FIND's time.)"""
        if not self._may_wait:
            return
        # Under the lock: a descriptor number closed by the reactor may be reused at
        # once by another connection, which must never receive our 8 bytes.
        with self._wake_lock:
            if self._wake_fd >= 0:
                os.eventfd_write(self._wake_fd, 1)

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()

    def send_encoded(self, data: bytes) -> None:
        """Send P-DATA-TF PDUs, encoded, in order with the primitives queued before them
        (from the association's thread, as `send_pdu`).

        Written at once from the calling thread when nothing waits to go before them:
        no primitive queued, no event pending, no state machine action running (the
        lock), the association established (`_SENDS_P_DATA`), and a plain TCP socket (an
        `SSLSocket` is not safe to write while the DUL thread reads it). A hand-over
        to the DUL thread was a thread wake-up and a GIL hand-off per answer, ~12 % of
        a C-FIND's server time. Otherwise queued, for the DUL thread to write in turn."""
        sock = self.socket
        if sock is not None and not isinstance(sock.socket, ssl.SSLSocket):
            with self._action_lock:
                if (self.to_provider_queue.empty() and self.event_queue.empty()
                        and self.state_machine.current_state in _SENDS_P_DATA):
                    sock.send(data)
                    return
        self.to_provider_queue.put(EncodedPData(data))  # type: ignore[arg-type]

    def _process_recv_primitive(self) -> bool:
        """pynetdicom's, plus: `EncodedPData` at the head of the queue is written with
        one send. A P-DATA request moves the state machine nowhere (DT-1: Sta6 to Sta6;
        AR-7: Sta8 to Sta8, a release requested by the peer), so the bytes go out in
        those states, as those actions send them, and are dropped in any other (an
        association aborted meanwhile: the peer awaits nothing).
        An event already queued is handled first, as it would be before a primitive
        queued behind it reached the state machine."""
        queued = self.to_provider_queue.queue
        if not queued or not isinstance(queued[0], EncodedPData):
            return bool(super()._process_recv_primitive())
        if not self.event_queue.empty():
            return True
        encoded: Any = self.to_provider_queue.get(False)
        if self.state_machine.current_state in _SENDS_P_DATA and self.socket is not None:
            self.socket.send(encoded.data)
        return True

    def stop_dul(self) -> bool:
        # pynetdicom's sets `_kill_thread` then polls is_alive every 1 ms.
        if self.state_machine.current_state == "Sta1":
            self.kill_dul()
            if threading.current_thread() is not self:
                self.join()
            return True
        return False

    def _wait(self) -> None:
        """Until the peer's socket is readable, another thread wakes us, or the ARTIM
        timer runs out. Returns at once if a TLS record is already decrypted and
        buffered (`poll` does not see those bytes). `poll`, not `select`: descriptors
        above 1024 are fine."""
        sock = self.socket.socket if self.socket is not None else None
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return
        timeout = _MAX_WAIT
        if self.artim_timer._start_time is not None and self.artim_timer._end_time is None:
            timeout = max(0.0, min(timeout, self.artim_timer.remaining))
        poller = select.poll()
        poller.register(self._wake_fd, select.POLLIN)
        if sock is not None and sock.fileno() >= 0:
            poller.register(sock.fileno(), select.POLLIN)
        try:
            poller.poll(timeout * 1000)
        except OSError:
            return  # the checks below report a broken socket (Evt17)
        try:
            os.eventfd_read(self._wake_fd)  # resets the counter
        except BlockingIOError:
            pass  # woken by the socket or the timer, not by a thread

    def run_reactor(self) -> None:
        # pynetdicom 3.0.4's DULServiceProvider.run_reactor, with time.sleep replaced by
        # `_wait` and the queues' owner recorded so this thread's own puts do not wake it.
        assert isinstance(self.to_provider_queue, _WakingQueue)
        assert isinstance(self.event_queue, _WakingQueue)
        self.event_queue.owner = self.to_provider_queue.owner = threading.get_ident()
        with self._wake_lock:
            self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            self._react()
        finally:
            with self._wake_lock:
                os.close(self._wake_fd)
                self._wake_fd = -1
            self.reactor_done = True  # the thread ends next: is_alive() lags behind
            self._on_stop()

    def _react(self) -> None:
        self._idle_timer.start()
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if idle:
                self._may_wait = True
                if (self.event_queue.empty() and self.to_provider_queue.empty()
                        and not self._kill_thread):
                    self._wait()
                self._may_wait = False
            if self._kill_thread:
                break
            # ARTIM first, so that its event is queued ahead of any other this turn.
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                # One primitive encoded and sent, or one PDU received, per turn.
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:
                # A peer's bytes can get here (pynetdicom logs what it cannot decode).
                log.warning("DUL reactor failed; aborting the association", exc_info=True)
                # As pynetdicom does: bypass the state machine, A-ABORT (source: service
                # provider, PS3.8 §9.3.8) and stop both reactors.
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                if self.socket is not None:
                    with self._action_lock:
                        self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            try:
                with self._action_lock:
                    self.state_machine.do_action(event)
            except Exception:
                # pynetdicom's state machine has logged the error and stopped this
                # reactor (kill_dul) before re-raising, which ended its DUL thread with
                # an uncaught exception; here the thread ends quietly instead, and the
                # association thread, seeing the DUL gone, closes the connection as
                # it did then. A malformed DIMSE message inside a valid P-DATA-TF
                # (a fuzzing peer's) gets here.
                return
            idle = False


class EventDrivenAssociation(Association):
    """pynetdicom's acceptor reactor, waiting on `_activity` where it slept 1 ms."""

    _activity: threading.Event

    def kill(self) -> None:
        self._activity.set()
        super().kill()

    def _run_reactor(self) -> None:
        # pynetdicom 3.0.4's Association._run_reactor with `time.sleep(0.001)` replaced
        # by a wait on `_activity`, set by every put on the queues this loop reads (the
        # DIMSE messages, the DUL's primitives for us) and when the DUL stops. The event
        # is cleared before the checks, so a put during them makes the next wait return.
        try:
            self._react_until_done()
        finally:
            self._discard_unserved_datasets()

    def _react_until_done(self) -> None:
        self._is_paused = False
        served = True
        while not self._kill:
            if not served:
                self._activity.wait(self._wait_bound())
            self._activity.clear()
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            context_id, msg = self.dimse.get_msg(block=False)
            served = msg is not None
            if msg:
                self._serve_request(msg, int(context_id))  # type: ignore[arg-type]
            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                log.info("Association released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return
            if self.acse.is_aborted():
                log.info("Association aborted%s",
                         " (A-P-ABORT)" if self.acse.is_aborted("a-p-abort") else "")
                self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive() or getattr(self.dul, "reactor_done", False):
                self.kill()
                return
            if self.dul.idle_timer_expired():
                log.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return

    def _discard_unserved_datasets(self) -> None:
        """Remove the spool files of the C-STORE datasets this association ends
        without serving: one cut off mid-transfer (an abort, a dropped connection, a
        network timeout) and any received but still queued. pynetdicom removes a spool
        file only after the C-STORE handler ran, so these stayed in `DATA_DIR/incoming`
        for good, patient data included."""
        partial: Any = getattr(self.dimse.message, "_data_set_file", None)
        spooled: list[Any] = [partial] if partial is not None else []
        while True:
            try:
                _, queued = self.dimse.msg_queue.get_nowait()
            except queue.Empty:
                break
            queued_file = getattr(queued, "_dataset_file", None)
            if queued_file is not None:
                spooled.append(queued_file)
        writer_gone = not self.dul.is_alive()  # else the DUL may still write the partial
        for file in spooled:
            try:
                os.unlink(file.name)
            except FileNotFoundError:
                pass
            if writer_gone or file is not partial:
                file.close()
        if spooled:
            log.info("Removed %d C-STORE dataset(s) the association ended before "
                     "serving", len(spooled))

    def _serve_request(self, msg: Any, context_id: int) -> None:
        """pynetdicom's, except that a C-FIND of the Query/Retrieve and worklist models
        is served by `find_responses.serve_find` (its responses encoded and written in
        batches), with what pynetdicom does around every service: a request during
        release or on an unknown context, and an invalid one, are left to it; C-CANCELs
        received before the request are forgotten; the association reads as paused
        while the request is served."""
        context = self._accepted_cx.get(context_id)
        if (not isinstance(msg, C_FIND) or self._sent_release or not msg.is_valid_request
                or context is None or context.abstract_syntax not in _FIND_MODELS):
            super()._serve_request(msg, context_id)
            return
        self.dimse.cancel_req = {}
        self._is_paused = True
        try:
            served = serve_find(self, msg, context)
        except Exception:  # as pynetdicom does for a service that fails
            log.exception("C-FIND service failed; aborting the association")
            self.abort()
            return
        finally:
            self._is_paused = False
        self.dimse.cancel_req = {}
        if not served:
            super()._serve_request(msg, context_id)

    def _wait_bound(self) -> float:
        """How long the reactor may wait: until the network timeout could expire."""
        timer = self.dul._idle_timer
        if timer.timeout is None or timer._start_time is None:
            return _MAX_WAIT
        # A little past the expiry, so that the check after the wait sees it expired.
        return max(0.0, min(_MAX_WAIT, timer.remaining + 0.001))


def make_event_driven(assoc: Association) -> None:
    """Give the acceptor `assoc` (not started yet) the event-driven reactors."""
    if assoc.is_alive() or assoc.dul.is_alive():
        raise RuntimeError("make_event_driven: the association's threads already run")
    activity = threading.Event()
    assoc.__class__ = EventDrivenAssociation
    assoc._activity = activity  # type: ignore[attr-defined]
    checkpoint = _PauseWakingCheckpoint(assoc)
    checkpoint.wake = activity.set
    install(assoc, checkpoint)
    dul = assoc.dul
    dul.__class__ = EventDrivenDUL
    assert isinstance(dul, EventDrivenDUL)
    dul._prepare(on_stop=activity.set)
    dul.to_user_queue = _waking_copy(dul.to_user_queue, activity.set)
    assoc.dimse.msg_queue = _waking_copy(assoc.dimse.msg_queue, activity.set)
    plain_responses(assoc)


_DUL_INTERNALS = ("_process_recv_primitive", "_is_transport_event", "kill_dul",
                  "stop_dul", "idle_timer_expired", "receive_pdu", "peek_next_pdu")
_DUL_STATE = ("to_provider_queue", "event_queue", "to_user_queue", "_kill_thread",
              "_idle_timer", "artim_timer", "state_machine", "socket", "_run_loop_delay")
_ASSOC_INTERNALS = ("_run_reactor", "_serve_request", "kill", "_reactor_checkpoint",
                    "_kill", "_is_paused", "_dul_ready", "network_timeout_response",
                    "_accepted_cx", "_sent_release")


def require_supported_pynetdicom() -> None:
    """Refuse to start on a pynetdicom whose internals this module was not written for
    (a reactor that misreads them could hang or drop associations silently)."""
    version = pynetdicom.__version__
    if version not in SUPPORTED_PYNETDICOM:
        raise RuntimeError(
            f"pynetdicom {version} is installed; minipacs.dimse.event_reactor replaces "
            f"reactor internals read in pynetdicom {', '.join(SUPPORTED_PYNETDICOM)}: "
            "check them against the new release and extend SUPPORTED_PYNETDICOM")
    if not hasattr(os, "eventfd"):
        raise RuntimeError("minipacs.dimse.event_reactor needs os.eventfd (Linux)")
    probe = Association(pynetdicom.AE(), "acceptor")
    missing = [f"DULServiceProvider.{name}" for name in _DUL_INTERNALS + _DUL_STATE
               if not hasattr(probe.dul, name)]
    missing += [f"Association.{name}" for name in _ASSOC_INTERNALS
                if not hasattr(probe, name)]
    if not isinstance(probe.dimse, DIMSEServiceProvider) or not isinstance(
            getattr(probe.dimse, "msg_queue", None), queue.Queue):
        missing.append("DIMSEServiceProvider.msg_queue")
    if not hasattr(probe.dimse, "message"):
        missing.append("DIMSEServiceProvider.message")
    if not isinstance(getattr(probe.dimse, "cancel_req", None), dict):
        missing.append("DIMSEServiceProvider.cancel_req (a dict)")
    if not hasattr(QueryRetrieveServiceClass, "validate_status"):
        missing.append("QueryRetrieveServiceClass.validate_status")
    for name in ("to_provider_queue", "event_queue", "to_user_queue"):
        if type(getattr(probe.dul, name, None)) is not queue.Queue:
            missing.append(f"DULServiceProvider.{name} (a queue.Queue)")
    if type(getattr(probe, "_reactor_checkpoint", None)) is not threading.Event:
        missing.append("Association._reactor_checkpoint (a threading.Event)")
    for name in ("_start_time", "_end_time", "remaining", "timeout"):
        if not hasattr(probe.dul.artim_timer, name):
            missing.append(f"Timer.{name}")
    if missing:
        raise RuntimeError(f"pynetdicom {version} lacks what minipacs.dimse.event_reactor "
                           f"relies on: {', '.join(missing)}")
