"""Modality Worklist C-FIND SCP (PS3.4 Annex K): identifier → `Filter` → `Worklist.find`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from minipacs.dicom.item_matching import SequenceKey, keep_matching_items
from minipacs.dicom.json_model import dataset_from_json
from minipacs.dimse.cancel import CANCEL_CHECK_EVERY, cancelled
from minipacs.dimse.query_scp import identifier_filter, let_requests_in, pick_requested
from minipacs.dimse.status import (
    CANCEL,
    FIND_OUT_OF_RESOURCES,
    PENDING,
    find_failure,
    status_dataset,
)
from minipacs.dimse.storage_scp import peer_of
from minipacs.errors import MinipacsError
from minipacs.worklist import (
    IN_PROGRESS,
    Worklist,
    WorklistItem,
    kept_sequence_keys,
    sequences_model,
)

log = logging.getLogger(__name__)


def sps_status(order_status: str) -> str:
    """The order's state as Scheduled Procedure Step Status (0040,0020), whose defined
    terms (PS3.3 C.4.10) have STARTED where MPPS says IN PROGRESS."""
    return "STARTED" if order_status == IN_PROGRESS else order_status


def item_dataset(item: WorklistItem, matched: tuple[SequenceKey, ...] = ()) -> Dataset:
    """Every attribute minipacs keeps for a worklist item (PS3.4 Table K.6-1); sequences
    that `matched` keys matched hold only their matching items (PS3.4 C.2.2.2.6)."""
    model = sequences_model(item)
    keep_matching_items(model, matched)
    kept = dataset_from_json(model)
    step = kept.ScheduledProcedureStepSequence[0] if kept.get(
        "ScheduledProcedureStepSequence") else Dataset()
    sps = Dataset()
    sps.ScheduledStationAETitle = item.scheduled_station_ae_title
    sps.ScheduledProcedureStepStartDate = item.scheduled_start_date
    sps.ScheduledProcedureStepStartTime = item.scheduled_start_time
    sps.Modality = item.modality
    sps.ScheduledPerformingPhysicianName = item.scheduled_performing_physician_name
    sps.ScheduledProcedureStepDescription = item.scheduled_procedure_step_description
    sps.ScheduledProcedureStepID = item.scheduled_procedure_step_id
    sps.ScheduledProcedureStepStatus = sps_status(item.status)
    sps.ScheduledProtocolCodeSequence = step.get("ScheduledProtocolCodeSequence", Sequence())
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.AccessionNumber = item.accession_number
    ds.ReferringPhysicianName = item.referring_physician_name
    ds.PatientName = item.patient_name
    ds.PatientID = item.patient_id
    ds.IssuerOfPatientID = item.issuer_of_patient_id
    ds.OtherPatientIDsSequence = kept.get("OtherPatientIDsSequence", Sequence())
    ds.PatientBirthDate = item.patient_birth_date
    ds.PatientSex = item.patient_sex
    ds.StudyInstanceUID = item.study_instance_uid
    ds.RequestedProcedureID = item.requested_procedure_id
    ds.RequestedProcedureDescription = item.requested_procedure_description
    ds.RequestedProcedureCodeSequence = kept.get("RequestedProcedureCodeSequence", Sequence())
    ds.ReferencedStudySequence = kept.get("ReferencedStudySequence", Sequence())
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


def response_dataset(item: WorklistItem, requested: list[DataElement],
                     matched: tuple[SequenceKey, ...] = ()) -> Dataset:
    ds = pick_requested(item_dataset(item, matched), requested)
    ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def handle_worklist_find(
    event: Any, worklist: Worklist, max_results: int
) -> Iterator[tuple[int | Dataset, Any]]:
    """EVT_C_FIND on the Modality Worklist Information Model - FIND SOP class."""
    peer = peer_of(event)
    try:
        filt, requested = identifier_filter(event.identifier)
        items, ignored = worklist.find(filt, limit=max_results + 1)
        matched = kept_sequence_keys(filt)
    except MinipacsError as exc:
        log.warning("worklist C-FIND from %s refused: %s", peer, exc)
        yield find_failure(exc), None
        return
    except Exception as exc:  # a malformed identifier pydicom cannot decode
        log.warning("worklist C-FIND from %s failed: %s", peer, exc)
        yield status_dataset(0xC000, str(exc)), None
        return
    if ignored:
        log.info("worklist C-FIND from %s: no matching on %s (returned only)", peer,
                 ", ".join(ignored))
    truncated = len(items) > max_results
    items = items[:max_results]
    log.info("worklist C-FIND from %s: %d items%s", peer, len(items),
             " (truncated)" if truncated else "")
    for number, item in enumerate(items):
        if number % CANCEL_CHECK_EVERY == 0:
            let_requests_in(event.assoc)
        if cancelled(event):
            yield CANCEL, None
            return
        yield PENDING, response_dataset(item, requested, matched)
    if truncated:
        log.warning("worklist C-FIND from %s: more than %d matches (max_query_results)",
                    peer, max_results)
        yield status_dataset(FIND_OUT_OF_RESOURCES,
                             f"over {max_results} matches: narrow the query"), None
