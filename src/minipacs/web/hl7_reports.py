"""The ORU^R01 sender's state for admins (`GET /admin/hl7-reports`, hl7/oru_sender.py):
is it on, to which peer, how many reports are pending or sent, and why the failing
ones failed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from minipacs.hl7.oru_sender import outbox_counts
from minipacs.web.auth import acting_archive

router = APIRouter(tags=["admin"])


@router.get("/admin/hl7-reports",
            summary="Reports as HL7 ORU^R01: pending and sent counts, failing ones")
def hl7_reports_status(request: Request) -> dict[str, Any]:
    peer = request.app.state.settings.hl7_report_peer
    return {"enabled": bool(peer), "peer": peer or None,
            **outbox_counts(acting_archive(request))}
