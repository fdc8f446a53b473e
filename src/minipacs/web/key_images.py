"""POST /dicom-web/studies/{study}/key-images: the viewer's "key image" button.

The body names the study's instances the radiologist marked; a Key Object Selection
document referencing them (dicom/key_objects.py) is built here and stored in the study
through the archive like any STOW-RS instance (permitted as `store`, audited). Reading the
referenced instances' attributes is a view of the study (permitted and audited as such).
The newest document of the study is the current selection (the viewer's "key images only").
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from starlette.concurrency import run_in_threadpool

from minipacs.archive import Archive
from minipacs.dicom.key_objects import COPIED, key_object_selection
from minipacs.errors import NotFound
from minipacs.web.auth import acting_archive
from minipacs.web.dicomweb import _uid, check_uid

_NEEDED = frozenset(
    f"{tag_for_keyword(k):08X}" for k in (*COPIED, "SpecificCharacterSet", "SOPClassUID",
                                           "SOPInstanceUID", "SeriesInstanceUID"))

router = APIRouter(prefix="/dicom-web", tags=["Reading"])


class KeyImagesBody(BaseModel):
    instances: list[str] = Field(min_length=1, max_length=1000,
                                 description="SOP Instance UIDs of the study's key images")


def _store_key_images(archive: Archive, study: str, instances: list[str]) -> dict[str, str]:
    images = []
    for sop in instances:
        texts = archive.metadata(study, sop_instance_uid=check_uid(sop, "SOPInstanceUID"))
        if not texts:
            raise NotFound(f"instance {sop} is not in study {study}")
        stored = json.loads(texts[0])
        # Only what the document copies: no bulk data (BulkDataURI) is read.
        images.append(Dataset.from_json({k: v for k, v in stored.items() if k in _NEEDED}))
    principal = archive.who(None)
    series_uid = generate_uid()
    data = key_object_selection(images, series_uid=series_uid, author=principal.name,
                                now=datetime.now(UTC))
    result = archive.ingest(data, received_from=f"key images by {principal.name}")
    return {"StudyInstanceUID": study, "SeriesInstanceUID": series_uid,
            "SOPInstanceUID": result.sop_instance_uid, "count": str(len(images))}


@router.post("/studies/{study}/key-images", summary="Store the study's key images as a KOS")
async def store_key_images(request: Request, body: KeyImagesBody,
                           study: str = _uid("StudyInstanceUID")) -> JSONResponse:
    """201 with the stored Key Object Selection's UIDs; 404 for an instance not in the
    study; 403 without the `store` permission."""
    archive = acting_archive(request)
    answer = await run_in_threadpool(_store_key_images, archive,
                                     check_uid(study, "StudyInstanceUID"), body.instances)
    return JSONResponse(answer, status_code=201)
