"""TLS contexts for the ports and peers that speak TLS: DICOM (PS3.15 B.1 secure
transport) and HL7 v2 over MLLP (IHE ATNA's secure node: HL7 over TLS). TLS 1.2 or
later, as both require; a CA bundle, when given, makes the certificate of the other side
mandatory and checked against it."""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert: Path, key: Path, ca: Path | None = None) -> ssl.SSLContext:
    """For a listening port: our certificate; with `ca`, peers must present a
    certificate it signed (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    if ca is not None:
        context.load_verify_locations(cafile=str(ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def configured_server_context(what: str, setting: str, cert: Path | None,
                              key: Path | None, ca: Path | None) -> ssl.SSLContext | None:
    """`server_context` from a port's settings (`{setting}_CERT`, `_KEY`, `_CA`), None
    when neither certificate nor key is set. A start with one of the two, or with files
    that cannot be used, stops naming the settings or the files and why."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise SystemExit(f"{what} needs both {setting}_CERT and {setting}_KEY (PEM files)")
    try:
        return server_context(cert, key, ca)
    except OSError as exc:  # ssl.SSLError is one
        raise SystemExit(f"cannot use the {what} certificate {cert} with key {key}"
                         f"{f' and CA {ca}' if ca else ''}: {exc}") from None


def client_context(ca: Path | None = None, cert: Path | None = None,
                   key: Path | None = None) -> ssl.SSLContext:
    """For a connection we open: the server's certificate checked against `ca` (the
    system's CAs when None) and its name; `cert` and `key`: ours, for a server that
    asks for one."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(ca) if ca is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None and key is not None:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return context
