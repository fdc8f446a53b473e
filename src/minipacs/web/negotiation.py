"""Accept-header negotiation for WADO-RS (PS3.18 §8.7): which media type and transfer
syntax a client will take, in its order of preference."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from minipacs.dicom.frames import NATIVE_SYNTAXES, can_decode, media_type_of
from minipacs.errors import NotAcceptable

# PS3.18 §8.7.3.5.2 (since 2016c): application/dicom without a transfer-syntax parameter
# means Explicit VR Little Endian; so does application/octet-stream for frames/bulk data.
DEFAULT_TRANSFER_SYNTAX = str(ExplicitVRLittleEndian)
UNCOMPRESSED = frozenset({str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)})


@dataclass(frozen=True)
class MediaRange:
    """One element of an Accept header: `multipart/related; type=...` is unwrapped into
    `media` = the part type, `multipart` = True."""

    media: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0
    multipart: bool = False

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges of an Accept header, most preferred first (q, then order)."""
    ranges: list[MediaRange] = []
    for raw in _split_outside_quotes(header or "*/*", ","):
        pieces = _split_outside_quotes(raw, ";")
        media = pieces[0].strip().lower()
        if not media:
            continue
        params: dict[str, str] = {}
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        multipart = media in ("multipart/related", "multipart/*")
        if multipart:
            media = params.pop("type", "*/*").lower()
        ranges.append(MediaRange(media, params, q, multipart))
    ranges = [r for r in ranges if r.q > 0]
    return sorted(ranges, key=lambda r: -r.q)


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _matches(range_media: str, media: str) -> bool:
    if range_media in ("*/*", "*"):
        return True
    if range_media.endswith("/*"):
        return media.startswith(range_media[:-1])
    return range_media == media


def instance_transfer_syntax(accept: str | None, stored: list[str]) -> str | None:
    """Target transfer syntax for retrieving instances stored in `stored` syntaxes:
    None = as stored, else a UID every instance can be sent in. Raises `NotAcceptable`."""
    for r in parse_accept(accept):
        if not _matches(r.media, "application/dicom"):
            continue
        wanted = r.transfer_syntax
        if wanted == "*":
            return None
        target = wanted or DEFAULT_TRANSFER_SYNTAX
        if all(ts == target or (target in UNCOMPRESSED and (ts in NATIVE_SYNTAXES
                                                            or can_decode(ts)))
               for ts in stored):
            return target
    raise NotAcceptable(
        f"cannot serve these instances as {accept!r}: they are stored as "
        f"{', '.join(sorted(set(stored)))}; ask for multipart/related; "
        'type="application/dicom" with transfer-syntax=* (as stored), '
        f"{ExplicitVRLittleEndian} or {ImplicitVRLittleEndian}"
    )


@dataclass(frozen=True)
class FrameChoice:
    """How to send frames: `media` is the part media type; `transfer_syntax` what the
    bytes are in; `decode` whether they are decompressed (else sent as stored)."""

    media: str
    transfer_syntax: str
    decode: bool
    multipart: bool


def frame_choice(accept: str | None, stored: str) -> FrameChoice:
    """What to send for frames/bulk pixel data stored in `stored`; raises `NotAcceptable`.

    `*/*` and application/octet-stream without a transfer syntax get uncompressed
    Explicit VR Little Endian pixels (PS3.18 Table 8.7.3-4 default); `transfer-syntax=*`
    gets the stored bitstream; image/jpeg, image/jp2, ... get it when it is stored so.
    """
    stored_media = media_type_of(stored)
    native = stored in NATIVE_SYNTAXES
    for r in parse_accept(accept):
        wanted = r.transfer_syntax
        # A bare concrete media type asks for a single-part body (one frame only).
        multipart = r.multipart or "*" in r.media
        if r.media in ("*/*", "*", "application/*", "application/octet-stream"):
            if wanted in (None, *UNCOMPRESSED) and (native or can_decode(stored)):
                return FrameChoice("application/octet-stream", wanted or DEFAULT_TRANSFER_SYNTAX,
                                   True, multipart)
            if wanted == "*" or wanted == stored:
                if native:
                    return FrameChoice("application/octet-stream", DEFAULT_TRANSFER_SYNTAX,
                                       True, multipart)
                return FrameChoice(stored_media or "application/octet-stream", stored, False,
                                   multipart)
            continue
        if stored_media is None or not _matches(r.media, stored_media):
            continue
        if wanted in (None, "*", stored):
            return FrameChoice(stored_media, stored, False, multipart)
    offered = ['multipart/related; type="application/octet-stream"; '
               f"transfer-syntax={DEFAULT_TRANSFER_SYNTAX}"]
    if stored_media:
        offered.append(f'multipart/related; type="{stored_media}"; transfer-syntax={stored}')
    raise NotAcceptable(
        f"cannot serve frames stored as {stored} as {accept!r}; offered: " + " or ".join(offered)
    )


def rendered_media_type(accept: str | None, offered: tuple[str, ...]) -> str:
    """The rendered media type to produce (first of `offered` for */*); `NotAcceptable`."""
    for r in parse_accept(accept):
        for media in offered:
            if _matches(r.media, media):
                return media
    raise NotAcceptable(f"cannot render as {accept!r}; offered: {', '.join(offered)}")
