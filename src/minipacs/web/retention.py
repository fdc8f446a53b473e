"""Admin API for retention and storage: delete a whole study (rows and blobs together,
audited); how many spooled blobs still wait for their upload.

DICOMweb (PS3.18) defines no delete transaction; this is an administrative route beside it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from minipacs.archive import Archive
from minipacs.dicom.uids import is_safe_uid
from minipacs.errors import QueryError
from minipacs.web.auth import acting_archive

router = APIRouter(prefix="/admin", tags=["admin"])


def _archive(request: Request) -> Archive:
    return acting_archive(request)


@router.delete("/studies/{study}", summary="Delete a study: its index rows and blobs, audited")
def delete_study(
    request: Request,
    archive: Annotated[Archive, Depends(_archive)],
    study: Annotated[str, Path(description="Study Instance UID")],
) -> dict[str, object]:
    if not is_safe_uid(study):
        raise QueryError(f"{study[:80]!r} is not a valid Study Instance UID")
    deleted = archive.delete_study(study)
    return {"study_instance_uid": study, "deleted_instances": deleted}


@router.get("/storage", summary="Blob store state: uploads still waiting in the local spool")
def storage_state(archive: Annotated[Archive, Depends(_archive)]) -> dict[str, object]:
    return {"store": repr(archive.store), "pending_uploads": archive.pending_uploads()}
