"""What a request may be before it reaches a route: a bounded head (431), a bounded
JSON body (413), no encoded traversal in the path (400). Each answers in the project's
error format, `{"error": "..."}`, and leaves the server serving."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from minipacs.config import Settings
from minipacs.web.security_headers import SecurityHeaders, with_headers

# STOW-RS streams its body to disk under its own limit (MINIPACS_MAX_UPLOAD_BYTES).
_STREAMED_BODIES = ("/dicom-web/studies",)


_API = ("/dicom-web", "/wado", "/admin")
_SLASH_OK = ("/admin/ae", "/admin/worklist")


class RequestEdge:
    """The app's outermost ASGI layer: what were three (`SecurityHeaders`,
    `RejectUnsafeUrl`, `BoundedBody`), each a coroutine per request and one a wrapped
    `send`, in one (docs/performance.md, "QIDO and per-request cost, fourth pass").
    Outside Starlette's ServerErrorMiddleware, so an unexpected 500 gets the headers too.

    - Security headers (`security_headers.py`) on every `http.response.start`.
    - Unsafe URLs refused with 400 on the API routes (`unsafe_url_problem`).
    - A request body over `limit` bytes answered 413 on the routes that read their body
      whole (the admin JSON routes): by Content-Length before reading, or by counting a
      chunked body as it arrives, so a 1 GB body is never held in memory (RFC 9110
      §15.5.14). A body with a Content-Length within the limit is not counted: the HTTP
      parser never delivers more than the declared length (RFC 9112 §6.2), and a request
      with neither Content-Length nor Transfer-Encoding has no body (RFC 9112 §6.3)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.limit = settings.http_max_json_body_bytes
        self.headers = SecurityHeaders(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.headers.for_request(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = with_headers(message, extra)
            await send(message)

        path = str(scope.get("path", ""))
        if path.startswith(_API):
            error = unsafe_url_problem(scope, path)
            if error:
                await JSONResponse({"error": error}, status_code=400)(
                    scope, receive, send_with_headers)
                return
        if path.startswith(_STREAMED_BODIES):
            await self.app(scope, receive, send_with_headers)
            return
        declared = b""
        chunked = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared.isdigit() and int(declared) > self.limit:
            await self._too_large(int(declared), scope, receive, send_with_headers)
            return
        if not chunked:
            await self.app(scope, receive, send_with_headers)
            return
        await self._counted(scope, receive, send_with_headers)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        over = False

        async def counting_receive() -> Message:
            # Past the limit the body reads as a disconnect, never as a shorter body that
            # might still parse: the route cannot run, and the error it answers is
            # replaced by the 413 below.
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    over = True
                    return {"type": "http.disconnect"}
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


def unsafe_url_problem(scope: Scope, path: str) -> str | None:
    """Why the URL is refused on an API route, or None. Refused: URLs no identifier or
    DICOM value can need:
    - a path segment that decodes to a slash, a backslash or a dot-segment ('..%2F..',
      '%2E%2E'): routing sees decoded paths, so such a segment would reach a route as a
      different path, or as an identifier naming a file-system step (RFC 3986 §3.3);
      not checked below /admin/ae and /admin/worklist, whose AE titles and step IDs may
      hold a '/';
    - a NUL character (%00) anywhere in the path or query: no DICOM string value holds
      one (PS3.5 §6.1.2), and PostgreSQL cannot store or compare it."""
    raw = bytes(scope.get("raw_path") or path.encode()).split(b"?")[0]
    if b"%" in raw or b"\\" in raw or b"/." in raw or b"\0" in raw:
        check_slashes = not path.startswith(_SLASH_OK)
        for segment in raw.split(b"/"):
            decoded = unquote(segment.decode("latin-1"))
            if "\0" in decoded:
                return (f"path segment {decoded[:80]!r} contains a NUL character, which "
                        "no identifier or DICOM value holds (PS3.5 §6.1.2)")
            if check_slashes and ("/" in decoded or "\\" in decoded
                                  or decoded in (".", "..")):
                return (f"path segment {decoded[:80]!r} is not an identifier: a DICOM UID "
                        "is digits and dots (PS3.5 §9.1); encoded slashes, backslashes and "
                        "dot-segments are refused")
    query_string = bytes(scope.get("query_string", b""))
    if b"%00" in query_string or b"\0" in query_string:
        query = unquote(query_string.decode("latin-1"))
        name = next((pair.split("=", 1)[0] for pair in query.split("&") if "\0" in pair),
                    "?")
        return (f"query parameter {name[:80]!r} contains a NUL character (%00), which no "
                "DICOM value holds (PS3.5 §6.1.2)")
    return None


class HeaderLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the request line plus headers: past
    `max_head_bytes` it answers 431 in the project's error format (RFC 6585 §5) and
    closes the connection, the rest of the head never read. httptools itself has no
    such bound (it would buffer a 100 MB header value whole); h11 has one but streams
    large responses markedly slower, so the bound is counted here, per received chunk:
    memory stays within the limit plus one socket read."""

    max_head_bytes = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._head_bytes = 0
        self._in_head = False
        super().__init__(*args, **kwargs)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        # Counts the whole chunk while the head is unfinished: at most one read more than
        # the head itself, never less.
        self._head_bytes += len(data)
        if self._head_bytes > self.max_head_bytes:
            self._in_head = False
            self._send_431()

    def _send_431(self) -> None:
        limit = self.max_head_bytes
        body = json.dumps({"error": f"request line and headers exceed {limit} bytes "
                                    "(MINIPACS_HTTP_MAX_HEADER_BYTES); send fewer or shorter "
                                    "headers or a shorter URL"}).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.transport.close()


def header_limited_protocol(max_head_bytes: int) -> type[HeaderLimitedProtocol]:
    """The uvicorn protocol class bounding request heads to `max_head_bytes`."""
    return type("HeaderLimitedProtocol", (HeaderLimitedProtocol,),
                {"max_head_bytes": max_head_bytes})
