"""Keeping the EMR in sync over HTTP: the change feed (`GET /changes`).

The feed is minipacs' own JSON (no standard defines one for DICOM archives); its
order and resumability are `emr/changes.py`'s.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from minipacs.emr.changes import MAX_CHANGES_PER_PAGE, ChangeRecord
from minipacs.errors import QueryError
from minipacs.web.auth import acting_archive

router = APIRouter(tags=["emr"])


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
