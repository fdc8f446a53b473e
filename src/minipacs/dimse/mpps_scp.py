"""Modality Performed Procedure Step SCP (PS3.4 Annex F): N-CREATE and N-SET from a
modality move its order (`emr/orders.py`) to IN PROGRESS, then COMPLETED or DISCONTINUED.

Statuses (PS3.4 F.7.2.1.2, F.7.2.2.2; PS3.7 C.4): a missing Type 1 attribute 0x0120
(Missing Attribute) naming it; a Performed Procedure Step Status that is not allowed
0x0106 (Invalid Attribute Value); an MPPS instance that exists 0x0111 (Duplicate SOP
Instance); an N-SET on one we do not know 0x0112 (No Such SOP Instance); an N-SET on a
final step (COMPLETED or DISCONTINUED), and an N-CREATE that matches no order, 0x0110
(Processing Failure; Error ID 0xA710 for the former, as PS3.4 F.7.2.2.2 names it).
The calling AE needs the `store` right (it is the modality that stores the images).
"""

from __future__ import annotations

import logging
from typing import Any

from pydicom.dataset import Dataset

from minipacs.archive import Archive
from minipacs.dimse.status import SUCCESS, status_dataset
from minipacs.emr.orders import Orders
from minipacs.errors import Conflict, Forbidden, InvalidRequest, MinipacsError, NotFound
from minipacs.worklist import COMPLETED, DISCONTINUED, IN_PROGRESS, Worklist

log = logging.getLogger(__name__)

INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_SOP_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
NOT_AUTHORISED = 0x0124
NO_LONGER_UPDATABLE = 0xA710  # Error ID: Performed Procedure Step may no longer be updated
# Type 1 attributes of the N-CREATE (PS3.4 Table F.7.2-1) minipacs needs.
_CREATE_REQUIRED = ("ScheduledStepAttributesSequence", "PerformedProcedureStepID",
                    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
                    "PerformedProcedureStepStatus", "Modality")


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def _failure(exc: MinipacsError, *, creating: bool) -> Dataset:
    if isinstance(exc, Forbidden):
        return status_dataset(NOT_AUTHORISED, str(exc))
    if isinstance(exc, InvalidRequest):
        return status_dataset(INVALID_ATTRIBUTE_VALUE, str(exc))
    if isinstance(exc, Conflict) and creating and "already exists" in str(exc):
        return status_dataset(DUPLICATE_SOP_INSTANCE, str(exc))
    if isinstance(exc, NotFound) and not creating:
        return status_dataset(NO_SUCH_SOP_INSTANCE, str(exc))
    status = status_dataset(PROCESSING_FAILURE, str(exc))
    if isinstance(exc, Conflict) and not creating:
        status.ErrorID = NO_LONGER_UPDATABLE
    return status


def handle_mpps_create(event: Any, archive: Archive, worklist: Worklist
                       ) -> tuple[int | Dataset, Dataset | None]:
    """EVT_N_CREATE on the Modality Performed Procedure Step SOP class."""
    uid = str(event.request.AffectedSOPInstanceUID or "")
    try:
        ds = event.attribute_list
        if not uid:
            return status_dataset(MISSING_ATTRIBUTE, "the N-CREATE needs an Affected SOP "
                                  "Instance UID (PS3.4 F.7.2.1.1)"), None
        missing = [k for k in _CREATE_REQUIRED if k not in ds or ds[k].is_empty]
        if missing:
            return status_dataset(MISSING_ATTRIBUTE, f"missing {', '.join(missing)}"), None
        status = _text(ds, "PerformedProcedureStepStatus")
        if status != IN_PROGRESS:
            return status_dataset(INVALID_ATTRIBUTE_VALUE,
                                  f"status {status!r}: an MPPS starts IN PROGRESS"), None
        steps = list(ds.ScheduledStepAttributesSequence)
        order = Orders(archive, worklist).start_performed_step(
            uid, step_ids=[_text(s, "ScheduledProcedureStepID") for s in steps],
            accession_numbers=[_text(s, "AccessionNumber") for s in steps],
            study_uids=[_text(s, "StudyInstanceUID") for s in steps])
    except MinipacsError as exc:
        log.warning("MPPS N-CREATE %s refused: %s", uid, exc)
        return _failure(exc, creating=True), None
    except (AttributeError, KeyError, TypeError, ValueError) as exc:  # undecodable list
        log.warning("MPPS N-CREATE %s: attribute list not understood: %s", uid, exc)
        return status_dataset(PROCESSING_FAILURE, f"attribute list not understood: "
                              f"{exc}"), None
    log.info("MPPS %s IN PROGRESS for order %s", uid, order.step_id)
    return SUCCESS, ds


def handle_mpps_set(event: Any, archive: Archive, worklist: Worklist
                    ) -> tuple[int | Dataset, Dataset | None]:
    """EVT_N_SET on the Modality Performed Procedure Step SOP class."""
    uid = str(event.request.RequestedSOPInstanceUID or "")
    try:
        ds = event.modification_list
        status = _text(ds, "PerformedProcedureStepStatus") or IN_PROGRESS
        if status not in (IN_PROGRESS, COMPLETED, DISCONTINUED):
            return status_dataset(INVALID_ATTRIBUTE_VALUE,
                                  f"status {status!r}: expected IN PROGRESS, COMPLETED or "
                                  "DISCONTINUED"), None
        order = Orders(archive, worklist).end_performed_step(uid, status)
    except MinipacsError as exc:
        log.warning("MPPS N-SET %s refused: %s", uid, exc)
        return _failure(exc, creating=False), None
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        log.warning("MPPS N-SET %s: modification list not understood: %s", uid, exc)
        return status_dataset(PROCESSING_FAILURE, f"modification list not understood: "
                              f"{exc}"), None
    log.info("MPPS %s %s for order %s", uid, status, order.step_id)
    return SUCCESS, ds
