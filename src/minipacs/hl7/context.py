"""What a message handler receives, and what it hands back to be acknowledged and audited."""

from __future__ import annotations

from dataclasses import dataclass

from hl7.containers import Message

from minipacs.archive import Archive
from minipacs.patient_identity import IdentitySystems
from minipacs.worklist import Worklist


@dataclass(frozen=True)
class MessageContext:
    """One admitted message: `archive` acts for the sender's principal; `event` is
    MSH-9 as TYPE^TRIGGER, `control_id` MSH-10."""

    message: Message
    event: str
    control_id: str
    archive: Archive
    worklist: Worklist
    systems: IdentitySystems

    @property
    def reason(self) -> str:
        """Why a change is made, as the audit trail and reconciliation record it."""
        return f"HL7 {self.event} message {self.control_id} from {self.archive.who(None).name}"


@dataclass(frozen=True)
class Handled:
    """What a handler did: the audit event's patient, study and detail."""

    detail: str
    patient_id: str = ""
    study_instance_uid: str = ""
