"""What a DICOM connection may cost us before and while it is an association.

A port scan, a peer that connects and says nothing, one that sends a byte every twenty
seconds, a PDU header claiming a gigabyte: none of these may keep a modality out or make
the server allocate what the peer merely claims. The limits, all in `TransportLimits`:

* **Connections.** A total cap and a cap per remote address, checked in the accept loop
  before any thread exists; a connection over either is closed at once, so garbage costs
  its own socket and nothing else. Connections waiting for their A-ASSOCIATE-RQ do not
  count against the association limit (pynetdicom's own count would include them).
* **ARTIM** (PS3.8 §9.1.5, the Association Request/Reject/Release timer): a connection
  must complete its TLS handshake and deliver an A-ASSOCIATE-RQ within `artim_timeout`
  seconds, else it is closed. pynetdicom runs the ARTIM timer with the ACSE timeout.
* **One PDU at a time** (PS3.8 §9.3.1): once the first byte of a PDU has arrived, the
  whole PDU must arrive within `pdu_timeout` seconds; a PDU whose length field exceeds
  the Maximum Length we advertised (PS3.8 §D.1, Maximum Length Sub-Item) is answered with
  A-ABORT (source: service provider, reason: invalid PDU parameter value, PS3.8 §9.3.8)
  before anything is allocated, and the connection closed.
* **Network timeout**: an established association on which the peer sends nothing for
  `network_timeout` seconds, counted from its last PDU or our last DIMSE message
  (`restart_idle_timer`), is aborted.
* **Associations**: more than `max_associations` at once get A-ASSOCIATE-RJ, transient,
  service provider (presentation), local limit exceeded (PS3.8 Table 9-21).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE
from pynetdicom.transport import (
    AssociationSocket,
    RequestHandler,
    ThreadedAssociationServer,
)

from minipacs.dimse.event_reactor import make_event_driven, require_supported_pynetdicom

log = logging.getLogger(__name__)

# A-ABORT PDU (PS3.8 §9.3.8): type 07H, reserved, length 4, two reserved bytes, source
# 2 (DICOM UL service-provider), reason 6 (invalid-PDU-parameter value).
_A_ABORT_INVALID_PARAMETER = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06])
# A-ASSOCIATE-RJ (PS3.8 Table 9-21): rejected-transient, DICOM UL service-provider
# (presentation related function), local-limit-exceeded.
_REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)
_READ_CHUNK = 256 * 1024
_PDU_TYPES = range(0x01, 0x08)  # A-ASSOCIATE-RQ 01H ... A-ABORT 07H (PS3.8 §9.3.2-§9.3.8)
_IDLE_WAIT = 0.1  # seconds; also how late the ARTIM timer may be noticed
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


@dataclass(frozen=True)
class TransportLimits:
    """The per-listener limits; see the module docstring for what each means."""

    max_pdu_length: int = 1024 * 1024
    artim_timeout: float = 10.0
    pdu_timeout: float = 30.0
    max_associations: int = 32
    max_connections: int = 400
    max_connections_per_address: int = 32
    network_timeout: float = 120.0


class ConnectionLedger:
    """Open connections per remote address, shared by the plain and the TLS listener."""

    def __init__(self, limits: TransportLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._per_address: Counter[str] = Counter()
        self._total = 0

    def admit(self, address: str) -> str:
        """Count a new connection from `address`; the reason it is refused ("" = admitted)."""
        with self._lock:
            if self._total >= self.limits.max_connections:
                return f"{self._total} connections open (max_connections)"
            if self._per_address[address] >= self.limits.max_connections_per_address:
                return (f"{self._per_address[address]} connections open from {address} "
                        "(max_connections_per_address)")
            self._per_address[address] += 1
            self._total += 1
            return ""

    @property
    def open_connections(self) -> int:
        return self._total

    def release(self, address: str) -> None:
        with self._lock:
            self._total -= 1
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]


class SharedContexts(list[Any]):
    """The supported presentation contexts, shared by every association of a listener.

    pynetdicom deep-copies them for each connection (1.4 MB for ours: 179 contexts,
    8,055 transfer syntaxes), before the peer has said anything; negotiation only reads
    them (it builds new contexts for the answer), so one copy serves all."""

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedContexts:
        return self


class GuardedAssociationSocket(AssociationSocket):
    """An `AssociationSocket` whose reads obey `TransportLimits`.

    pynetdicom's DUL reads a PDU as ``recv(6)`` (type, reserved, length) then, for a
    known PDU type, ``recv(length)``; the header read is checked here before the DUL can
    ask for (and allocate) the body. A refused or timed-out read raises `OSError`, which
    the DUL treats as the transport connection closing (Evt17)."""

    limits: TransportLimits
    _header_next: bool
    _deadline: float

    def apply_limits(self, limits: TransportLimits) -> None:
        self.limits = limits
        self._header_next = True
        self._deadline = 0.0

    @property
    def ready(self) -> bool:
        # While awaiting the A-ASSOCIATE-RQ (state Sta2, PS3.8 Table 9-10) there is
        # nothing to send, so wait for data here instead of pynetdicom's 1 ms polling:
        # hundreds of silent connections then cost no CPU. Not while an event waits in
        # the DUL's queue: the A-ASSOCIATE-RQ just read is one (Evt6, still Sta2 until
        # the DUL takes it), and waiting then delayed every association by _IDLE_WAIT.
        sock = self.socket
        if (sock is not None and self._awaiting_request()
                and self.assoc.dul.event_queue.empty()):
            try:
                select.select([sock], [], [], _IDLE_WAIT)
            except (OSError, ValueError):
                pass  # the base property reports the closed connection
        return bool(AssociationSocket.ready.fget(self))  # type: ignore[attr-defined]

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        if sock is None:
            return bytearray()
        header = self._header_next
        if header:
            self._deadline = time.monotonic() + self.limits.pdu_timeout
        if nr_bytes > self.limits.max_pdu_length:  # never allocate what a peer claims
            self._refuse(sock, self._too_long(nr_bytes))
        data = self._read(sock, nr_bytes)
        if header and len(data) == 6:
            pdu_type, _, length = struct.unpack(">BBL", data)
            # For an unknown type the DUL aborts without reading a body (PS3.8 §9.3.1).
            if pdu_type in _PDU_TYPES:
                if length > self.limits.max_pdu_length:
                    self._refuse(sock, self._too_long(length))
                self._header_next = False
        elif not header:
            self._header_next = True
        return data

    def _too_long(self, length: int) -> str:
        return (f"a PDU of {length} bytes announced, more than the "
                f"{self.limits.max_pdu_length} we accept (PS3.8 §D.1)")

    def _read(self, sock: socket.socket, nr_bytes: int) -> bytearray:
        """`nr_bytes` from `sock` by the PDU's deadline; fewer if the peer closed."""
        data = bytearray(nr_bytes)
        view = memoryview(data)
        got = 0
        try:
            while got < nr_bytes:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                n = sock.recv_into(view[got:], min(nr_bytes - got, _READ_CHUNK))
                if n == 0:
                    self._stop_awaiting_request()
                    break  # the peer closed: the DUL sees a short read
                got += n
        except TimeoutError:
            self._refuse(sock, f"PDU incomplete after {self.limits.pdu_timeout} s "
                               f"({got} of {nr_bytes} bytes)", abort=False)
        finally:
            view.release()
        # Sends must make progress too: a peer that stops reading is dropped.
        sock.settimeout(self.limits.pdu_timeout)
        ack_now(sock)
        del data[got:]
        return data

    def _awaiting_request(self) -> bool:
        """Still waiting for the A-ASSOCIATE-RQ (state Sta2, PS3.8 Table 9-10)?"""
        return bool(self.assoc.dul.state_machine.current_state == "Sta2")

    def _stop_awaiting_request(self) -> None:
        # The association thread waits up to ARTIM for the A-ASSOCIATE-RQ; when the
        # connection is gone before it came, tell it now (None is what it gets on
        # timeout) so the connection's threads end with the connection.
        if self._awaiting_request():
            self.assoc.dul.to_user_queue.put(None)  # type: ignore[arg-type]

    def _refuse(self, sock: socket.socket, reason: str, *, abort: bool = True) -> None:
        self._stop_awaiting_request()
        log.warning("DICOM connection from %s closed: %s", _peer(sock), reason)
        # Not in the middle of an answer the association's thread is writing
        # (event_reactor.EventDrivenDUL.send_encoded); a second at most.
        lock = getattr(self.assoc.dul, "_action_lock", None)
        locked = lock is not None and lock.acquire(timeout=1.0)
        try:
            if abort:
                sock.settimeout(1.0)
                sock.sendall(_A_ABORT_INVALID_PARAMETER)
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            if locked:
                lock.release()  # type: ignore[union-attr]
        raise ConnectionAbortedError(reason)


def ack_now(sock: socket.socket) -> None:
    """Acknowledge what has been read at once (Linux TCP_QUICKACK; it lasts until the
    kernel next decides, so it is set after every read).

    A DIMSE message is often two PDUs written back to back (command, then dataset, PS3.7
    §6.3.1); a requestor with Nagle's algorithm on (pynetdicom's default) holds the
    second until the first is acknowledged, and Linux delays that ACK by up to 40 ms
    while the acceptor, waiting for the dataset, has nothing to send."""
    if _QUICKACK is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except OSError:
            pass  # not TCP (a test's socketpair), or gone: nothing to acknowledge


def restart_idle_timer(event: Any) -> None:
    """EVT_DIMSE_SENT: restart the network timeout when we send a DIMSE message.

    pynetdicom's idle timer counts from the last PDU received, and its reactor checks
    it right after a handler returns. A peer that sent a request is silent until we
    answer (PS3.7 §9.1: it waits for the response), so without this a request whose
    handling took longer than the timeout (an index commit waiting on a busy disk) got
    its answer queued and the association aborted behind it: the peer's next request,
    already on the wire, was never answered. The event fires in the association's
    thread, before the answer is queued and before the reactor looks at the timer."""
    event.assoc.dul._idle_timer.restart()


def _peer(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return "a peer that has gone"


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's request handler, with the guarded socket, holding its thread until
    the association ends so the ledger knows when the connection is gone."""

    server: GuardedAssociationServer

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        # Same object, guarded reads: pynetdicom builds the AssociationSocket inline
        # (queuing the connection event once), so its class is narrowed here rather than
        # a second socket being made.
        sock: Any = assoc.dul.socket
        sock.__class__ = GuardedAssociationSocket
        sock.apply_limits(self.server.limits)
        assoc.acse_timeout = self.server.limits.artim_timeout
        # Block on the socket and on the DUL's queues instead of pynetdicom's 1 ms polls.
        make_event_driven(assoc)
        self.association = assoc
        return assoc

    def handle(self) -> None:
        super().handle()
        self.association.join()


class GuardedAssociationServer(ThreadedAssociationServer):
    """A pynetdicom association server that admits connections by `ConnectionLedger`
    and does the TLS handshake in the connection's thread, under the ARTIM timeout (in
    the accept loop one silent TLS peer would stop every other connection)."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, ae: AE, address: tuple[str, int], ae_title: str, contexts: Any,
                 ssl_context: ssl.SSLContext | None = None,
                 evt_handlers: list[Any] | None = None, *,
                 limits: TransportLimits, ledger: ConnectionLedger) -> None:
        self.limits = limits
        self.ledger = ledger
        super().__init__(ae, address, ae_title, SharedContexts(contexts), ssl_context,
                         evt_handlers, request_handler=GuardedRequestHandler)

    def service_actions(self) -> None:
        """Nothing. pynetdicom's forces a full `gc.collect()` every 60th turn of the
        accept loop (every 60 connections, or every 30 s idle): in a process holding
        SQLAlchemy, FastAPI and pydicom that held the GIL for ~0.1 s, a stall of every
        association at once, and a third of the server's CPU in a loop of C-ECHO
        associations. Python's own collector still frees dead associations' cycles."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        connection, address = self.socket.accept()
        # DIMSE is request/response in small PDUs: with Nagle's algorithm a reply waits
        # for the peer's delayed ACK (~40 ms on Linux) on every exchange.
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        refused = self.ledger.admit(str(client_address[0]))
        if refused:
            log.warning("DICOM connection from %s refused: %s", client_address[0], refused)
        return not refused

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        connection = request
        try:
            request.settimeout(self.limits.artim_timeout)
            if self.ssl_context is not None:
                connection = self._handshake(request, client_address)
                if connection is None:
                    return
            super().process_request_thread(connection, client_address)
        finally:
            self.shutdown_request(connection if connection is not None else request)
            self.ledger.release(str(client_address[0]))

    def _handshake(self, raw: socket.socket, client_address: Any) -> ssl.SSLSocket | None:
        assert self.ssl_context is not None
        try:
            tls = self.ssl_context.wrap_socket(raw, server_side=True,
                                               do_handshake_on_connect=False)
            tls.do_handshake()  # bounded by the ARTIM timeout set on the socket
            return tls
        except (OSError, ssl.SSLError) as exc:
            log.warning("DICOM TLS handshake with %s failed: %s", client_address[0], exc)
            self.shutdown_request(raw)
            return None


def association_limit(max_associations: int) -> Callable[[Any], str]:
    """For EVT_REQUESTED: why this association is over the limit ("" = within it).

    Counts acceptor associations that have received their A-ASSOCIATE-RQ, i.e. not the
    connections still waiting for one."""
    def problem(event: Any) -> str:
        ae = event.assoc.ae
        established = sum(1 for a in ae.active_associations
                          if a.is_acceptor and a.requestor.primitive is not None)
        if established > max_associations:
            return f"{established - 1} associations open (max_associations)"
        return ""
    return problem


def reject_local_limit(event: Any, reason: str) -> None:
    log.warning("association from %s rejected: %s", event.assoc.requestor.address, reason)
    event.assoc.acse.send_reject(*_REJECT_LOCAL_LIMIT)
    event.assoc.kill()


# Seconds a worker of `serve --workers N` defers accepting, per connection it has open.
_ACCEPT_DEFER = 0.002
_ACCEPT_DEFER_MAX = 0.02


class InheritedSocketAssociationServer(GuardedAssociationServer):
    """Accepts on a listening socket its supervisor made (`serve --workers N`): all
    workers take connections from that one queue, each when it is free to, so a busy or
    stalled worker is not handed new associations. (With SO_REUSEPORT, the kernel
    chose the worker by a hash of the peer's address: four modalities could land on one
    worker while another idled, and a stalled worker kept receiving connections.)"""

    def __init__(self, *args: Any, listening: socket.socket, **kwargs: Any) -> None:
        self._listening = listening
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        assert self.socket is not None  # the one socketserver made: not used
        self.socket.close()
        self.socket = self._listening
        # Non-blocking: a worker woken for a connection another took gets EAGAIN,
        # which socketserver ignores, instead of blocking its accept loop.
        self.socket.settimeout(0.0)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        pass  # the supervisor listens already

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        # Every worker is woken for each connection and the first to accept takes it.
        # Leave it to a less busy one: each association this worker serves already
        # delays its accept a little, so four associations arriving at once spread
        # over two workers instead of going three to one. An idle worker never waits.
        if self.ledger.open_connections:
            time.sleep(min(_ACCEPT_DEFER * self.ledger.open_connections, _ACCEPT_DEFER_MAX))
        return super().get_request()

    def server_close(self) -> None:
        # Only this process's descriptor: pynetdicom's shutdown(SHUT_RDWR) would stop
        # the listening socket itself, for every worker.
        assert self.socket is not None
        self.socket.close()


def start_guarded_server(
    ae: AE, address: tuple[str, int], handlers: list[Any], limits: TransportLimits,
    ledger: ConnectionLedger, ssl_context: ssl.SSLContext | None = None,
    *, listening: socket.socket | None = None,
) -> GuardedAssociationServer:
    """Listen on `address` in a background thread (port 0: any free port).

    `listening`: accept on this socket, bound and listening already, instead (the
    workers of one `serve --workers N` share their supervisor's)."""
    require_supported_pynetdicom()
    ae.maximum_pdu_size = limits.max_pdu_length
    ae.acse_timeout = limits.artim_timeout
    ae.network_timeout = limits.network_timeout
    # Our ledger caps connections below this, so pynetdicom's own count (which includes
    # connections that never associate) never rejects anyone.
    ae.maximum_associations = limits.max_connections + 1
    inherited: dict[str, Any] = {} if listening is None else {"listening": listening}
    server: GuardedAssociationServer = ae.make_server(  # type: ignore[assignment]
        address, ssl_context=ssl_context, evt_handlers=handlers,
        server_class=(GuardedAssociationServer if listening is None
                      else InheritedSocketAssociationServer),
        limits=limits, ledger=ledger, **inherited)
    thread = threading.Thread(target=server.serve_forever, daemon=True,
                              name=f"DicomListener:{server.server_address[1]}")
    thread.start()
    ae._servers.append(server)  # so that server.shutdown() can deregister it
    return server
