"""Modality Performed Procedure Step SCP (PS3.4 Annex F): a modality (pynetdicom as the
SCU) reports its step with N-CREATE then N-SET, and the order follows: IN PROGRESS,
then COMPLETED or DISCONTINUED; bad attributes get the statuses Annex F names."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest
from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from conftest import ServerProcess
from test_orders import service_request

MPPS = ModalityPerformedProcedureStep


@pytest.fixture(scope="module")
def emr(server: ServerProcess) -> Iterator[httpx.Client]:
    token = server.create_token("mpps-emr", "emr")
    with httpx.Client(base_url=f"{server.http_url}/fhir", timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


@pytest.fixture
def modality(server: ServerProcess) -> Iterator[Association]:
    ae = AE(ae_title="CT_MPPS")
    ae.add_requested_context(MPPS)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    yield assoc
    assoc.release()


def _order(emr: httpx.Client) -> tuple[str, str]:
    accession = ("MP" + uuid.uuid4().hex.upper())[:16]
    created = emr.post("/ServiceRequest", json=service_request(
        accession, {"reference": "Patient/BN2024000123.BV-2DDEMO"}))
    assert created.status_code == 201, created.text
    return accession, str(created.json()["id"])


def _step(server: ServerProcess, order_id: str) -> dict[str, Any]:
    item = server.http.get(f"/admin/worklist/{order_id}")
    assert item.status_code == 200, item.text
    return dict(item.json())


def _fhir_status(emr: httpx.Client, order_id: str) -> str:
    read = emr.get(f"/ServiceRequest/{order_id}")
    assert read.status_code == 200, read.text
    return str(ServiceRequest.model_validate(read.json()).status)


def in_progress(accession: str, **overrides: Any) -> Dataset:
    """An N-CREATE attribute list (PS3.4 Table F.7.2-1), the step scheduled by accession."""
    ds = Dataset()
    step = Dataset()
    step.AccessionNumber = accession
    step.StudyInstanceUID = generate_uid()
    step.ScheduledProcedureStepID = ""
    ds.ScheduledStepAttributesSequence = [step]
    ds.PatientID = "BN2024000123"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT_MPPS"
    ds.PerformedProcedureStepStartDate = "20261204"
    ds.PerformedProcedureStepStartTime = "093000"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    for keyword, value in overrides.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def _final(status: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20261204"
    ds.PerformedProcedureStepEndTime = "094500"
    return ds


def test_n_create_starts_the_order_and_n_set_completes_it(
    server: ServerProcess, emr: httpx.Client, modality: Association
) -> None:
    accession, order_id = _order(emr)
    uid = generate_uid()
    status, _ = modality.send_n_create(in_progress(accession), MPPS, uid)
    assert status.Status == 0x0000
    assert _step(server, order_id)["status"] == "IN PROGRESS"
    assert _fhir_status(emr, order_id) == "active"
    status, _ = modality.send_n_set(_final("COMPLETED"), MPPS, uid)
    assert status.Status == 0x0000
    assert _step(server, order_id)["status"] == "COMPLETED"
    assert _fhir_status(emr, order_id) == "completed"
    # PS3.4 F.7.2.2.2: a final step may no longer be updated
    status, _ = modality.send_n_set(_final("DISCONTINUED"), MPPS, uid)
    assert status.Status == 0x0110 and status.ErrorID == 0xA710
    assert _step(server, order_id)["status"] == "COMPLETED"
    events = server.http.get("/admin/audit", params={"action": "order-status"}).json()
    assert any(uid in e["detail"] and e["actor"] == "ae:CT_MPPS" for e in events)


def test_discontinued_step_puts_the_order_on_hold(
    server: ServerProcess, emr: httpx.Client, modality: Association
) -> None:
    accession, order_id = _order(emr)
    uid = generate_uid()
    assert modality.send_n_create(in_progress(accession), MPPS, uid)[0].Status == 0
    assert modality.send_n_set(_final("DISCONTINUED"), MPPS, uid)[0].Status == 0
    assert _step(server, order_id)["status"] == "DISCONTINUED"
    assert _fhir_status(emr, order_id) == "on-hold"


def test_bad_attributes_get_the_statuses_annex_f_names(
    server: ServerProcess, emr: httpx.Client, modality: Association
) -> None:
    accession, order_id = _order(emr)
    missing, _ = modality.send_n_create(in_progress(accession, Modality=None), MPPS,
                                        generate_uid())
    assert missing.Status == 0x0120 and "Modality" in missing.ErrorComment
    wrong, _ = modality.send_n_create(in_progress(accession,
                                                  PerformedProcedureStepStatus="COMPLETED"),
                                      MPPS, generate_uid())
    assert wrong.Status == 0x0106
    unscheduled, _ = modality.send_n_create(in_progress("NO-SUCH-ORDER"), MPPS,
                                            generate_uid())
    assert unscheduled.Status == 0x0110
    assert _step(server, order_id)["status"] == "SCHEDULED"  # nothing half-done

    uid = generate_uid()
    assert modality.send_n_create(in_progress(accession), MPPS, uid)[0].Status == 0
    twice, _ = modality.send_n_create(in_progress(accession), MPPS, uid)
    assert twice.Status == 0x0111
    unknown, _ = modality.send_n_set(_final("COMPLETED"), MPPS, generate_uid())
    assert unknown.Status == 0x0112
    bad_final, _ = modality.send_n_set(_final("DONE"), MPPS, uid)
    assert bad_final.Status == 0x0106
    assert _step(server, order_id)["status"] == "IN PROGRESS"
