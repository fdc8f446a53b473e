"""Acknowledgements (HL7 v2.5 §2.9.2 original mode, §2.15.5 ERR) and the HL7 door's
one mapping from problems to them.

AA: the message was processed. AE (application error): it was understood but could not
be applied (unknown order, invalid value); the sender may correct and resend. AR
(application reject): it was not processed at all (unsupported type, trigger, version,
character set, unauthorised sender, malformed). Every AE/AR carries an ERR segment:
ERR-2 where (segment^sequence^field), ERR-3 the HL7 table 0357 code, ERR-4 the severity
(table 0516: E), ERR-8 the user message saying what was wrong, repeated in MSA-3.
"""

from __future__ import annotations

from datetime import UTC, datetime

import hl7
from hl7.containers import Message

from minipacs.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    MinipacsError,
    NotFound,
    QueryError,
    StorageError,
    Unauthenticated,
)

ACCEPT, ERROR, REJECT = "AA", "AE", "AR"
# HL7 table 0357, message error condition codes (v2.5 §2.15.5.3).
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_PROCESSING_ID = "202"
UNSUPPORTED_VERSION_ID = "203"
UNKNOWN_KEY_IDENTIFIER = "204"
DUPLICATE_KEY_IDENTIFIER = "205"
APPLICATION_INTERNAL_ERROR = "207"
_CODE_TEXT = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    UNSUPPORTED_VERSION_ID: "Unsupported version id",
    UNKNOWN_KEY_IDENTIFIER: "Unknown key identifier",
    DUPLICATE_KEY_IDENTIFIER: "Duplicate key identifier",
    APPLICATION_INTERNAL_ERROR: "Application internal error",
}


class Hl7Problem(Exception):
    """Why a message gets AE or AR: `ack_code`, the table 0357 `error_code`, the user
    message (str(self)) and where (`location`: segment^sequence^field, e.g. PID^1^3)."""

    def __init__(self, ack_code: str, error_code: str, text: str, location: str = ""
                 ) -> None:
        super().__init__(text)
        self.ack_code = ack_code
        self.error_code = error_code
        self.location = location


def rejected(error_code: str, text: str, location: str = "") -> Hl7Problem:
    return Hl7Problem(REJECT, error_code, text, location)


def application_error(error_code: str, text: str, location: str = "") -> Hl7Problem:
    return Hl7Problem(ERROR, error_code, text, location)


def problem_of(exc: MinipacsError) -> Hl7Problem:
    """The one mapping of core errors to acknowledgements for this door."""
    if isinstance(exc, NotFound):
        return application_error(UNKNOWN_KEY_IDENTIFIER, str(exc))
    if isinstance(exc, Conflict):
        return application_error(DUPLICATE_KEY_IDENTIFIER, str(exc))
    if isinstance(exc, InvalidRequest | QueryError):
        return application_error(DATA_TYPE_ERROR, str(exc))
    if isinstance(exc, Forbidden | Unauthenticated):
        return rejected(APPLICATION_INTERNAL_ERROR, str(exc))
    if isinstance(exc, StorageError):  # transient: the sender should resend later
        return application_error(APPLICATION_INTERNAL_ERROR, str(exc))
    return application_error(APPLICATION_INTERNAL_ERROR, str(exc))


def acknowledgement(message: Message, problem: Hl7Problem | None, *,
                    application: str, facility: str = "") -> Message:
    """The ACK answering `message` (python-hl7's `create_ack`), with MSA-3 and ERR for a
    problem, and MSH-18 copied so a UTF-8 sender reads our UTF-8 text as such."""
    ack = message.create_ack(problem.ack_code if problem else ACCEPT,
                             application=application, facility=facility)
    charset = _field(message, "MSH", 18)
    if charset:
        ack.segment("MSH").assign_field(charset, 18)
    if problem is not None:
        _add_error(ack, problem)
    return ack


def unparsed_acknowledgement(problem: Hl7Problem, *, application: str) -> Message:
    """An ACK for bytes with no readable MSH (nothing to copy: MSA-2 stays empty)."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    ack = hl7.parse(f"MSH|^~\\&|{_safe(application)}||||{now}||ACK|"
                    f"{hl7.generate_message_control_id()}|P|2.5|||||||UNICODE UTF-8\r"
                    f"MSA|{problem.ack_code}|")
    _add_error(ack, problem)
    return ack


def _add_error(ack: Message, problem: Hl7Problem) -> None:
    text = _escaped(ack, str(problem))
    ack.segment("MSA").assign_field(text, 3)
    err = ack.create_segment([ack.create_field(["ERR"])])
    if problem.location:
        parts = problem.location.split("^")
        for component, value in enumerate(parts, start=1):
            err.assign_field(_escaped(ack, value), 2, 1, component)
    err.assign_field(problem.error_code, 3, 1, 1)
    err.assign_field(_CODE_TEXT.get(problem.error_code, ""), 3, 1, 2)
    err.assign_field("HL70357", 3, 1, 3)
    err.assign_field("E", 4)  # table 0516: error
    err.assign_field(text, 8)
    ack.append(err)


def _escaped(ack: Message, text: str) -> str:
    """`text` with the message's delimiters written as escape sequences (§2.7.4:
    \\F\\ \\S\\ \\T\\ \\R\\ \\E\\); other characters, Vietnamese letters too, stay UTF-8
    (python-hl7's `escape` would hex-encode them)."""
    _, field, repeat, component, subcomponent = ack.separators
    esc = ack.esc
    names = {esc: "E", field: "F", component: "S", subcomponent: "T", repeat: "R"}
    return "".join(f"{esc}{names[c]}{esc}" if c in names else " " if ord(c) < 0x20 else c
                   for c in text)


def _field(message: Message, segment: str, field: int) -> str:
    try:
        return str(message.extract_field(segment, 1, field)).strip()
    except (KeyError, IndexError):
        return ""


def _safe(text: str) -> str:
    return "".join(c for c in text if c not in "|^~\\&\r\n")[:40]


def encode(ack: Message) -> bytes:
    """The ACK's bytes: segments ended by carriage returns (§2.5.1), UTF-8."""
    return (str(ack) + "\r").encode("utf-8")
