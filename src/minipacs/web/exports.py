"""`POST /exports/deidentified`: a de-identified export (PS3.15 Basic Profile and options)
as a ZIP, for the `research` role; the same as `minipacs export --deidentify`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from minipacs.deidentify.export import export_deidentified
from minipacs.deidentify.profile import ProfileOptions
from minipacs.web.auth import acting_archive, authenticate
from minipacs.web.dicomweb import check_uid

router = APIRouter(prefix="/exports", tags=["research"])


class ExportBody(BaseModel):
    study_uids: list[str] = Field(min_length=1, max_length=1000,
                                  description="Study Instance UIDs to export")
    retain_dates_shifted: bool = Field(
        False, description="Retain Longitudinal Temporal Information, Modified Dates option")
    retain_device_identity: bool = Field(False, description="Retain Device Identity option")
    clean_descriptors: bool = Field(False, description="Clean Descriptors option")
    include_burned_in: bool = Field(
        False, description="Export (flagged) ultrasound, secondary capture and "
        "BurnedInAnnotation=YES instances, after someone checked their pixels")


@router.post(
    "/deidentified", summary="De-identified export of studies, as a ZIP of DICOM files",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}},
                     "description": "The ZIP; X-Export-Id names its mapping in the archive, "
                     "X-Refused-Instances counts instances left out (burned-in text)"},
               400: {"description": "a study UID is malformed"},
               403: {"description": "the role may not export"},
               404: {"description": "a study is not in the archive, or nothing is left"}})
def deidentified_export(request: Request, body: Annotated[ExportBody, Body()]
                        ) -> FileResponse:
    uids = [check_uid(uid, "StudyInstanceUID") for uid in body.study_uids]
    archive = acting_archive(request)
    principal = authenticate(request)
    spool = Path(request.app.state.settings.data_dir) / "exports"
    spool.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=spool))
    out = folder / "deidentified.zip"
    options = ProfileOptions(body.retain_dates_shifted, body.retain_device_identity,
                             body.clean_descriptors)
    try:
        summary = export_deidentified(archive, uids, options, out, actor=principal.actor,
                                      include_burned_in=body.include_burned_in)
    except BaseException:
        _remove(folder)
        raise
    return FileResponse(
        out, media_type="application/zip", filename=f"export-{summary.export_id}.zip",
        headers={"X-Export-Id": summary.export_id,
                 "X-Refused-Instances": str(len(summary.refused))},
        background=BackgroundTask(_remove, folder))


def _remove(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink(missing_ok=True)
    folder.rmdir()
