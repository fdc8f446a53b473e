"""What a request may be before it reaches a route: a bounded head (431), a bounded
JSON body (413), no encoded traversal in the path (400). Each answers in the project's
error format, `{"error": "..."}`, and leaves the server serving."""

from __future__ import annotations

import json
from urllib.parse import unquote

import h11
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

# STOW-RS streams its body to disk under its own limit (MINIPACS_MAX_UPLOAD_BYTES).
_STREAMED_BODIES = ("/dicom-web/studies",)


class BoundedBody:
    """413 for a request body over `limit` bytes on the routes that read their body whole
    (the admin JSON routes): by Content-Length before reading, or by counting a chunked
    body as it arrives, so a 1 GB body is never held in memory (RFC 9110 §15.5.14)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(_STREAMED_BODIES):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._too_large(int(declared), scope, receive, send)
            return
        received = 0
        over = False

        async def counting_receive() -> Message:
            # Past the limit, the body is cut short (the route sees an empty end) and the
            # answer it then makes is replaced by the 413 below.
            nonlocal received, over
            if over:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    over = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def replacing_send(message: Message) -> None:
            if not over:
                await send(message)
            elif message["type"] == "http.response.start":
                await self._too_large(received, scope, receive, send, at_least=True)

        await self.app(scope, counting_receive, replacing_send)

    async def _too_large(self, size: int, scope: Scope, receive: Receive, send: Send,
                         at_least: bool = False) -> None:
        amount = f"at least {size}" if at_least else str(size)
        body = {"error": f"request body of {amount} bytes exceeds the limit of {self.limit} "
                         "bytes (MINIPACS_HTTP_MAX_JSON_BODY_BYTES)"}
        await JSONResponse(body, status_code=413, headers={"Connection": "close"})(
            scope, receive, send)


class RejectEncodedTraversal:
    """Refuse path segments that decode to a slash, a backslash or a dot-segment
    ('..%2F..', '%2E%2E') on the API routes: routing sees decoded paths, so such a
    segment would otherwise reach a route as a different path, or as an identifier that
    names a file-system step rather than a DICOM UID (RFC 3986 §3.3)."""

    # Not /admin/ae or /admin/worklist: an AE title may hold a '/' (PS3.5 AE VR).
    _API = ("/dicom-web", "/wado", "/admin/studies")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(self._API):
            raw = scope.get("raw_path") or str(scope["path"]).encode()
            for segment in bytes(raw).split(b"?")[0].split(b"/"):
                decoded = unquote(segment.decode("latin-1"))
                if "/" in decoded or "\\" in decoded or decoded in (".", ".."):
                    body = {"error": f"path segment {decoded[:80]!r} is not an identifier: a "
                                     "DICOM UID is digits and dots (PS3.5 §9.1); encoded "
                                     "slashes, backslashes and dot-segments are refused"}
                    await JSONResponse(body, status_code=400)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class HeaderLimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol answering 431 with the project's error body when the request
    line and headers exceed `h11_max_incomplete_event_size` (RFC 6585 §5), where uvicorn
    would answer a bare 400. The connection is closed either way: the rest of an
    oversized head is never read."""

    def send_400_response(self, msg: str) -> None:
        limit = self.config.h11_max_incomplete_event_size
        buffered = len(self.conn.trailing_data[0])
        if limit is None or buffered <= limit:
            super().send_400_response(msg)
            return
        body = json.dumps({"error": f"request line and headers exceed {limit} bytes "
                                    "(MINIPACS_HTTP_MAX_HEADER_BYTES); send fewer or shorter "
                                    "headers or a shorter URL"}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                   (b"content-length", str(len(body)).encode())]
        self.transport.write(self.conn.send(h11.Response(
            status_code=431, headers=headers, reason=b"Request Header Fields Too Large")) or b"")
        self.transport.write(self.conn.send(h11.Data(data=body)) or b"")
        self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        self.transport.close()
