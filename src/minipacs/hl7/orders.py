"""What ORM^O01 and OMI^O23 share: order groups, order control, and the one call that
writes an order.

An order group is an ORC with the OBR, TQ1, ZDS and IPC segments that follow it (HL7
v2.5 §4.4.1 ORM, §4.4.6 OMI). ORC-1 order control (table 0119) says what to do:
NW schedules new procedure steps; CA, OC and DC cancel them; XO, XX and SC change them
(SC with ORC-5 order status CA or DC cancels). Every step of every group is checked
before the first is written, so a message is applied whole or not at all (short of a
crash between two steps, when resending the message completes it: writes replace).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hl7.containers import Message, Segment

from minipacs.access.roles import Action
from minipacs.emr.orders import Orders
from minipacs.errors import NotFound
from minipacs.hl7.acks import (
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    application_error,
    rejected,
)
from minipacs.hl7.context import Handled, MessageContext
from minipacs.hl7.segments import (
    OtherIdentifier,
    PatientFields,
    dicom_date,
    dicom_time,
    first_segment,
    patient_fields,
    person_name,
    value,
)
from minipacs.worklist import Code, OtherPatientID, WorklistItem, validated

NEW = frozenset({"NW"})
CANCEL = frozenset({"CA", "OC", "DC"})
CHANGE = frozenset({"XO", "XX", "SC"})
_CANCELLED_STATUS = frozenset({"CA", "DC"})  # ORC-5, table 0038


@dataclass
class OrderGroup:
    orc: Segment
    obr: Segment | None = None
    tq1: Segment | None = None
    zds: Segment | None = None
    ipcs: list[Segment] = field(default_factory=list)


def order_groups(message: Message) -> list[OrderGroup]:
    """The message's order groups; AR 100 when an OBR, TQ1 or IPC comes before any ORC,
    AE 101 when there is no ORC at all."""
    groups: list[OrderGroup] = []
    for segment in message:
        name = str(segment[0]).strip()
        if name == "ORC":
            groups.append(OrderGroup(segment))
        elif name in ("OBR", "TQ1", "ZDS", "IPC"):
            if not groups:
                raise rejected(SEGMENT_SEQUENCE_ERROR,
                               f"{name} segment before any ORC: each order starts with ORC",
                               name)
            group = groups[-1]
            if name == "IPC":
                group.ipcs.append(segment)
            elif getattr(group, name.lower()) is None:
                setattr(group, name.lower(), segment)
    if not groups:
        raise application_error(REQUIRED_FIELD_MISSING, "the message has no ORC segment",
                                "ORC")
    return groups


def order_control(message: Message, group: OrderGroup) -> str:
    """"new", "cancel" or "change", from ORC-1 (and ORC-5 for SC)."""
    control = value(message, group.orc, 1).upper()
    if control in NEW:
        return "new"
    if control in CANCEL or (control == "SC" and
                             value(message, group.orc, 5).upper() in _CANCELLED_STATUS):
        return "cancel"
    if control in CHANGE:
        return "change"
    raise rejected(TABLE_VALUE_NOT_FOUND,
                   f"ORC-1 order control {control!r} is not supported; send NW (new), "
                   "CA/OC/DC (cancel) or XO/XX/SC (change)", "ORC^1^1")


def code_of(message: Message, segment: Segment | None, field_no: int, rep: int = 1
            ) -> Code | None:
    """A CE/CWE (code^text^coding system) as a DICOM code item; None without a code
    or a coding system (PS3.3 Table 8.8-1 needs both)."""
    code, text, scheme = (value(message, segment, field_no, rep, c) for c in (1, 2, 3))
    if not code or not scheme:
        return None
    return Code(code, scheme, text[:64])


def scheduled_start(message: Message, group: OrderGroup) -> tuple[str, str]:
    """Scheduled date and time: TQ1-7 (v2.5), else the start of OBR-27 or ORC-7 (TQ-4,
    v2.3), else OBR-36 (scheduled date/time)."""
    for segment, field_no, component, where in (
            (group.tq1, 7, 1, "TQ1-7"), (group.obr, 27, 4, "OBR-27"),
            (group.orc, 7, 4, "ORC-7"), (group.obr, 36, 1, "OBR-36")):
        text = value(message, segment, field_no, 1, component)
        if text:
            return dicom_date(text, where), dicom_time(text)
    return "", ""


def base_item(message: Message, patient: PatientFields, group: OrderGroup) -> WorklistItem:
    """The parts of a worklist item every step of `group` shares: patient, referring
    physician (PV1-8, else OBR-16), requested procedure (OBR-4) and scheduled start."""
    pv1 = first_segment(message, "PV1")
    referring = (person_name(message, pv1, 8, first_component=2)
                 or person_name(message, group.obr, 16, first_component=2))
    procedure = code_of(message, group.obr, 4)
    description = value(message, group.obr, 4, 1, 2)
    date, time = scheduled_start(message, group)
    return WorklistItem(
        other_patient_ids=tuple(OtherPatientID(i.value, i.issuer) for i in patient.other_ids
                                if i.issuer),
        patient_id=patient.patient_id, patient_name=patient.patient_name,
        issuer_of_patient_id=patient.issuer_of_patient_id,
        patient_birth_date=patient.patient_birth_date, patient_sex=patient.patient_sex,
        referring_physician_name=referring,
        requested_procedure_description=description[:64],
        scheduled_procedure_step_description=description[:64],
        requested_procedure_codes=(procedure,) if procedure else (),
        scheduled_start_date=date, scheduled_start_time=time,
    )


def write_order(ctx: MessageContext, item: WorklistItem, control: str) -> WorklistItem:
    """THE one call that turns an HL7 order into the order service (emr/orders.py), for
    the sender's principal: permitted and audited in the change's own transaction. A NW
    for a step that exists (a resent message) replaces it, as a change does."""
    orders = Orders(ctx.archive, ctx.worklist)
    step_id = item.scheduled_procedure_step_id
    if control == "cancel":
        return orders.cancel(step_id).item
    if control == "new":
        try:
            ctx.worklist.get(step_id)
        except NotFound:
            return orders.place(item).item
    return orders.update(step_id, item).item


def apply_orders(ctx: MessageContext, steps: list[tuple[str, WorklistItem]]) -> Handled:
    """Check every (control, item) step, then write them all; one audit detail."""
    ctx.archive.permit(None, Action.MANAGE_WORKLIST)
    checked: list[tuple[str, WorklistItem]] = []
    for control, item in steps:
        if control == "cancel":
            checked.append((control, item))
            ctx.worklist.get(item.scheduled_procedure_step_id)  # NotFound: AE 204
            continue
        item = validated(item)
        if control == "change":
            existing = ctx.worklist.get(item.scheduled_procedure_step_id)
            item = replace(item, status=existing.status)
        checked.append((control, item))
    written = [(control, write_order(ctx, item, control))
               for control, item in checked]
    detail = "; ".join(f"{control} step {item.scheduled_procedure_step_id} accession "
                       f"{item.accession_number or '-'} modality {item.modality or '-'}"
                       for control, item in written)
    first = written[0][1]
    return Handled(detail, first.patient_id, first.study_instance_uid)


def order_patient(ctx: MessageContext) -> PatientFields:
    return patient_fields(ctx.message, ctx.systems)


def other_ids_note(other_ids: tuple[OtherIdentifier, ...]) -> str:
    """The patient's other identifiers (CCCD, BHYT...) for the audit detail; the order
    keeps them as its OtherPatientIDsSequence too."""
    if not other_ids:
        return ""
    return "; other IDs " + ", ".join(
        f"{i.issuer or i.type_code}:{i.value}" + (f" (flagged: {i.problem})" if i.problem
                                                  else "")
        for i in other_ids)
