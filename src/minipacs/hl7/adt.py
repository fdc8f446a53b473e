"""ADT^A08 / ADT^A31 (update patient information, HL7 v2.5 §3.3.8, §3.3.31) and
ADT^A40 (merge patient, patient identifier list, §3.3.40) into reconciliation.

A08/A31: the patient named by PID-3's hospital ID gets the name (PID-5), birth date
(PID-7), sex (PID-8) and other identifiers (PID-3's CCCD/BHYT repetitions) the message
gives: `archive.update_patient(key, changes, reason=...)`. A40: the record named by
MRG-1 (prior patient identifier list) is merged into the one named by PID-3:
`archive.merge_patients(source, target, reason=...)`. Each PID/MRG pair is one merge.
Keys are (PatientID, IssuerOfPatientID).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hl7.containers import Message

from minipacs.access.roles import Action
from minipacs.hl7.acks import (
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    UNSUPPORTED_MESSAGE_TYPE,
    application_error,
    rejected,
)
from minipacs.hl7.context import Handled, MessageContext
from minipacs.hl7.segments import (
    OtherIdentifier,
    PatientFields,
    all_segments,
    identifiers,
    patient_fields,
)
from minipacs.patient_identity import IdentitySystems

MESSAGE_TYPE = "ADT"
TRIGGERS = frozenset({"A08", "A31", "A40"})
PatientKey = tuple[str, str]  # (PatientID, IssuerOfPatientID)


@dataclass(frozen=True)
class PatientUpdate:
    """New demographics for one patient; empty strings: not given, left as they are."""

    key: PatientKey
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    other_ids: tuple[OtherIdentifier, ...] = ()

    @property
    def changes(self) -> dict[str, Any]:
        """The given values by DICOM keyword; OtherPatientIDs as (value, issuer) pairs."""
        out: dict[str, Any] = {keyword: text for keyword, text in (
            ("PatientName", self.patient_name), ("PatientBirthDate", self.patient_birth_date),
            ("PatientSex", self.patient_sex)) if text}
        if self.other_ids:
            out["OtherPatientIDs"] = tuple((i.value, i.issuer) for i in self.other_ids)
        return out


@dataclass(frozen=True)
class PatientMerge:
    """Merge the record `source` (MRG-1) into `target` (PID-3)."""

    source: PatientKey
    target: PatientKey


def patient_update(message: Message, systems: IdentitySystems) -> PatientUpdate:
    """The PID of an A08/A31 as an update; `Hl7Problem` (AE) naming a bad field."""
    patient: PatientFields = patient_fields(message, systems)
    return PatientUpdate(patient.key, patient.patient_name, patient.patient_birth_date,
                         patient.patient_sex, patient.other_ids)


def patient_merges(message: Message, systems: IdentitySystems) -> list[PatientMerge]:
    """One merge per PID/MRG pair; AE 101 without MRG, AR 100 when they do not pair."""
    pids, mrgs = all_segments(message, "PID"), all_segments(message, "MRG")
    if not pids:
        raise application_error(REQUIRED_FIELD_MISSING, "the message has no PID segment",
                                "PID")
    if not mrgs:
        raise application_error(REQUIRED_FIELD_MISSING, "ADT^A40 has no MRG segment "
                                "naming the record to merge (MRG-1)", "MRG")
    if len(pids) != len(mrgs):
        raise rejected(SEGMENT_SEQUENCE_ERROR, f"ADT^A40 has {len(pids)} PID and "
                       f"{len(mrgs)} MRG segments; each PID needs its MRG", "MRG")
    merges = []
    for pid, mrg in zip(pids, mrgs, strict=True):
        target, _ = identifiers(message, pid, 3, systems, "PID-3")
        source, _ = identifiers(message, mrg, 1, systems, "MRG-1")
        merges.append(PatientMerge(source, target))
    return merges


def _reconciliation(ctx: MessageContext, name: str) -> Any:
    method = getattr(ctx.archive, name, None)
    if method is None:
        raise rejected(UNSUPPORTED_MESSAGE_TYPE,
                       f"{ctx.event} cannot be applied: reconciliation not available on "
                       f"this server (no {name})", "MSH^1^9")
    return method


def handle(ctx: MessageContext) -> Handled:
    if ctx.event.endswith("A40"):
        merges = patient_merges(ctx.message, ctx.systems)
        merge = _reconciliation(ctx, "merge_patients")
        ctx.archive.permit(None, Action.RECONCILE)
        for m in merges:
            merge(m.source, m.target, reason=ctx.reason)
        return Handled("; ".join(f"merged {m.source[0]} ({m.source[1] or '-'}) into "
                                 f"{m.target[0]} ({m.target[1] or '-'})" for m in merges),
                       merges[0].target[0])
    update = patient_update(ctx.message, ctx.systems)
    apply = _reconciliation(ctx, "update_patient")
    ctx.archive.permit(None, Action.RECONCILE)
    # Reconciliation corrects name, birth date and sex; national identifiers in PID-3
    # (CCCD, BHYT) are not corrected by an update yet (docs/conformance.md §5): they are
    # named in the audit detail instead.
    changes = {k: v for k, v in update.changes.items() if k != "OtherPatientIDs"}
    if changes:
        apply(update.key, changes, reason=ctx.reason)
    kept = "; other IDs not applied: " + ", ".join(
        f"{i.issuer or i.type_code}:{i.value}" for i in update.other_ids) \
        if update.other_ids else ""
    return Handled(f"updated {', '.join(changes) or 'nothing'}{kept}", update.key[0])
