"""Burned-in annotation of rendered images (PS3.18 §8.3.5.1.1, `annotation=patient,technique`).

The standard leaves the exact nature and placement of the annotation to the origin server;
minipacs writes the patient's name, ID, birth date and sex in the top-left corner
(`patient`) and the modality, study/series, acquisition technique and the window applied in
the top-right corner (`technique`), white text outlined in black, sized for the output
image. Text is drawn after the region and viewport, so it stays legible at any size.

Vietnamese names need a Unicode TrueType font: DejaVu Sans when the system has it
(Debian's fonts-dejavu-core). Without it, Pillow's built-in font is used, and any
character it has no glyph for is written without its diacritics (or as `?`), never as a
box, so an annotation is always readable.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from minipacs.dicom.names import strip_diacritics
from minipacs.errors import QueryError

ANNOTATIONS = ("patient", "technique")
# Unicode fonts looked for, first found wins (Debian, Fedora/RHEL, Alpine, macOS).
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/Library/Fonts/DejaVuSans.ttf",
)
AnyFont = ImageFont.FreeTypeFont | ImageFont.ImageFont
_NO_GLYPH_PROBE = "\U0010fffd"  # a private-use code point no font maps: shows "notdef"


def parse_annotation(text: str) -> tuple[str, ...]:
    """'patient,technique' → ('patient', 'technique') in that fixed order; `QueryError`
    names `annotation` and the keywords offered when a value is not one of them."""
    words = [w.strip().lower() for w in text.split(",")]
    unknown = [w for w in words if w not in ANNOTATIONS]
    if unknown or not words:
        raise QueryError(f"annotation={text!r}: {', '.join(map(repr, unknown)) or 'empty'} "
                         f"is not offered; use a comma-separated list of {', '.join(ANNOTATIONS)}")
    return tuple(a for a in ANNOTATIONS if a in words)


@functools.cache
def font_path() -> str | None:
    """The Unicode TrueType font annotations use, or None (Pillow's built-in font)."""
    return next((p for p in FONT_CANDIDATES if Path(p).is_file()), None)


@functools.cache
def annotation_font(size: int, path: str | None = None) -> AnyFont:
    """The font at `path` (default: `font_path()`) in `size` pixels, else Pillow's own."""
    path = path or font_path()
    if path is not None:
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            pass  # unreadable font file: fall back to the built-in one below
    return ImageFont.load_default(size)


def _has_glyph(font: AnyFont, char: str) -> bool:
    if char.isspace() or char.isascii():
        return True
    return bytes(font.getmask(char)) != bytes(font.getmask(_NO_GLYPH_PROBE))


def drawable(text: str, font: AnyFont) -> str:
    """`text` with each character the font cannot draw replaced by its form without
    diacritics (ễ → e, đ → d), else `?`."""
    out = []
    for char in text:
        if not _has_glyph(font, char):
            plain = strip_diacritics(char)
            char = plain if plain and all(_has_glyph(font, c) for c in plain) else "?"
        out.append(char)
    return "".join(out)


def _person_name(value: object) -> str:
    """The first (alphabetic) group of a PN, components joined by spaces."""
    text = str(value or "").split("=")[0]
    return " ".join(part for part in text.split("^") if part.strip())


def _date(value: object) -> str:
    text = str(value or "")
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


def _number(value: object, unit: str) -> str:
    if value is None or value == "":
        return ""
    try:
        return f"{float(str(value)):g} {unit}"
    except ValueError:
        return ""


def patient_lines(ds: Dataset) -> list[str]:
    """Patient's Name, Patient ID, Birth Date and Sex (PS3.3 C.7.1.1), as present."""
    lines = [_person_name(ds.get("PatientName"))]
    identity = []
    if ds.get("PatientID"):
        identity.append(f"ID: {ds.get('PatientID')}")
    if ds.get("PatientSex"):
        identity.append(f"Sex: {ds.get('PatientSex')}")
    lines.append("  ".join(identity))
    if ds.get("PatientBirthDate"):
        lines.append(f"DOB: {_date(ds.get('PatientBirthDate'))}")
    return [line for line in lines if line]


def technique_lines(ds: Dataset, frame: int, window: tuple[float, float] | None) -> list[str]:
    """Modality, study date, series/instance/frame numbers, kVp, mA(s), exposure time,
    slice thickness and the window applied (C/W, modality units), as present."""
    first = " ".join(x for x in (str(ds.get("Modality", "") or ""),
                                 _date(ds.get("StudyDate"))) if x)
    numbers = []
    if ds.get("SeriesNumber") not in (None, ""):
        numbers.append(f"Se: {ds.get('SeriesNumber')}")
    if ds.get("InstanceNumber") not in (None, ""):
        numbers.append(f"Im: {ds.get('InstanceNumber')}")
    try:
        count = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        count = 1
    if count > 1:
        numbers.append(f"Fr: {frame}/{count}")
    exposure = [_number(ds.get("KVP"), "kV"), _number(ds.get("XRayTubeCurrent"), "mA"),
                _number(ds.get("Exposure"), "mAs"), _number(ds.get("ExposureTime"), "ms")]
    lines = [first, " ".join(numbers), " ".join(x for x in exposure if x),
             _number(ds.get("SliceThickness"), "mm").replace(" mm", " mm slice")]
    if window is not None:
        lines.append(f"C: {window[0]:g} W: {window[1]:g}")
    return [line for line in lines if line]


def annotate(image: Image.Image, ds: Dataset, annotations: Sequence[str], *, frame: int = 1,
             window: tuple[float, float] | None = None, font_file: str | None = None
             ) -> Image.Image:
    """A copy of `image` with the requested annotations burned in (top-left: patient,
    top-right: technique), in `font_file` (default: `font_path()`, else built-in)."""
    if not annotations:
        return image
    out = image.copy()
    draw = ImageDraw.Draw(out)
    size = max(9, min(out.width, out.height) // 28)
    font = annotation_font(size, font_file)
    white = 255 if out.mode == "L" else (255, 255, 255)
    black = 0 if out.mode == "L" else (0, 0, 0)
    margin, gap = max(2, size // 3), max(1, size // 5)
    stroke = max(1, size // 12)

    def column(lines: list[str], right: bool) -> None:
        y: float = margin
        for line in lines:
            text = drawable(line, font)
            left, top, r, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
            x = out.width - margin - (r - left) if right else margin
            draw.text((x - left, y - top), text, font=font, fill=white, stroke_width=stroke,
                      stroke_fill=black)
            y += (bottom - top) + gap

    if "patient" in annotations:
        column(patient_lines(ds), right=False)
    if "technique" in annotations:
        column(technique_lines(ds, frame, window), right=True)
    return out
