"""Associations we open: to C-MOVE destinations and for Storage Commitment reports.

A registered AE marked `tls` is reached over TLS (PS3.15 B.1, TLS 1.2 or later), its
certificate checked against MINIPACS_DICOM_TLS_CA (else the system's trusted CAs) and its
host name; we present our own certificate when one is configured, for peers that want
mutual authentication.
"""

from __future__ import annotations

import select
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from pynetdicom.transport import AssociationSocket

from minipacs.ae_registry import RemoteAE
from minipacs.dimse.transport_limits import ack_now
from minipacs.tls import client_context


@dataclass(frozen=True)
class OutgoingTransport:
    """How to reach registered AEs; `tls_context` None: plain TCP to everyone."""

    tls_context: ssl.SSLContext | None = None

    def associate_options(self, remote: RemoteAE) -> dict[str, Any]:
        """Keyword arguments for `AE.associate` to reach `remote`."""
        if not remote.tls:
            return {}
        context = self.tls_context or client_context()
        return {"tls_args": (context, remote.host)}


def send_without_delay(event: Any) -> None:
    """EVT_CONN_OPEN on an association we open: no waiting on either side's ACKs.

    TCP_NODELAY: a C-STORE sub-operation is a command PDU then data PDUs (PS3.7 §6.3.1,
    PS3.8 §9.3.5), and with Nagle's algorithm each small segment waits for the peer's
    delayed ACK. And every read acknowledged at once (TCP_QUICKACK, see `ack_now`): a peer
    that writes a response PDU in two pieces with Nagle on (dcmtk's storescp and movescu
    do) holds the second until our ACK, which Linux delays up to 40 ms while pynetdicom
    waits for it. Together they cost ~45 ms per C-MOVE sub-operation."""
    transport = event.assoc.dul.socket
    sock = getattr(transport, "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return  # already closed: the association will fail on its own
    receive = transport.recv

    def recv(nr_bytes: int) -> bytearray:
        data: bytearray = receive(nr_bytes)
        ack_now(sock)
        return data

    ack_now(sock)
    transport.recv = recv
    wake_on_traffic(event.assoc)


_IDLE_WAIT = 0.002  # seconds the DUL thread of our association waits with nothing to do


class _WakeableSocket(AssociationSocket):  # type: ignore[misc]
    """The transport of an association we open, its DUL woken by traffic, not a clock.

    pynetdicom's DUL thread polls: with nothing queued and nothing to read it sleeps a
    millisecond, then looks again (`select` with no timeout). A C-MOVE sub-operation
    crosses that sleep twice: once before its PDUs are sent, once before the C-STORE-RSP
    is read. Here the DUL's sleep is 0 and its look at the socket (`ready`, called only
    from the DUL thread, when no primitive is queued) waits in `select` on the socket
    and on a wake-up socket pair that `send_pdu` writes to, at most `_IDLE_WAIT` (the
    DUL's kill flag and ARTIM timer are still polled, now every 2 ms)."""

    _wake: tuple[socket.socket, socket.socket]
    _woken = False

    @property
    def ready(self) -> bool:
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True  # decrypted bytes buffered in the SSL object: select cannot see them
        waker = self._wake[0]
        try:
            readable, _, _ = select.select([sock, waker], [], [], _IDLE_WAIT)
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # transport closed, as pynetdicom's `ready` does
            return False
        if waker in readable:
            try:
                waker.recv(4096)
            except OSError:
                pass  # drained by an earlier call, or closed with the transport
            # After the drain: a wake-up skipped while the flag was still set came after
            # its primitive was queued, and the DUL looks at its queue when this returns.
            self._woken = False
        return sock in readable

    def wake(self) -> None:
        """Called after a primitive is queued. One byte per wait, not one per PDU."""
        if self._woken:
            return
        self._woken = True
        try:
            self._wake[1].send(b"\0")
        except OSError:
            pass  # closed with the transport

    def close(self) -> None:
        try:
            super().close()
        finally:
            for end in self._wake:
                end.close()


def wake_on_traffic(assoc: Any) -> None:
    """Make the DUL of `assoc` (an association we opened, its transport connected) wait
    on its socket instead of sleeping between looks (`_WakeableSocket`). Only this
    association's objects change; pynetdicom's classes are left as they are."""
    dul = assoc.dul
    if type(dul.socket) is not AssociationSocket:
        return  # not the transport this was written against: leave it polling
    transport: Any = dul.socket
    pair = socket.socketpair()
    for end in pair:
        end.setblocking(False)
    transport._wake = pair
    transport.__class__ = _WakeableSocket
    send_pdu = dul.send_pdu

    def send_and_wake(primitive: Any) -> None:
        send_pdu(primitive)
        transport.wake()

    dul.send_pdu = send_and_wake
    dul._run_loop_delay = 0
