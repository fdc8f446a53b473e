"""The reactor pause (minipacs.dimse.reactor_pause) against the race in pynetdicom's.

The reactor here is pynetdicom 3.0.4's `Association._run_reactor` turn, reduced to the
lines that touch the pause (`_is_paused`, `_reactor_checkpoint`, `_serve_request`), with
a hook that stops it in the window the race needs: after `wait()` let it through and
before it sets `_is_paused` False. A real thread stopped there stands for a thread the
interpreter switched away from at that point. Every association the suite opens uses the
checkpoint too (conftest installs it on the tests' requestors; the server on its own).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from minipacs.dimse.reactor_pause import ReactorCheckpoint, install

pytestmark = pytest.mark.door_only

SETTLE = 0.3  # seconds a sender is given to (wrongly) get past the pause


class Reactor(threading.Thread):
    """An association's reactor thread: what pynetdicom's reactor loop does with the
    pause, each turn, and the names `install` and the checkpoint use."""

    def __init__(self, stop_in_window: bool = False) -> None:
        super().__init__(daemon=True)
        self._kill = False
        self._is_paused = False
        self._reactor_checkpoint: Any = threading.Event()
        self._reactor_checkpoint.set()
        self.stop_in_window = stop_in_window
        self.in_window = threading.Event()
        self.leave_window = threading.Event()
        self.requests: list[Any] = []

    def _serve_request(self, handler: Any) -> None:
        self._is_paused = True  # pynetdicom: "In case the SCP calls one of the send_*"
        handler()
        self._is_paused = False

    def run(self) -> None:
        while not self._kill:
            time.sleep(0.001)
            self._is_paused = True
            self._reactor_checkpoint.wait()
            if self.stop_in_window:
                self.stop_in_window = False
                self.in_window.set()
                self.leave_window.wait(10)
            self._is_paused = False
            if self.requests:
                self._serve_request(self.requests.pop())

    def stop(self) -> None:
        self._kill = True
        self._reactor_checkpoint.set()
        self.join(5)


def _pause_from_another_thread(reactor: Reactor) -> threading.Event:
    """A sender's pause, as pynetdicom's send_* methods do it; the event is set once the
    sender believes the reactor is paused."""
    believes_paused = threading.Event()

    def sender() -> None:
        reactor._reactor_checkpoint.clear()
        while not reactor._is_paused:
            time.sleep(0.0001)
        believes_paused.set()

    threading.Thread(target=sender, daemon=True).start()
    return believes_paused


def test_pynetdicom_s_own_pause_lets_a_sender_past_a_running_reactor() -> None:
    """The race itself, so that the test below is known to be able to fail."""
    reactor = Reactor(stop_in_window=True)
    reactor.start()
    try:
        assert reactor.in_window.wait(5)
        assert _pause_from_another_thread(reactor).wait(SETTLE)  # not paused, yet past
    finally:
        reactor.leave_window.set()
        reactor.stop()


def test_a_sender_waits_until_the_reactor_is_parked() -> None:
    reactor = Reactor(stop_in_window=True)
    checkpoint = install(reactor)
    reactor.start()
    try:
        assert reactor.in_window.wait(5)
        believes_paused = _pause_from_another_thread(reactor)
        assert not believes_paused.wait(SETTLE), "sender went on while the reactor ran"
        reactor.leave_window.set()
        assert believes_paused.wait(5)
        assert checkpoint._parked and reactor._is_paused
    finally:
        reactor.leave_window.set()
        reactor.stop()
    assert not reactor.is_alive()


def test_a_handler_that_waits_for_a_sender_on_its_association_does_not_deadlock() -> None:
    """pynetdicom marks the reactor paused while a handler runs, so that a thread the
    handler waits for may send on the association (our storage commitment report)."""
    reactor = Reactor()
    install(reactor)
    sent = threading.Event()

    def handler() -> None:
        _pause_from_another_thread(reactor).wait(5)
        sent.set()
        reactor._reactor_checkpoint.set()

    reactor.requests.append(handler)
    reactor.start()
    try:
        assert sent.wait(5)
    finally:
        reactor.stop()


def test_the_reactor_may_pause_itself() -> None:
    """pynetdicom's network-timeout release clears the checkpoint from the reactor."""
    reactor = Reactor()
    install(reactor)
    done = threading.Event()

    def handler() -> None:
        reactor._reactor_checkpoint.clear()  # would wait for itself, forever
        reactor._reactor_checkpoint.set()
        done.set()

    reactor.requests.append(handler)
    reactor.start()
    try:
        assert done.wait(5)
    finally:
        reactor.stop()


def test_a_parked_reactor_sees_its_kill_flag_and_a_pause_ends_with_its_thread() -> None:
    reactor = Reactor()
    checkpoint = install(reactor)
    reactor.start()
    assert _pause_from_another_thread(reactor).wait(5)
    reactor._kill = True  # without opening the checkpoint (a held C-MOVE association)
    reactor.join(5)
    assert not reactor.is_alive()
    started = time.monotonic()
    checkpoint.clear()  # nobody left to park: returns, does not wait
    assert time.monotonic() - started < 1


def test_install_keeps_a_closed_checkpoint_closed() -> None:
    reactor = Reactor()
    reactor._reactor_checkpoint.clear()
    checkpoint = install(reactor)
    assert isinstance(reactor._reactor_checkpoint, ReactorCheckpoint)
    assert not checkpoint.is_set()
    assert not checkpoint.wait(0.05)
    checkpoint.set()
    assert checkpoint.wait(0.05)


def _serve_on_own_thread(reactor: Reactor, handler: Any) -> threading.Thread:
    """pynetdicom serves an N-EVENT-REPORT request on a thread of its own (dimse.py)."""
    thread = threading.Thread(target=reactor._serve_request, args=(handler,), daemon=True)
    thread.start()
    return thread


def test_an_event_report_served_beside_a_parked_reactor_leaves_it_marked_paused() -> None:
    """That thread's `_serve_request` marks the reactor running when it ends; a sender
    that pauses the reactor next would poll `_is_paused` for ever (seen as a release
    that never returned in test_commitment)."""
    reactor = Reactor()
    checkpoint = install(reactor)
    reactor.start()
    try:
        assert _pause_from_another_thread(reactor).wait(5)
        _serve_on_own_thread(reactor, lambda: None).join(5)
        assert checkpoint._parked
        assert reactor._is_paused
        checkpoint.set()
        assert _pause_from_another_thread(reactor).wait(5)
    finally:
        reactor.stop()


def test_an_event_report_being_served_does_not_count_as_the_reactor_paused() -> None:
    reactor = Reactor(stop_in_window=True)
    install(reactor)
    reactor.start()
    handler_may_end = threading.Event()
    try:
        assert reactor.in_window.wait(5)
        serving = _serve_on_own_thread(reactor, lambda: handler_may_end.wait(10))
        believes_paused = _pause_from_another_thread(reactor)
        assert not believes_paused.wait(SETTLE), "sender went on while the reactor ran"
        reactor.leave_window.set()
        assert believes_paused.wait(5)
    finally:
        handler_may_end.set()
        reactor.leave_window.set()
        reactor.stop()
    serving.join(5)
