"""The viewer's hanging protocols over HTTP (viewer_settings/hanging_protocols.py decides).

GET  /viewer-settings/hanging-protocols                    own + defaults (signed in)
PUT  /viewer-settings/hanging-protocols/mine/{protocol}     save one's own (signed in)
DELETE /viewer-settings/hanging-protocols/mine/{protocol}   forget one's own
PUT  /viewer-settings/hanging-protocols/defaults/{protocol} edit a default (manage-aes)
DELETE /viewer-settings/hanging-protocols/defaults/{protocol} back to the shipped one
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from minipacs.viewer_settings.hanging_protocols import HangingProtocols
from minipacs.web.auth import acting_archive

router = APIRouter(prefix="/viewer-settings/hanging-protocols", tags=["Reading"])
_BODY = Body(description="the protocol (docs/reading.md, 'Hanging protocols')")


def _protocols(request: Request) -> HangingProtocols:
    return HangingProtocols(acting_archive(request))


@router.get("", summary="The hanging protocols that apply to the caller")
async def list_protocols(request: Request) -> JSONResponse:
    """The caller's own protocols (scope "own") first, then the defaults."""
    found = await run_in_threadpool(_protocols(request).applicable)
    return JSONResponse({"protocols": [p.as_json() for p in found]})


@router.put("/mine/{protocol}", summary="Save one of the caller's own hanging protocols")
async def save_own(request: Request, protocol: str, body: dict[str, Any] = _BODY
                   ) -> JSONResponse:
    """200 with the protocol as stored; 400 naming what is wrong in it."""
    saved = await run_in_threadpool(_protocols(request).save_own, protocol, body)
    return JSONResponse(saved.as_json())


@router.delete("/mine/{protocol}", summary="Delete one of the caller's own hanging protocols",
               status_code=204)
async def delete_own(request: Request, protocol: str) -> Response:
    await run_in_threadpool(_protocols(request).delete_own, protocol)
    return Response(status_code=204)


@router.put("/defaults/{protocol}", summary="Edit (or add) a default hanging protocol")
async def save_default(request: Request, protocol: str, body: dict[str, Any] = _BODY
                       ) -> JSONResponse:
    """Needs `manage-aes` (403 otherwise); replaces the shipped default of that name."""
    saved = await run_in_threadpool(_protocols(request).save_default, protocol, body)
    return JSONResponse(saved.as_json())


@router.delete("/defaults/{protocol}", summary="Drop an edited default hanging protocol",
               status_code=204)
async def delete_default(request: Request, protocol: str) -> Response:
    """A shipped default comes back as shipped; 404 when nothing was edited."""
    await run_in_threadpool(_protocols(request).delete_default, protocol)
    return Response(status_code=204)
