"""Keeping the EMR in sync over HTTP: the change feed (`GET /changes`) and the FHIR
push's state for admins (`GET /admin/fhir-push`, `POST /admin/fhir-push/retry`).

The feed is minipacs' own JSON (no standard defines one for DICOM archives); its
order and resumability are `emr/changes.py`'s.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from minipacs.emr.changes import MAX_CHANGES_PER_PAGE, ChangeRecord
from minipacs.emr.fhir_push import FhirPushQueue, PushState, PushStatus
from minipacs.errors import QueryError
from minipacs.web.auth import acting_archive

router = APIRouter(tags=["emr"])
_STATES: dict[str, tuple[PushState, ...]] = {
    "open": ("waiting", "due", "failed"), "waiting": ("waiting",), "due": ("due",),
    "failed": ("failed",), "pushed": ("pushed",), "deleted": ("deleted",),
    "all": ("waiting", "due", "failed", "pushed", "deleted"),
}


def _time(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value is not None else None


def _change(c: ChangeRecord) -> dict[str, Any]:
    return {"seq": c.seq, "at": _time(c.at), "kind": c.kind, "level": c.level,
            "study_instance_uid": c.study_instance_uid,
            "series_instance_uid": c.series_instance_uid or None,
            "sop_instance_uid": c.sop_instance_uid or None,
            "patient_id": c.patient_id, "issuer_of_patient_id": c.issuer_of_patient_id}


@router.get("/changes", summary="Change feed: studies, series and instances created, "
            "updated or deleted, in order, resumable with since")
def changes(
    request: Request,
    since: Annotated[int, Query(description="Sequence number of the last change already "
                                "seen (0: from the beginning); pass the answer's `last`")] = 0,
    limit: Annotated[int, Query(description=f"At most this many changes (1 to "
                                f"{MAX_CHANGES_PER_PAGE})")] = 100,
) -> dict[str, Any]:
    if not 1 <= limit <= MAX_CHANGES_PER_PAGE:
        raise QueryError(f"limit={limit}: give 1 to {MAX_CHANGES_PER_PAGE}")
    page = acting_archive(request).changes(since, limit)
    return {"changes": [_change(c) for c in page.changes], "last": page.last,
            "done": page.done}


def _status(s: PushStatus) -> dict[str, Any]:
    return {"study_instance_uid": s.study_instance_uid, "patient_id": s.patient_id,
            "state": s.state, "changed_seq": s.changed_seq, "pushed_seq": s.pushed_seq,
            "stable_at": _time(s.stable_at), "next_attempt_at": _time(s.next_attempt_at),
            "attempts": s.attempts, "last_error": s.last_error or None,
            "last_attempt_at": _time(s.last_attempt_at), "pushed_at": _time(s.pushed_at),
            "remote_patient": s.remote_patient or None,
            "remote_imaging_study": s.remote_imaging_study or None}


@router.get("/admin/fhir-push", tags=["admin"],
            summary="FHIR push: studies waiting, due or failed (with the last error)")
def fhir_push_status(
    request: Request,
    state: Annotated[str, Query(description="open (waiting, due, failed; default), "
                                "waiting, due, failed, pushed, deleted or all")] = "open",
) -> dict[str, Any]:
    states = _STATES.get(state)
    if states is None:
        raise QueryError(f"state={state[:40]!r}: give one of {', '.join(_STATES)}")
    settings = request.app.state.settings
    rows = FhirPushQueue(acting_archive(request)).status(states)
    return {"enabled": bool(settings.fhir_push_url), "url": settings.fhir_push_url,
            "studies": [_status(s) for s in rows]}


@router.post("/admin/fhir-push/retry", tags=["admin"],
             summary="FHIR push: retry failed studies now, or queue one study")
def fhir_push_retry(
    request: Request,
    study: Annotated[str | None, Query(description="Study Instance UID to (re)push; "
                                       "none: every failed study")] = None,
) -> dict[str, Any]:
    queued = FhirPushQueue(acting_archive(request)).retry(study)
    return {"queued": queued}
