"""Rendering a frame for display (PS3.18 §8.3.5.1 rendered resources): pure pixel code.

Grayscale: stored values → Modality LUT (Rescale Slope/Intercept or Modality LUT
Sequence, PS3.3 C.11.1) → VOI LUT (window from the request or the header, PS3.3
C.11.2.1.2; a VOI LUT Sequence; or the frame's own range) → 8 bits, MONOCHROME1
inverted (PS3.3 C.7.6.3.1.2). Colour: YBR converted to RGB, PALETTE COLOR through its
LUT, then scaled to 8 bits. Then the source region, the viewport (scale to fit, aspect
kept), the burned-in annotation (dicom/annotation.py) and JPEG/PNG.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    convert_color_space,
)

from minipacs.dicom.annotation import annotate
from minipacs.dicom.frames import DecodedFrame
from minipacs.errors import NotAcceptable, QueryError

VoiFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]
RENDERED_MEDIA_TYPES = ("image/jpeg", "image/png")
DEFAULT_QUALITY = 90
_PIL_FORMAT = {"image/jpeg": "JPEG", "image/png": "PNG"}
# PS3.18 §8.3.5.1.4: window=center,width,function with function in these (lower case).
_FUNCTIONS: dict[str, VoiFunction] = {
    "linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID",
}


@dataclass(frozen=True)
class Window:
    """A VOI window in modality-output units (e.g. Hounsfield units for CT)."""

    center: float
    width: float
    function: VoiFunction = "LINEAR"


@dataclass(frozen=True)
class Viewport:
    """Rendered size (the image is scaled to fit inside, aspect kept) and source region."""

    width: int
    height: int
    region: tuple[int, int, int, int] | None = None  # sx, sy, sw, sh in source pixels


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = DEFAULT_QUALITY
    # PS3.18 §8.3.5.1.1: "patient" and/or "technique", burned into the pixels.
    annotation: tuple[str, ...] = ()
    # WADO-URI `region` (PS3.18 §9.5.1.2): xmin, ymin, xmax, ymax as fractions 0.0-1.0 of
    # the image, applied before the viewport (which then scales the region).
    region: tuple[float, float, float, float] | None = None

    def cache_token(self) -> str:
        """A stable text naming these options, for the rendered-image cache key."""
        return repr((self.media_type, self.window, self.viewport,
                     self.quality if self.media_type == "image/jpeg" else None,
                     self.annotation, self.region))


def parse_window(text: str) -> Window:
    """'center,width[,function]' (PS3.18 §8.3.5.1.4) → Window; `QueryError` names `window`."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise QueryError(f"window={text!r} must be center,width or center,width,function")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError as exc:
        raise QueryError(f"window={text!r}: center and width must be numbers") from exc
    if not (math.isfinite(center) and math.isfinite(width)):
        raise QueryError(f"window={text!r}: center and width must be finite")
    function: VoiFunction = "LINEAR"
    if len(parts) == 3:
        name = parts[2].lower()
        if name not in _FUNCTIONS:
            raise QueryError(
                f"window={text!r}: function {parts[2]!r} must be one of {', '.join(_FUNCTIONS)}"
            )
        function = _FUNCTIONS[name]
    # PS3.3 C.11.2.1.2.1: Window Width >= 1 for LINEAR, > 0 for the others.
    if (function == "LINEAR" and width < 1) or width <= 0:
        raise QueryError(f"window={text!r}: width must be at least 1 (or > 0 for "
                         "linear-exact and sigmoid)")
    return Window(center, width, function)


def parse_viewport(text: str) -> Viewport:
    """'vw,vh' or 'vw,vh,sx,sy,sw,sh' (PS3.18 §8.3.5.1.3); `QueryError` names `viewport`."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 6):
        raise QueryError(f"viewport={text!r} must be vw,vh or vw,vh,sx,sy,sw,sh")
    try:
        numbers = [int(p) for p in parts]
    except ValueError as exc:
        raise QueryError(f"viewport={text!r}: values must be whole numbers") from exc
    width, height = numbers[0], numbers[1]
    if not (1 <= width <= 8192 and 1 <= height <= 8192):
        raise QueryError(f"viewport={text!r}: vw and vh must be between 1 and 8192")
    region = None
    if len(numbers) == 6:
        sx, sy, sw, sh = numbers[2:]
        if sx < 0 or sy < 0 or sw <= 0 or sh <= 0:
            raise QueryError(f"viewport={text!r}: sx, sy must be >= 0 and sw, sh > 0 "
                             "(flipping is not supported)")
        region = (sx, sy, sw, sh)
    return Viewport(width, height, region)


def parse_region(text: str) -> tuple[float, float, float, float]:
    """'xmin,ymin,xmax,ymax' as fractions of the image (PS3.18 §9.5.1.2); `QueryError`
    names `region` and says what is expected."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4:
        raise QueryError(f"region={text!r} must be four numbers xmin,ymin,xmax,ymax "
                         "(fractions of the image from 0.0 to 1.0)")
    try:
        x1, y1, x2, y2 = (float(p) for p in parts)
    except ValueError as exc:
        raise QueryError(f"region={text!r}: xmin,ymin,xmax,ymax must be numbers from 0.0 "
                         "to 1.0") from exc
    if not all(0.0 <= v <= 1.0 for v in (x1, y1, x2, y2)):
        raise QueryError(f"region={text!r}: every value must be from 0.0 to 1.0")
    if x1 >= x2 or y1 >= y2:
        raise QueryError(f"region={text!r}: xmin must be below xmax and ymin below ymax")
    return (x1, y1, x2, y2)


def parse_quality(text: str) -> int:
    try:
        quality = int(text)
    except ValueError as exc:
        raise QueryError(f"quality={text!r} must be a whole number from 1 to 100") from exc
    if not 1 <= quality <= 100:
        raise QueryError(f"quality={text!r} must be from 1 to 100")
    return quality


def apply_window(values: NDArray[Any], window: Window) -> NDArray[np.float64]:
    """VOI LUT function of PS3.3 C.11.2.1.2 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT) and
    C.11.2.1.3.1 (SIGMOID), output range 0..255."""
    x = values.astype(np.float64)
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        return 255.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    if window.function != "LINEAR_EXACT" and not w > 1:
        return np.clip((x > c - 0.5) * 255.0, 0.0, 255.0)
    # In place on the fresh copy `x`, in the formula's order (same values bit for bit):
    # a 512x512 frame's temporaries were a third of a first render.
    if window.function == "LINEAR_EXACT":
        x -= c
        x /= w
    else:
        x -= c - 0.5
        x /= w - 1
    x += 0.5
    x *= 255.0
    return np.clip(x, 0.0, 255.0, out=x)


def header_window(ds: Dataset) -> Window | None:
    """The first window in the header (Window Center/Width, VOI LUT Function), if any."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None or center == "" or width == "":
        return None
    try:
        c, w = float(_first(center)), float(_first(width))
    except (TypeError, ValueError, IndexError):
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    if w <= 0 or (function == "LINEAR" and w < 1):
        return None
    return Window(c, w, function)  # type: ignore[arg-type]


def _first(value: Any) -> Any:
    """First value of a possibly multi-valued element (Window Center may hold several)."""
    if isinstance(value, MultiValue | list | tuple):
        return value[0]
    return value


def _stretch(values: NDArray[Any]) -> NDArray[np.float64]:
    """Map the value range of the frame onto 0..255 (no window known)."""
    x = values.astype(np.float64)
    low, high = float(x.min()), float(x.max())
    if high <= low:
        return np.zeros_like(x)
    return (x - low) * (255.0 / (high - low))


def display_pixels(frame: DecodedFrame, ds: Dataset, window: Window | None = None
                   ) -> NDArray[np.uint8]:
    """8-bit display values of one decoded frame: (rows, cols) grey or (rows, cols, 3) RGB."""
    pixels = frame.pixels
    photometric = frame.photometric_interpretation.upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        return _to_8bit_colour(rgb, 16 if rgb.dtype.itemsize > 1 else 8)
    if pixels.ndim == 3:
        if photometric.startswith("YBR"):
            pixels = convert_color_space(pixels, photometric, "RGB")
        return _to_8bit_colour(pixels, frame.bits_allocated)
    window = window or header_window(ds)
    invert = photometric == "MONOCHROME1"
    table = _grey_table(pixels, ds, window, invert)
    if table is None:
        return grey_display_values(pixels, ds, window, invert)
    lut, offset = table
    # Stored value v is entry v - offset. The subtraction may wrap in the pixels' own
    # integer type; read as unsigned of that size it is the true index (< 2**16).
    index = np.subtract(pixels, offset).view(f"u{pixels.dtype.itemsize}")
    grey: NDArray[np.uint8] = np.take(lut, index)
    return grey


# A lookup table instead of the float pipeline on every pixel when the stored values span
# at most this many integers (every 16-bit image): one entry per value in the range.
_MAX_TABLE = 1 << 16


def _grey_table(pixels: NDArray[Any], ds: Dataset, window: Window | None, invert: bool
                ) -> tuple[NDArray[np.uint8], Any] | None:
    """The display value of every stored value from the frame's minimum to its maximum,
    and that minimum; None when a table does not give the same image (see below).

    `grey_display_values` maps each pixel on its own (Modality LUT, window, rounding and
    inversion are all per value), so applied to the range of stored values it gives,
    value for value, what it gives on the frame: bit-identical, without the float64 copies of a
    whole frame (most of a first render's time, docs/performance.md). The one step that
    looks at the whole frame is the stretch used when no window is known (its minimum and
    maximum): the table is used there only when the Modality LUT is a rescale or none,
    which is monotonic, so the extremes are those of the frame's own extremes."""
    if pixels.dtype.kind not in "iu" or pixels.size == 0:
        return None
    if window is None and ("ModalityLUTSequence" in ds or "VOILUTSequence" in ds):
        return None
    low, high = pixels.min(), pixels.max()
    if int(high) - int(low) >= _MAX_TABLE:
        return None
    domain = np.arange(int(low), int(high) + 1, dtype=pixels.dtype)
    return grey_display_values(domain, ds, window, invert), low


def grey_display_values(pixels: NDArray[Any], ds: Dataset, window: Window | None,
                        invert: bool) -> NDArray[np.uint8]:
    """Stored grey values → Modality LUT → VOI (the window, else a VOI LUT Sequence, else
    the value range stretched) → 8 bits, MONOCHROME1 inverted."""
    values = apply_modality_lut(pixels, ds)
    if window is not None:
        out = apply_window(values, window)
    elif "VOILUTSequence" in ds:
        out = _stretch(apply_voi(values, ds))
    else:
        out = _stretch(values)
    grey = np.rint(out).astype(np.uint8)
    if invert:
        grey = 255 - grey  # PS3.3 C.7.6.3.1.2: minimum value is displayed white
    return grey


def _to_8bit_colour(pixels: NDArray[Any], bits: int) -> NDArray[np.uint8]:
    if pixels.dtype == np.uint8:
        return pixels
    peak = float(pixels.max()) if pixels.size else 0.0
    scale = 255.0 / ((1 << bits) - 1) if peak > 255 else 1.0
    return np.clip(np.rint(pixels.astype(np.float64) * scale), 0, 255).astype(np.uint8)


def crop_fraction(image: Image.Image, region: tuple[float, float, float, float] | None
                  ) -> Image.Image:
    """The part of `image` inside `region` (fractions of its width and height), at least
    one pixel each way."""
    if region is None:
        return image
    x1, y1, x2, y2 = region
    left, top = math.floor(x1 * image.width), math.floor(y1 * image.height)
    right = max(left + 1, math.ceil(x2 * image.width))
    bottom = max(top + 1, math.ceil(y2 * image.height))
    return image.crop((min(left, image.width - 1), min(top, image.height - 1),
                       min(right, image.width), min(bottom, image.height)))


def fit_viewport(image: Image.Image, viewport: Viewport | None) -> Image.Image:
    """Crop to the viewport region, then scale to fit inside vw x vh keeping the aspect."""
    if viewport is None:
        return image
    if viewport.region is not None:
        sx, sy, sw, sh = viewport.region
        image = image.crop((sx, sy, min(sx + sw, image.width), min(sy + sh, image.height)))
        if image.width == 0 or image.height == 0:
            raise QueryError("viewport region lies outside the image")
    scale = min(viewport.width / image.width, viewport.height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS if scale < 1 else
                        Image.Resampling.BILINEAR)


def encode_image(image: Image.Image, options: RenderOptions) -> bytes:
    """Encode a display image as options.media_type."""
    fmt = _PIL_FORMAT.get(options.media_type)
    if fmt is None:
        raise NotAcceptable(f"cannot render as {options.media_type}; offered: "
                            + ", ".join(RENDERED_MEDIA_TYPES))
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, format=fmt, quality=options.quality)
    else:
        image.save(buffer, format=fmt)
    return buffer.getvalue()


def render_frame(frame: DecodedFrame, ds: Dataset, options: RenderOptions,
                 number: int = 1) -> bytes:
    """Frame `number` of the instance whose header is `ds`, rendered per `options`:
    display pixels, source region, viewport, annotation (PS3.18 §8.3.5.1: the region is
    applied before the viewport; the annotation after the region), then encoded."""
    image = Image.fromarray(display_pixels(frame, ds, options.window))
    image = fit_viewport(crop_fraction(image, options.region), options.viewport)
    if options.annotation:
        grey = frame.pixels.ndim == 2 and frame.photometric_interpretation.upper() in (
            "MONOCHROME1", "MONOCHROME2")
        window = (options.window or header_window(ds)) if grey else None
        image = annotate(image, ds, options.annotation, frame=number,
                         window=(window.center, window.width) if window else None)
    return encode_image(image, options)
