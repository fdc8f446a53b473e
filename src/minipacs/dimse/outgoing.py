"""Associations we open: to C-MOVE destinations and for Storage Commitment reports.

A registered AE marked `tls` is reached over TLS (PS3.15 B.1, TLS 1.2 or later), its
certificate checked against MINIPACS_DICOM_TLS_CA (else the system's trusted CAs) and its
host name; we present our own certificate when one is configured, for peers that want
mutual authentication.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minipacs.ae_registry import RemoteAE
from minipacs.dimse.transport_limits import ack_now


def client_tls_context(ca: Path | None = None, cert: Path | None = None,
                       key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(ca) if ca is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None and key is not None:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return context


@dataclass(frozen=True)
class OutgoingTransport:
    """How to reach registered AEs; `tls_context` None: plain TCP to everyone."""

    tls_context: ssl.SSLContext | None = None

    def associate_options(self, remote: RemoteAE) -> dict[str, Any]:
        """Keyword arguments for `AE.associate` to reach `remote`."""
        if not remote.tls:
            return {}
        context = self.tls_context or client_tls_context()
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
