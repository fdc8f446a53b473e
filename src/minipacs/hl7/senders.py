"""Who may send HL7 messages: sending application and facility (MSH-3, MSH-4), and
optionally the address they connect from.

HL7 v2 has no authentication of its own; like a calling AE title on the DICOM door, the
sending application names the peer and the source address pins it. Only senders listed
in `hl7_allowed_senders` are admitted (none by default: secure until configured); each
acts as a principal of kind `hl7` with the `emr` role, so the core's one permission
check and audit see it like any EMR account.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from minipacs.access.principal import Principal
from minipacs.access.roles import Role


@dataclass(frozen=True)
class AllowedSender:
    application: str
    facility: str
    host: str = ""  # "" : from any address


def parse_allowed_senders(text: str) -> tuple[AllowedSender, ...]:
    """`APP^FACILITY[@HOST],...` as sender entries; `ValueError` naming a bad entry."""
    senders = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, _, host = entry.partition("@")
        application, _, facility = name.partition("^")
        if not application.strip():
            raise ValueError(f"hl7_allowed_senders entry {entry!r} has no sending "
                             "application; write APP^FACILITY or APP^FACILITY@IP")
        senders.append(AllowedSender(application.strip(), facility.strip(), host.strip()))
    return tuple(senders)


def _addresses(host: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return set()


class SenderPolicy:
    def __init__(self, allowed: tuple[AllowedSender, ...]) -> None:
        self.allowed = allowed

    def admission_problem(self, application: str, facility: str, address: str) -> str:
        """Why a message from `application`^`facility` at `address` is refused ("" =
        admitted). An entry with an empty facility admits the application from any."""
        name = f"{application}^{facility}"
        if not self.allowed:
            return (f"sending application {name!r} is not allowed: no HL7 sender is "
                    "configured (MINIPACS_HL7_ALLOWED_SENDERS)")
        matches = [s for s in self.allowed if s.application == application
                   and s.facility in ("", facility)]
        if not matches:
            return (f"sending application {name!r} (MSH-3^MSH-4) is not in "
                    "MINIPACS_HL7_ALLOWED_SENDERS")
        if all(s.host and address not in _addresses(s.host) for s in matches):
            # The answer goes to whoever connected: it names their address, not the
            # pinned one (the admin finds that in MINIPACS_HL7_ALLOWED_SENDERS).
            return (f"sending application {name!r} is not allowed from {address} "
                    "(MINIPACS_HL7_ALLOWED_SENDERS pins it to another address)")
        return ""


def hl7_principal(application: str, facility: str, address: str) -> Principal:
    """An admitted HL7 sender: named APP^FACILITY, the `emr` role, from `address`."""
    return Principal("hl7", f"{application}^{facility}", Role.EMR, address)
