"""Associations we open: to C-MOVE destinations and for Storage Commitment reports.

A registered AE marked `tls` is reached over TLS (PS3.15 B.1, TLS 1.2 or later), its
certificate checked against MINIPACS_DICOM_TLS_CA (else the system's trusted CAs) and its
host name; we present our own certificate when one is configured, for peers that want
mutual authentication.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minipacs.ae_registry import RemoteAE


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
