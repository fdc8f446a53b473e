"""ORM^O01, general order (HL7 v2.3-v2.5 §4.4.1), as IHE Scheduled Workflow uses it
(RAD-2/RAD-4, IHE RAD TF-2 Table 4.4-1): one order group per requested procedure.

Per group: accession number OBR-18 (placer field 1; else ORC-3 filler, else ORC-2
placer order number), requested procedure ID OBR-19 (else the accession), scheduled
procedure step ID OBR-20 (else the accession, so a later CA finds the step),
modality OBR-24 (diagnostic service section), Study Instance UID ZDS-1 (else one is
generated), requested procedure OBR-4. ORM names no station: the step is for any.
"""

from __future__ import annotations

from dataclasses import replace

from minipacs.hl7.acks import REQUIRED_FIELD_MISSING, application_error
from minipacs.hl7.context import Handled, MessageContext
from minipacs.hl7.orders import (
    apply_orders,
    base_item,
    order_control,
    order_groups,
    order_patient,
    other_ids_note,
)
from minipacs.hl7.segments import value
from minipacs.worklist import WorklistItem

MESSAGE_TYPE = "ORM"
TRIGGERS = frozenset({"O01"})


def handle(ctx: MessageContext) -> Handled:
    message = ctx.message
    patient = order_patient(ctx)
    steps: list[tuple[str, WorklistItem]] = []
    for number, group in enumerate(order_groups(message), start=1):
        control = order_control(message, group)
        accession = (value(message, group.obr, 18) or value(message, group.orc, 3)
                     or value(message, group.orc, 2))
        if not accession:
            raise application_error(
                REQUIRED_FIELD_MISSING,
                f"order {number} has no accession number (OBR-18, or ORC-3 / ORC-2)",
                "OBR^1^18")
        item = replace(
            base_item(message, patient, group),
            accession_number=accession,
            requested_procedure_id=value(message, group.obr, 19) or accession,
            scheduled_procedure_step_id=value(message, group.obr, 20) or accession,
            modality=value(message, group.obr, 24),
            study_instance_uid=value(message, group.zds, 1),
        )
        steps.append((control, item))
    handled = apply_orders(ctx, steps)
    return replace(handled, detail=handled.detail + other_ids_note(patient.other_ids))

