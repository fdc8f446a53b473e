"""Security headers on every HTTP response (added by the outermost ASGI layer,
`request_bounds.RequestEdge`, so errors, redirects and static files get them too): no
MIME sniffing, no Referer (share links and tokens live in URLs), who may frame us, HSTS
over HTTPS, and for the viewer a Content-Security-Policy allowing exactly what its own
files use."""

from __future__ import annotations

from starlette.types import Message, Scope

from minipacs.config import Settings

# RFC 6797 §6.1.1: one year; no includeSubDomains (other hosts of the hospital's domain
# are not ours to pin to HTTPS).
HSTS = "max-age=31536000"


def viewer_policy(frame_ancestors: str, connect_origins: list[str]) -> str:
    """CSP (W3C CSP Level 3) of the viewer's pages: ES modules and styles from this server
    only (no inline script, no eval), images from here plus blob: (rendered frames and
    measurement overlays made in the page) and data: (the empty favicon), fetches to this
    server plus the origins an admin lists for `?server=`, no plugins, no workers, no
    <base> rewriting, forms posting only here. Documents and video (viewer/js/documents.js)
    are fetched like everything else and shown from blob: URLs the page made: `frame-src
    blob:` for an Encapsulated PDF in an <iframe>, `media-src blob:` for a <video>; no
    other origin may be framed or played."""
    connect = " ".join(["'self'", *connect_origins])
    return ("default-src 'none'; script-src 'self'; style-src 'self'; "
            "img-src 'self' blob: data:; media-src blob:; frame-src blob:; "
            f"connect-src {connect}; font-src 'self'; manifest-src 'self'; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; "
            f"frame-ancestors {frame_ancestors}")


def frame_options(frame_ancestors: str) -> str | None:
    """X-Frame-Options for browsers without CSP frame-ancestors (RFC 7034): it can say
    only DENY or SAMEORIGIN, so with other origins allowed it is left out (a DENY would
    break the EMR's iframe in browsers that honour both)."""
    return {"'none'": "DENY", "'self'": "SAMEORIGIN"}.get(frame_ancestors)


class SecurityHeaders:
    """The headers each response gets, computed once from the settings; the ASGI layer
    that adds them to each `http.response.start` is `request_bounds.RequestEdge`. A
    header the route set itself (none do today) is left as the route set it."""

    def __init__(self, settings: Settings) -> None:
        ancestors = " ".join(settings.frame_ancestors.split()) or "'none'"
        common: list[tuple[bytes, bytes]] = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]
        xfo = frame_options(ancestors)
        if xfo:
            common.append((b"x-frame-options", xfo.encode()))
        api_csp = f"frame-ancestors {ancestors}".encode()
        viewer_csp = viewer_policy(ancestors, settings.viewer_connect_origin_list).encode()
        # RFC 6797 §7.2: HSTS only over a secure transport (ours, or the TLS proxy's in
        # front of us when PUBLIC_URL is https). The four lists are built once.
        hsts = (b"strict-transport-security", HSTS.encode())
        self._api = [*common, (b"content-security-policy", api_csp)]
        self._viewer = [*common, (b"content-security-policy", viewer_csp)]
        self._api_https = [*self._api, hsts]
        self._viewer_https = [*self._viewer, hsts]
        self.hsts_always = (settings.public_url or "").lower().startswith("https://")

    def for_request(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        """The headers for the answer to this HTTP request (do not modify the list)."""
        path: str = scope.get("path", "")
        viewer = path == "/viewer" or path.startswith("/viewer/")
        if self.hsts_always or scope.get("scheme") == "https":
            return self._viewer_https if viewer else self._api_https
        return self._viewer if viewer else self._api


def with_headers(message: Message, extra: list[tuple[bytes, bytes]]) -> Message:
    """`message` (an `http.response.start`) with the `extra` headers it does not have."""
    headers = list(message.get("headers", []))
    present = {name.lower() for name, _ in headers}
    headers.extend(h for h in extra if h[0] not in present)
    return {**message, "headers": headers}
