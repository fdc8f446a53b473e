"""The MLLP listener: python-hl7's asyncio MLLP server on its own thread and loop.

MLLP (HL7 v2.5 Appendix C, "Minimal Lower Layer Protocol"): each message is framed
<VT> message <FS><CR>, and each is answered by one framed ACK before the next is read.
A frame longer than `max_message_bytes` is answered AR and its connection closed (the
rest of it cannot be told from the next frame); bytes before a start block (garbage), a
frame cut short by the peer closing, or a connection silent for `idle_timeout` seconds
end the connection without touching anything. The handler runs in a worker thread so
the loop keeps serving other connections while one waits on the database.

With MINIPACS_HL7_TLS_CERT and _KEY the port speaks only TLS (MLLP inside TLS, as IHE
ATNA's secure node carries HL7); with MINIPACS_HL7_TLS_CA a sender must also present a
certificate that CA signed. A peer that fails the handshake is logged and dropped before
any byte of HL7 is read; it counts against `max_connections` until then.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from typing import Any

from hl7.mllp import InvalidBlockError, start_hl7_server

from minipacs.archive import Archive
from minipacs.config import Settings
from minipacs.hl7.acks import (
    APPLICATION_INTERNAL_ERROR,
    encode,
    rejected,
    unparsed_acknowledgement,
)
from minipacs.hl7.dispatch import Hl7Door
from minipacs.hl7.senders import SenderPolicy, parse_allowed_senders
from minipacs.patient_identity import IdentitySystems
from minipacs.tls import configured_server_context
from minipacs.worklist import Worklist

log = logging.getLogger(__name__)

_HANDSHAKE_TIMEOUT = 30.0  # seconds a new connection has to finish its TLS handshake


class Hl7Listener:
    """`start()` binds (port 0: any free port, then `port` says which) and serves until
    `shutdown()`."""

    def __init__(self, door: Hl7Door, host: str, port: int, *, max_message_bytes: int,
                 idle_timeout: float, max_connections: int = 32,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.door = door
        self.ssl_context = ssl_context
        self.host = host
        self.requested_port = port
        self.max_message_bytes = max_message_bytes
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._open = 0  # connections being served (only the loop's thread touches it)
        self.port: int | None = None
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="hl7-mllp", daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 30.0) -> Hl7Listener:
        self._thread.start()
        if not self._started.wait(timeout):
            raise SystemExit(f"the HL7 listener did not start within {timeout}s")
        if self._error is not None:
            raise SystemExit(f"cannot listen for HL7 on {self.host}:{self.requested_port}: "
                             f"{self._error}")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            # The reader's limit bounds one frame: the start block plus the message.
            server: asyncio.Server = self._loop.run_until_complete(start_hl7_server(
                self._connection, self.host, self.requested_port,
                limit=self.max_message_bytes + 1))
            self._server = server
            self.port = int(server.sockets[0].getsockname()[1])
        except OSError as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    async def _connection(self, reader: Any, writer: Any) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        if self._open >= self.max_connections:
            log.warning("HL7 connection from %s closed on arrival: %d connections already "
                        "served (MINIPACS_HL7_MAX_CONNECTIONS)", address, self._open)
            writer.close()
            return
        self._open += 1
        try:
            if self.ssl_context is not None and not await self._handshake(writer, address):
                return
            certificate = _subject(writer.get_extra_info("peercert"))
            for _ in range(1_000_000):  # bounded: a connection is a session, not forever
                try:
                    block = await asyncio.wait_for(reader.readblock(), self.idle_timeout)
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:
                        log.warning("HL7 connection from %s closed inside a frame (%d "
                                    "bytes, no end block): nothing done", address,
                                    len(exc.partial))
                    return
                except InvalidBlockError:
                    log.warning("HL7 connection from %s sent bytes outside an MLLP frame "
                                "(no <VT> start block): connection closed, nothing done",
                                address)
                    return
                except ValueError:  # python-hl7: the frame is longer than the limit
                    problem = rejected(
                        APPLICATION_INTERNAL_ERROR,
                        f"message longer than {self.max_message_bytes} bytes "
                        "(MINIPACS_HL7_MAX_MESSAGE_BYTES): not read, connection closed")
                    log.warning("HL7 connection from %s: %s", address, problem)
                    writer.writeblock(encode(unparsed_acknowledgement(
                        problem, application=self.door.application)))
                    await writer.drain()
                    return
                except TimeoutError:
                    log.info("HL7 connection from %s idle for %ss: closed", address,
                             self.idle_timeout)
                    return
                reply = await asyncio.to_thread(self.door.answer, block, address,
                                                certificate=certificate)
                writer.writeblock(reply)
                await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.info("HL7 connection from %s lost: %s", address, exc)
        except Exception:  # one failing connection must not go unnoticed or stop others
            log.exception("HL7 connection from %s ended by an error; the sender gets no "
                          "ACK and may resend (order writes replace)", address)
        finally:
            self._open -= 1
            writer.close()

    async def _handshake(self, writer: Any, address: str) -> bool:
        """TLS on an accepted connection, here rather than in the server (asyncio's
        own handshake fails silently): a failure is logged with the peer and why."""
        assert self.ssl_context is not None
        timeout = min(self.idle_timeout, _HANDSHAKE_TIMEOUT)
        try:
            await writer.start_tls(self.ssl_context, ssl_handshake_timeout=timeout)
        except (ssl.SSLError, OSError) as exc:  # TimeoutError is an OSError
            log.warning("HL7 connection from %s closed: TLS handshake failed (%s)",
                        address, str(exc) or type(exc).__name__)
            return False
        return True

    def shutdown(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


def _subject(certificate: dict[str, Any] | None) -> str:
    """A peer certificate's subject as `CN=..., O=...` ("" when none was shown)."""
    if not certificate:
        return ""
    return ", ".join(f"{_SHORT.get(name, name)}={value}"
                     for rdn in certificate.get("subject", ()) for name, value in rdn)


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
          "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST"}


def start_hl7_listener(settings: Settings, archive: Archive, worklist: Worklist
                       ) -> Hl7Listener | None:
    """The node's HL7 listener when `hl7_port` is set (None otherwise), started."""
    if settings.hl7_port is None:
        return None
    try:
        senders = SenderPolicy(parse_allowed_senders(settings.hl7_allowed_senders))
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if not senders.allowed:
        log.warning("MINIPACS_HL7_PORT is set but MINIPACS_HL7_ALLOWED_SENDERS is empty: "
                    "every HL7 message will be refused (AR)")
    door = Hl7Door(archive, worklist, IdentitySystems.from_settings(settings), senders,
                   settings.ae_title)
    return Hl7Listener(door, settings.hl7_host, settings.hl7_port,
                       max_message_bytes=settings.hl7_max_message_bytes,
                       idle_timeout=settings.hl7_idle_timeout,
                       max_connections=settings.hl7_max_connections,
                       ssl_context=hl7_tls_context(settings)).start()


def hl7_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS for the MLLP port when a certificate and key are configured."""
    cert, key, ca = settings.hl7_tls_cert, settings.hl7_tls_key, settings.hl7_tls_ca
    if cert is None and key is None and ca is not None:  # the CA is for inbound only
        raise SystemExit("HL7 TLS needs both MINIPACS_HL7_TLS_CERT and MINIPACS_HL7_TLS_KEY "
                         "(PEM files); MINIPACS_HL7_TLS_CA alone would leave the port "
                         "plain TCP")
    return configured_server_context("HL7 TLS", "MINIPACS_HL7_TLS", cert, key, ca)
