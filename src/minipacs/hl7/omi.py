"""OMI^O23, imaging order (HL7 v2.5 §4.4.6), as IHE Scheduled Workflow.b uses it
(RAD-4 Procedure Scheduled, IHE RAD TF-2 §4.4.4.2): each IPC segment (imaging
procedure control, §4.5.6) of an order group is one scheduled procedure step.

IPC-1 accession identifier, IPC-2 requested procedure ID, IPC-3 Study Instance UID,
IPC-4 scheduled procedure step ID, IPC-5 modality, IPC-6 protocol codes, IPC-9
scheduled station AE title. The requested procedure (OBR-4), start (TQ1-7) and
patient (PID) are shared by the group's steps.
"""

from __future__ import annotations

from dataclasses import replace

from minipacs.hl7.acks import REQUIRED_FIELD_MISSING, application_error
from minipacs.hl7.context import Handled, MessageContext
from minipacs.hl7.orders import (
    apply_orders,
    base_item,
    code_of,
    order_control,
    order_groups,
    order_patient,
    other_ids_note,
)
from minipacs.hl7.segments import repetitions, value
from minipacs.worklist import WorklistItem

MESSAGE_TYPE = "OMI"
TRIGGERS = frozenset({"O23"})
_REQUIRED = ((1, "accession identifier"), (2, "requested procedure ID"),
             (3, "Study Instance UID"), (4, "scheduled procedure step ID"))


def handle(ctx: MessageContext) -> Handled:
    message = ctx.message
    patient = order_patient(ctx)
    steps: list[tuple[str, WorklistItem]] = []
    for number, group in enumerate(order_groups(message), start=1):
        control = order_control(message, group)
        if not group.ipcs:
            raise application_error(
                REQUIRED_FIELD_MISSING,
                f"order {number} has no IPC segment: OMI^O23 carries each scheduled "
                "procedure step in one (IHE Scheduled Workflow.b)", "IPC")
        base = base_item(message, patient, group)
        for seq, ipc in enumerate(group.ipcs, start=1):
            for field_no, name in _REQUIRED:
                if not value(message, ipc, field_no):
                    raise application_error(REQUIRED_FIELD_MISSING,
                                            f"IPC-{field_no} ({name}) is empty in IPC "
                                            f"segment {seq} of order {number}",
                                            f"IPC^{seq}^{field_no}")
            protocols = tuple(code for rep in range(1, repetitions(ipc, 6) + 1)
                              if (code := code_of(message, ipc, 6, rep)) is not None)
            description = value(message, ipc, 6, 1, 2)
            steps.append((control, replace(
                base,
                accession_number=value(message, ipc, 1),
                requested_procedure_id=value(message, ipc, 2),
                study_instance_uid=value(message, ipc, 3),
                scheduled_procedure_step_id=value(message, ipc, 4),
                modality=value(message, ipc, 5),
                scheduled_protocol_codes=protocols,
                scheduled_procedure_step_description=(
                    description[:64] or base.scheduled_procedure_step_description),
                scheduled_station_ae_title=value(message, ipc, 9),
            )))
    handled = apply_orders(ctx, steps)
    return replace(handled, detail=handled.detail + other_ids_note(patient.other_ids))
