"""Pixel content of the synthetic sample studies: numpy arrays only, no DICOM.

Every function is deterministic: shapes are drawn with plain arithmetic (IEEE exact on
every platform), noise comes from ``numpy.random.RandomState`` integer draws, whose
stream numpy keeps stable across versions. Geometry is in millimetres in the patient
coordinate system of PS3.3 C.7.6.2.1.1 (x towards the patient's left, y posterior),
so image column index grows towards the patient's left and row index posteriorly.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CT_COLUMNS",
    "CT_PIXEL_SPACING_MM",
    "CT_ROWS",
    "CT_SLICE_SPACING_MM",
    "CT_LESION_SLICE",
    "DX_SIZE",
    "DX_PIXEL_SPACING_MM",
    "MR_SIZE",
    "MR_PIXEL_SPACING_MM",
    "MR_SLICE_SPACING_MM",
    "US_COLUMNS",
    "US_ROWS",
    "ct_slice",
    "dx_chest",
    "mr_slice",
    "us_frames",
]

Mask = NDArray[np.bool_]
Grid = NDArray[np.float64]

CT_ROWS = CT_COLUMNS = 256
CT_PIXEL_SPACING_MM = 0.7
CT_SLICE_SPACING_MM = 5.0
CT_LESION_SLICE = 18  # 0-based slice whose plane passes through the lesion centre
CT_PADDING = -2000  # stored value outside the reconstruction circle (Pixel Padding Value)

MR_SIZE = 128
MR_PIXEL_SPACING_MM = 1.8
MR_SLICE_SPACING_MM = 6.0

DX_SIZE = 512
DX_PIXEL_SPACING_MM = 0.7

US_ROWS, US_COLUMNS = 96, 128


def _grid(size: int, spacing: float) -> tuple[Grid, Grid]:
    """(x, y) in mm of every pixel centre, origin at the image centre."""
    axis = (np.arange(size, dtype=np.float64) - (size - 1) / 2) * spacing
    return axis[None, :].repeat(size, axis=0), axis[:, None].repeat(size, axis=1)


def _ellipse(x: Grid, y: Grid, cx: float, cy: float, ax: float, by: float) -> Mask:
    if ax <= 0 or by <= 0:
        return np.zeros(x.shape, dtype=bool)
    mask: Mask = ((x - cx) / ax) ** 2 + ((y - cy) / by) ** 2 <= 1.0
    return mask


def _cross_section(radius: float, distance: float) -> float:
    """Radius of a sphere's cut by a plane ``distance`` mm from its centre (0 if none)."""
    return math.sqrt(radius * radius - distance * distance) if abs(distance) < radius else 0.0


def _blur3(image: NDArray[np.int64]) -> NDArray[np.int64]:
    """3x3 box mean in integers: softens edges like partial-volume averaging."""
    padded = np.pad(image, 1, mode="edge")
    total = sum(
        padded[1 + dy : padded.shape[0] - 1 + dy, 1 + dx : padded.shape[1] - 1 + dx]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )
    return np.asarray(total, dtype=np.int64) // 9


def _noise(seed: int, shape: tuple[int, ...], amplitude: int) -> NDArray[np.int64]:
    """Triangular integer noise in [-2 * amplitude, 2 * amplitude]."""
    draws = np.random.RandomState(seed).randint(-amplitude, amplitude + 1, (2, *shape))
    return np.asarray(draws.sum(axis=0), dtype=np.int64)


# --------------------------------------------------------------------------- CT chest


def ct_slice(index: int) -> NDArray[np.int16]:
    """Stored values (HU + 1024) of axial chest slice ``index``, apex (0) to base.

    Soft tissue 40 HU, fat -100, lung -820 with vessels, contrast-filled heart and
    aorta, vertebra with discs every 26 mm, ribs sloping with z, and a 10 mm-radius
    25 HU nodule in the right lung centred on slice ``CT_LESION_SLICE``. Outside the
    reconstruction circle the value is ``CT_PADDING``.
    """
    depth = index * CT_SLICE_SPACING_MM  # mm below the first slice
    x, y = _grid(CT_ROWS, CT_PIXEL_SPACING_MM)
    hu = np.full(x.shape, -1000, dtype=np.int64)

    def paint(mask: Mask, value: int) -> None:
        hu[mask] = value

    paint((y >= 68) & (y <= 73) & (np.abs(x) <= 86), 150)  # table top
    paint(_ellipse(x, y, 0, 2, 80, 62), -100)  # subcutaneous fat
    paint(_ellipse(x, y, 0, 2, 73, 55), 40)  # muscle and mediastinum

    # Lungs grow from the apex to mid-chest; the liver dome rises into the right base.
    growth = math.sqrt(max(0.0, 1 - ((depth - 117) / 137) ** 2))
    liver = _ellipse(x, y, -28, 8, *(2 * [_cross_section(60, 200 - depth)]))
    heart_scale = _cross_section(50, depth - 135) / 50
    heart = _ellipse(x, y, 14, -16, 36 * heart_scale, 30 * heart_scale)
    lungs = []
    for centre_x, width in ((-38, 27.0), (40, 24.0)):
        lung = _ellipse(x, y, centre_x, 0, width * (0.55 + 0.45 * growth), 40 * growth)
        lungs.append(lung & ~liver & ~heart)
    paint(lungs[0] | lungs[1], -820)
    _paint_lung_vessels(hu, x, y, lungs, depth)
    paint(liver & _ellipse(x, y, 0, 2, 73, 55), 60)

    paint(heart, 45)
    paint(_ellipse(x, y, 22, -14, 14 * heart_scale, 11 * heart_scale), 220)  # LV
    paint(_ellipse(x, y, 4, -26, 12 * heart_scale, 8 * heart_scale), 200)  # RV
    if 40 <= depth <= 100:
        paint(_ellipse(x, y, 4, -20, 12, 12), 250)  # ascending aorta
    if 28 <= depth < 40:
        paint(_ellipse(x, y, 9, 2, 13, 26), 250)  # arch
    if depth >= 35:
        paint(_ellipse(x, y, 14, 24, 10, 10), 250)  # descending aorta
    if depth < 70:
        paint(_ellipse(x, y, 0, -8, 8, 8), -1000)  # trachea
    elif depth < 95:
        paint(_ellipse(x, y, -11, -4, 5, 5) | _ellipse(x, y, 11, -4, 5, 5), -1000)
    paint(_ellipse(x, y, -4, 18, 5, 5), 30)  # oesophagus
    paint(_ellipse(x, y, -4, 18, 1.5, 1.5), -900)

    disc = depth % 26 < 5
    paint(_ellipse(x, y, 0, 34, 14, 14), 90 if disc else 900)  # cortex
    paint(_ellipse(x, y, 0, 34, 12, 12), 90 if disc else 350)  # cancellous bone
    paint(_ellipse(x, y, 0, 50, 9, 9), 800)  # neural arch
    paint(_ellipse(x, y, 0, 50, 6, 6), 20)  # spinal canal
    paint(_ellipse(x, y, 0, 59, 3, 5), 800)  # spinous process
    paint(_ellipse(x, y, -14, 44, 8, 3) | _ellipse(x, y, 14, 44, 8, 3), 800)
    if 20 <= depth <= 160:
        paint(_ellipse(x, y, 0, -54, 9, 4), 600)  # sternum
    if depth < 110:
        paint(_ellipse(x, y, -48, 38, 14, 3) | _ellipse(x, y, 48, 38, 14, 3), 700)
    for step in range(1, 12):  # ribs: angle from the posterior midline, both sides
        angle = math.radians(25 + step * 11.5)
        if (depth + 0.25 * math.degrees(angle)) % 24 >= 9:
            continue
        for side in (-1, 1):
            rx, ry = side * 70 * math.sin(angle), 2 + 52 * math.cos(angle)
            paint(_ellipse(x, y, rx, ry, 5, 3.2), 750)
            paint(_ellipse(x, y, rx, ry, 3, 1.6), 250)

    lesion = _cross_section(10, depth - CT_LESION_SLICE * CT_SLICE_SPACING_MM)
    paint(_ellipse(x, y, -44, -6, lesion, lesion), 25)

    stored = _blur3(hu) + 1024 + _noise(1000 + index, hu.shape, 6)
    stored = np.clip(stored, -2048, 2047)  # Bits Stored 12, signed
    stored[x * x + y * y > (CT_ROWS / 2 * CT_PIXEL_SPACING_MM) ** 2] = CT_PADDING
    ct: NDArray[np.int16] = stored.astype(np.int16)
    return ct


def _paint_lung_vessels(
    hu: NDArray[np.int64], x: Grid, y: Grid, lungs: list[Mask], depth: float
) -> None:
    """Small round vessels that drift through the lung as depth changes."""
    table = np.random.RandomState(7).randint(-1000, 1001, (2, 36, 4)) / 1000.0
    for side, lung in enumerate(lungs):
        if not lung.any():
            continue
        xs, ys = x[lung], y[lung]
        cx, cy = (xs.max() + xs.min()) / 2, (ys.max() + ys.min()) / 2
        hx, hy = (xs.max() - xs.min()) / 2, (ys.max() - ys.min()) / 2
        for u0, v0, du, dv in table[side]:
            u = 0.8 * u0 + 0.3 * du * depth / 195
            v = 0.8 * v0 + 0.3 * dv * depth / 195
            radius = 2.6 * (1 - 0.6 * min(1.0, math.sqrt(u * u + v * v)))
            vessel = _ellipse(x, y, cx + u * hx, cy + v * hy, radius, radius) & lung
            hu[vessel] = 40


# --------------------------------------------------------------------------- MR brain


def mr_slice(index: int, count: int) -> NDArray[np.uint16]:
    """T2-weighted axial brain slice ``index`` of ``count``, skull base to vertex.

    CSF bright, grey matter brighter than white, a 8 mm-radius hyperintense lesion in
    the right frontal white matter around 72 mm above the first slice.
    """
    t = index / (count - 1)
    depth = index * MR_SLICE_SPACING_MM
    x, y = _grid(MR_SIZE, MR_PIXEL_SPACING_MM)
    signal = np.zeros(x.shape, dtype=np.int64)

    def paint(mask: Mask, value: int) -> None:
        signal[mask] = value

    scale = math.sqrt(max(0.0, 1 - ((t - 0.3) / 0.78) ** 2))
    ax, by = 74 * scale, 92 * scale
    paint(_ellipse(x, y, 0, 4, ax, by), 450)  # scalp
    paint(_ellipse(x, y, 0, 4, ax - 4, by - 4), 40)  # skull
    paint(_ellipse(x, y, 0, 4, ax - 9, by - 9), 1450)  # subarachnoid CSF
    brain = _ellipse(x, y, 0, 4, ax - 11, by - 11)
    paint(brain, 950)  # grey matter
    # White matter with a gyral border: radius modulated by cos(8 theta) = T8(cos theta).
    wx, wy = 0.72 * (ax - 11), 0.74 * (by - 11)
    if wx > 0:
        rho = np.sqrt((x / wx) ** 2 + ((y - 4) / wy) ** 2)
        c = np.divide(x / wx, rho, out=np.ones_like(rho), where=rho > 0)
        t8 = 128 * c**8 - 256 * c**6 + 160 * c**4 - 32 * c**2 + 1
        paint(brain & (rho <= 1 + 0.07 * t8), 620)
    if t > 0.4:
        paint(brain & (np.abs(x) < 1.0), 1300)  # interhemispheric fissure
    if t < 0.3:
        paint(_ellipse(x, y, 0, 18, 16, 14), 750)  # pons
        paint(_ellipse(x, y, 0, 30, 5, 4), 1450)  # fourth ventricle
        cerebellum = _ellipse(x, y, 0, 55 * scale, 48 * scale, 28 * scale) & brain
        paint(cerebellum & (np.floor(y / 3) % 2 == 0), 820)
        paint(cerebellum & (np.floor(y / 3) % 2 == 1), 960)
    if t < 0.22:
        for side in (-1, 1):
            paint(_ellipse(x, y, side * 30, -60, 12, 12), 1500)  # globe
            paint(_ellipse(x, y, side * 30, -69, 5, 2), 300)  # lens
    if 0.34 <= t <= 0.45:
        paint(_ellipse(x, y, 0, 0, 2, 12), 1450)  # third ventricle
    ventricle = math.sqrt(max(0.0, 1 - ((t - 0.6) / 0.18) ** 2))
    for side in (-1, 1):
        paint(_ellipse(x, y, side * 9, -8, 5 * ventricle, 24 * ventricle), 1450)
    lesion = _cross_section(8, depth - 72)
    paint(_ellipse(x, y, -26, -30, lesion, lesion), 1350)

    bias = np.floor(signal * (1.0 - 0.0012 * y)).astype(np.int64)  # coil sensitivity
    noisy = np.abs(_blur3(bias) + _noise(2000 + index, signal.shape, 12))  # Rician-like
    mr: NDArray[np.uint16] = np.clip(noisy, 0, 65535).astype(np.uint16)
    return mr


# --------------------------------------------------------------------------- DX chest


def dx_chest() -> NDArray[np.uint16]:
    """PA chest radiograph, 12-bit, high values where more X-rays reached the detector.

    Meant for MONOCHROME1 (low values white): lungs dark, bone and mediastinum white,
    a collimated border that received almost nothing.
    """
    u, _ = _grid(DX_SIZE, DX_PIXEL_SPACING_MM)  # u towards the patient's left
    v = np.arange(DX_SIZE, dtype=np.float64)[:, None].repeat(DX_SIZE, 1) * DX_PIXEL_SPACING_MM

    s = np.clip((v - 15) / 55, 0, 1)
    half_width = 55 + 110 * s * s * (3 - 2 * s)  # neck widening into the shoulders
    body = 210 * np.sqrt(np.clip(1 - (u / half_width) ** 2, 0, None))

    def ellipsoid_path(cu: float, cv: float, au: float, av: float, depth: float) -> Grid:
        inside = 1 - ((u - cu) / au) ** 2 - ((v - cv) / av) ** 2
        path: Grid = 2 * depth * np.sqrt(np.clip(inside, 0, None))
        return path

    heart = ellipsoid_path(28, 245, 72, 62, 55)
    air = sum(np.clip(ellipsoid_path(cu, 185, 60, 125, 75) - heart, 0, None) for cu in (-72, 72))
    soft = body - 0.85 * np.asarray(air)

    bone = 30 * np.sqrt(np.clip(1 - (u / 16) ** 2, 0, None))  # vertebral column
    bone = np.where(v % 26 < 4, 0.35 * bone, bone)  # discs
    lateral = np.abs(u)
    for rib in range(10):
        top = 70 + 25 * rib
        posterior = top + 0.0045 * (lateral - 15) ** 2
        bone += np.where(
            (np.abs(v - posterior) < 4.5) & (lateral > 15) & (lateral < half_width - 10), 10, 0
        )
        anterior = top + 45 + 0.35 * (150 - lateral)
        bone += np.where(
            (np.abs(v - anterior) < 4) & (lateral > 40) & (lateral < half_width - 15), 5, 0
        )
    clavicle = 62 - 0.12 * (lateral - 20)
    bone += np.where((np.abs(v - clavicle) < 5.5) & (lateral > 20) & (lateral < 150), 14, 0)

    attenuation = soft + 2.2 * bone
    exposure = np.floor(3900 - 9.5 * attenuation).astype(np.int64)
    exposure = _blur3(exposure) + _noise(3000, exposure.shape, 10)
    collimated = (np.abs(u) > 172) | (v < 4) | (v > 352)
    exposure[collimated] = 300 + _noise(3001, exposure.shape, 10)[collimated]
    return np.clip(exposure, 0, 4095).astype(np.uint16)


# --------------------------------------------------------------------------- US abdomen


def us_frames(count: int) -> NDArray[np.uint8]:
    """RGB cine (count, rows, columns, 3) of a curved-array abdominal scan.

    The tissue under the fan moves up and down with breathing (triangle wave, 5 px),
    a gallbladder-like anechoic ellipse shows posterior enhancement, and a vessel
    carries pulsating colour Doppler (red towards the probe, blue away).
    """
    rows, columns = US_ROWS, US_COLUMNS
    i = np.arange(rows, dtype=np.float64)[:, None].repeat(columns, 1)
    j = np.arange(columns, dtype=np.float64)[None, :].repeat(rows, 0)
    dy, dx = i + 6, j - (columns - 1) / 2  # apex 6 px above the first row
    radius2 = dx * dx + dy * dy
    tan_half_angle = 0.7265  # 36 degree half-angle sector
    fan = (np.abs(dx) <= tan_half_angle * dy) & (radius2 >= 10**2) & (radius2 <= 92**2)

    raw_speckle = np.random.RandomState(11).randint(0, 256, (rows + 16, columns))
    grain = (raw_speckle - 128) // 3 + 2 * (_blur3(raw_speckle) - 128)  # fine + 3 px grain
    speckle_field = np.clip(100 + grain, 10, 220)
    pulse = [10, 9, 7, 5, 4, 3, 3, 2, 2, 2]
    frames = np.zeros((count, rows, columns, 3), dtype=np.uint8)
    for f in range(count):
        shift = abs((f + 5) % 20 - 10) - 5  # breathing, -5..5 px
        tissue = speckle_field[8 - shift : 8 - shift + rows].astype(np.int64)
        tissue = (tissue + np.random.RandomState(100 + f).randint(0, 25, (rows, columns))) // 2
        depth = np.sqrt(radius2)
        tissue = np.floor(tissue * (1.15 - 0.004 * depth)).astype(np.int64)
        for top, bottom in ((14, 18), (26, 28)):  # fascia layers
            tissue[(depth + shift >= top) & (depth + shift <= bottom)] += 90
        cyst = _ellipse(j, i, 70, 55 + shift, 18, 12)
        shadow_free = (np.abs(j - 70) < 16) & (i > 55 + shift) & ~cyst
        tissue[shadow_free] += 35  # posterior acoustic enhancement
        tissue[cyst] = 6
        gray = np.clip(tissue, 0, 255)
        gray[~fan] = 0
        gray[10:90, 2:6] = np.linspace(255, 0, 80).astype(np.int64)[:, None]  # grey bar
        rgb = np.repeat(gray[:, :, None], 3, axis=2)

        beat = pulse[f % len(pulse)]
        artery = _ellipse(j, i, 45, 40 + shift, 5, 5) & fan
        vein = _ellipse(j, i, 88, 30 + shift, 4, 6) & fan
        rgb[artery] = (min(255, 120 + 13 * beat), 20 + 5 * beat, 10)
        rgb[vein] = (10, 30, min(255, 110 + 8 * beat))
        rgb[10:50, 122:126] = (200, 30, 10)  # colour scale: red towards the probe
        rgb[50:90, 122:126] = (10, 30, 200)
        frames[f] = rgb.astype(np.uint8)
    return frames
