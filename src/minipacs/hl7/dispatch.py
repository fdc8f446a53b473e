"""From the bytes of one MLLP frame to the bytes of its acknowledgement.

In order: decode (UTF-8; MSH-18 must be empty, UNICODE UTF-8 or ASCII), parse with
python-hl7 (a message must start with MSH), admit the sender (`senders.py`), check
MSH-12 version and MSH-11 processing ID, pick the handler by MSH-9 type and trigger,
run it. Every message, accepted or not, is one audit event through the core; a handler
raises `Hl7Problem` or a core error, mapped to AE/AR once here (`acks.problem_of`).
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import NamedTuple

import hl7
from hl7.containers import Message

from minipacs.archive import Archive
from minipacs.errors import MinipacsError
from minipacs.hl7 import adt, omi, orm
from minipacs.hl7.acks import (
    APPLICATION_INTERNAL_ERROR,
    DATA_TYPE_ERROR,
    REJECT,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    UNSUPPORTED_EVENT_CODE,
    UNSUPPORTED_MESSAGE_TYPE,
    UNSUPPORTED_PROCESSING_ID,
    UNSUPPORTED_VERSION_ID,
    Hl7Problem,
    acknowledgement,
    application_error,
    encode,
    problem_of,
    rejected,
    unparsed_acknowledgement,
)
from minipacs.hl7.context import Handled, MessageContext
from minipacs.hl7.segments import value
from minipacs.hl7.senders import SenderPolicy, hl7_principal
from minipacs.patient_identity import IdentitySystems
from minipacs.worklist import Worklist

log = logging.getLogger(__name__)

HANDLERS: dict[str, ModuleType] = {m.MESSAGE_TYPE: m for m in (orm, omi, adt)}
# v2.3 (ORM as IHE SWF), v2.3.1, v2.4 and v2.5/v2.5.1 (OMI as IHE SWF.b); the fields
# read here are the same in all of them.
SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")
# MSH-18 (table 0211): empty means ASCII, which UTF-8 contains.
CHARACTER_SETS = ("", "UNICODE UTF-8", "ASCII")
PROCESSING_IDS = ("P", "T", "D")  # table 0103: production, training, debugging


class _Peer(NamedTuple):
    address: str
    certificate: str  # subject of the sender's TLS certificate, "" without one


class Hl7Door:
    """Answers messages for one node. `archive` is the node's (no principal): each
    admitted message acts for its sender's principal."""

    def __init__(self, archive: Archive, worklist: Worklist, systems: IdentitySystems,
                 senders: SenderPolicy, application: str) -> None:
        self.archive = archive
        self.worklist = worklist
        self.systems = systems
        self.senders = senders
        self.application = application

    def answer(self, block: bytes, address: str, *, certificate: str = "") -> bytes:
        """The ACK for one frame's bytes from `address`; `certificate`: the subject of
        the certificate the sender showed over TLS (named in the audit events)."""
        peer = _Peer(address, certificate)
        text = block.decode("utf-8", errors="replace")
        # §2.5.1: segments end with CR; LF and CRLF are common, read them as CR.
        text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
        try:
            message = hl7.parse(text)
            if str(message[0][0]).strip() != "MSH":
                raise hl7.ParseException("first segment is not MSH")
        # python-hl7 raises ParseException for a wrong first segment, and assertion,
        # index or type errors on some broken delimiters: all mean "not parseable".
        except (hl7.ParseException, AssertionError, IndexError, KeyError, TypeError,
                ValueError) as exc:
            return self._unanswerable(rejected(
                SEGMENT_SEQUENCE_ERROR, f"not an HL7 v2 message: it must begin with an MSH "
                f"segment (MSH|^~\\&|...), got {text[:20]!r} ({exc})", "MSH"), peer)
        try:  # an ACK copies MSH-3..6, 9, 10-12: they must be there to answer at all
            acknowledgement(message, None, application=self.application)
        except (AssertionError, IndexError, KeyError, TypeError, AttributeError):
            return self._unanswerable(rejected(
                REQUIRED_FIELD_MISSING, "the MSH segment is incomplete: MSH-9 must be "
                f"TYPE^TRIGGER, with MSH-10 to MSH-12 after it, got {text[:60]!r}", "MSH"),
                peer)
        control = next((i for i, c in enumerate(text) if ord(c) < 0x20 and c not in "\r\t"),
                       None)
        if control is not None:
            # §2.7: data carries no control characters but the segment terminator; NUL
            # cannot even be stored as text in PostgreSQL. Refused before anything.
            problem = rejected(DATA_TYPE_ERROR,
                               f"control character 0x{ord(text[control]):02X} at offset "
                               f"{control}: HL7 data may not contain it", "MSH")
            self._audit("", "hl7:?", peer, "refused", str(problem), role="")
            return encode(acknowledgement(message, problem, application=self.application))
        outcome = self._process(message, block, peer)
        ack = acknowledgement(message, outcome, application=self.application,
                              facility=value(message, message.segment("MSH"), 6))
        return encode(ack)

    def _unanswerable(self, problem: Hl7Problem, peer: _Peer) -> bytes:
        """AR for a message whose MSH cannot be read (MSA-2 empty), audited."""
        self._audit("", "hl7:?", peer, "failure", str(problem), role="")
        return encode(unparsed_acknowledgement(problem, application=self.application))

    def _process(self, message: Message, block: bytes, peer: _Peer) -> Hl7Problem | None:
        address = peer.address
        msh = message.segment("MSH")
        application, facility = value(message, msh, 3), value(message, msh, 4)
        event = f"{value(message, msh, 9, 1, 1)}^{value(message, msh, 9, 1, 2)}".upper()
        control_id = value(message, msh, 10)
        sender = f"{application}^{facility}"
        refusal = self.senders.admission_problem(application, facility, address)
        if refusal:
            log.warning("HL7 %s %s from %s refused: %s", event, control_id, address, refusal)
            self._audit(event, f"hl7:{sender}", peer, "refused", refusal, role="")
            return rejected(APPLICATION_INTERNAL_ERROR, refusal, "MSH^1^3")
        archive = self.archive.acting_as(hl7_principal(application, facility, address))
        handled: Handled | None = None
        try:
            module = self._check(message, block, event)
            ctx = MessageContext(message, event, control_id, archive, self.worklist,
                                 self.systems)
            handled = module.handle(ctx)
            problem = None
        except Hl7Problem as exc:
            problem = exc
        except MinipacsError as exc:
            problem = problem_of(exc)
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the door
            log.exception("HL7 %s %s from %s failed", event, control_id, sender)
            problem = application_error(APPLICATION_INTERNAL_ERROR,
                                        f"internal error: {type(exc).__name__}: {exc}")
        if problem is None and handled is not None:
            self._audit(event, f"hl7:{sender}", peer, "success",
                        f"message {control_id}: {handled.detail}", handled)
        else:
            assert problem is not None
            outcome = "refused" if problem.ack_code == REJECT else "failure"
            self._audit(event, f"hl7:{sender}", peer, outcome,
                        f"message {control_id}: {problem.ack_code} {problem}")
        log.info("HL7 %s %s from %s@%s: %s", event, control_id, sender, address,
                 problem.ack_code + f" {problem}" if problem else "AA")
        return problem

    def _check(self, message: Message, block: bytes, event: str) -> ModuleType:
        """The handler for `message`; AR naming what is unsupported otherwise."""
        msh = message.segment("MSH")
        try:
            block.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise rejected(DATA_TYPE_ERROR,
                           f"byte 0x{block[exc.start]:02X} at offset {exc.start} is not "
                           "UTF-8; send UTF-8 with MSH-18 UNICODE UTF-8", "MSH^1^18"
                           ) from None
        charset = value(message, msh, 18).upper()
        if charset not in CHARACTER_SETS:
            raise rejected(TABLE_VALUE_NOT_FOUND,
                           f"MSH-18 character set {charset!r} is not supported; send "
                           "UNICODE UTF-8", "MSH^1^18")
        version = value(message, msh, 12)
        if version not in SUPPORTED_VERSIONS:
            raise rejected(UNSUPPORTED_VERSION_ID,
                           f"MSH-12 version {version!r} is not supported; send one of "
                           f"{', '.join(SUPPORTED_VERSIONS)}", "MSH^1^12")
        processing = value(message, msh, 11).upper()
        if processing not in PROCESSING_IDS:
            raise rejected(UNSUPPORTED_PROCESSING_ID,
                           f"MSH-11 processing ID {processing!r} is not supported; send P, "
                           "T or D", "MSH^1^11")
        message_type, _, trigger = event.partition("^")
        module = HANDLERS.get(message_type)
        if module is None:
            raise rejected(UNSUPPORTED_MESSAGE_TYPE,
                           f"MSH-9 message type {message_type!r} is not supported; this "
                           f"server accepts {', '.join(sorted(HANDLERS))}", "MSH^1^9")
        if trigger not in module.TRIGGERS:
            raise rejected(UNSUPPORTED_EVENT_CODE,
                           f"MSH-9 trigger event {event!r} is not supported; for "
                           f"{message_type} send {', '.join(sorted(module.TRIGGERS))}",
                           "MSH^1^9")
        return module

    def _audit(self, event: str, actor: str, peer: _Peer, outcome: str, detail: str,
               handled: Handled | None = None, *, role: str = "emr") -> None:
        if peer.certificate:
            detail = f"{detail}; over TLS, certificate {peer.certificate}"
        self.archive.audit(_printable(f"hl7 {event}".strip())[:32], _printable(actor),
                           _printable(handled.patient_id) if handled else "",
                           handled.study_instance_uid if handled else "", _printable(detail),
                           role=role, source=peer.address, outcome=outcome)


def _printable(text: str) -> str:
    """`text` with control characters written as \\xNN: what a sender put in a value
    reaches the audit trail readable, and storable (PostgreSQL text refuses NUL)."""
    return "".join(c if ord(c) >= 0x20 else f"\\x{ord(c):02x}" for c in text)
