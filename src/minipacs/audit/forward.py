"""Sending the audit trail to a syslog collector: each event a DICOM audit message
(PS3.15 A.5) in an RFC 5424 syslog message, framed by octet counting over TLS (RFC 5425)
or TCP (RFC 6587), as IHE ATNA's Record Audit Event transaction does.

Delivery is at least once: the position sent so far (`audit_forwarding.last_seq`) moves
only after the collector took the events, with a compare-and-set, so a crash or two nodes
sending at once can repeat events but never skip one. A collector that is down is tried
again on the next run; nothing is lost, the trail stays in the index.
"""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import sessionmaker

from minipacs.audit.chain import AuditEntry, entry_of, utc_now
from minipacs.audit.formats import audit_source_id, dicom_audit_message
from minipacs.config import Settings
from minipacs.index.models import AuditEvent, AuditForwarding

log = logging.getLogger(__name__)

_BATCH = 500
_FACILITY_AUTHPRIV = 10  # RFC 5424 §6.2.1 "security/authorization messages"
_SEVERITY = {"alert": 2, "refused": 4, "failure": 4}  # else 5, notice


def syslog_message(entry: AuditEntry, hostname: str, source_id: str) -> bytes:
    """One RFC 5424 message: header, no structured data, a UTF-8 (BOM) audit message."""
    pri = _FACILITY_AUTHPRIV * 8 + _SEVERITY.get(entry.outcome, 5)
    header = (f"<{pri}>1 {entry.at.isoformat()}Z {hostname[:255]} minipacs - "
              "IHE+RFC-3881 - ")
    return header.encode("ascii", "replace") + b"\xef\xbb\xbf" + \
        dicom_audit_message(entry, source_id).encode("utf-8")


def frame(message: bytes) -> bytes:
    """RFC 5425 §4.3 / RFC 6587 §3.4.1 octet counting: MSG-LEN SP SYSLOG-MSG."""
    return str(len(message)).encode() + b" " + message


class SyslogForwarder:
    def __init__(self, engine: Engine, write_engine: Engine, host: str, port: int, *,
                 tls: bool = True, ca: Path | None = None, source_id: str = "minipacs",
                 timeout: float = 10.0) -> None:
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(write_engine, expire_on_commit=False)
        self.host, self.port, self.tls, self.timeout = host, port, tls, timeout
        self.source_id = source_id
        self.hostname = socket.gethostname()
        self._context: ssl.SSLContext | None = None
        if tls:
            self._context = ssl.create_default_context(cafile=str(ca) if ca else None)
            self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._sock: socket.socket | None = None

    @classmethod
    def from_settings(cls, engine: Engine, write_engine: Engine, settings: Settings
                      ) -> SyslogForwarder:
        assert settings.audit_syslog is not None
        host, _, port = settings.audit_syslog.rpartition(":")
        return cls(engine, write_engine, host, int(port), tls=settings.audit_syslog_tls,
                   ca=settings.audit_syslog_ca, source_id=audit_source_id(settings))

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=self.host)
            self._sock = sock
        return self._sock

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def forward_pending(self) -> int:
        """Send the events not yet sent (a batch); return how many went out."""
        with self._read() as s:
            row = s.get(AuditForwarding, 1)
            last = row.last_seq if row is not None else None
            if last is None:
                with self._write() as w, w.begin():
                    if w.get(AuditForwarding, 1) is None:
                        w.add(AuditForwarding(id=1, last_seq=0))
                last = 0
            events = list(s.scalars(select(AuditEvent).where(AuditEvent.seq > last)
                                    .order_by(AuditEvent.seq).limit(_BATCH)))
        if not events:
            return 0
        data = b"".join(frame(syslog_message(entry_of(e), self.hostname, self.source_id))
                        for e in events)
        try:
            self._connect().sendall(data)
        except OSError as exc:
            self._close()
            log.warning("audit forwarding to %s:%d failed (%s); %d events will be sent "
                        "on the next try", self.host, self.port, exc, len(events))
            return 0
        new_last = events[-1].seq or last
        with self._write() as w, w.begin():
            w.execute(update(AuditForwarding).where(AuditForwarding.id == 1,
                                                    AuditForwarding.last_seq == last)
                      .values(last_seq=new_last))
        log.debug("forwarded audit events %d..%d at %s", last + 1, new_last, utc_now())
        return len(events)

    def close(self) -> None:
        self._close()

