"""Multiplanar reconstruction (MPR) of a stack of parallel slices: pure numpy geometry.

A CT or MR series of single-frame images that share a Frame of Reference and one Image
Orientation (Patient) is a volume: slice k's pixel (i, j) lies at
    ImagePositionPatient_k + j * PixelSpacing[1] * rowcos + i * PixelSpacing[0] * colcos
(PS3.3 C.7.6.2.1.1), and the slices are ordered by their distance along the normal
rowcos x colcos, regular or not. Planes through it are cut along the volume's own
three axes (so a reconstructed plane is exactly orthogonal to the acquired one, and its
geometry is exact): the axis closest to the patient's head-foot direction gives the
"axial" plane, front-back the "coronal" and left-right the "sagittal". Along the slice
normal, values are linearly interpolated between the two nearest slices on a grid as
fine as the in-plane pixel spacing, so reconstructed pixels are square in mm; in the
acquired plane the frames are the stored slices, untouched.

What cannot be a volume is refused with `InvalidRequest` naming why: one slice, several
orientations or Frames of Reference, other sizes or spacings, slices at one position,
positions sheared off the normal (gantry tilt), multi-frame or colour images.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from minipacs.errors import InvalidRequest, NotFound

PLANES = ("axial", "coronal", "sagittal")
# LPS patient axes (PS3.3 C.7.6.2.1.1: x to the patient's left, y posterior, z head).
# For each plane: the direction frames step in, and the directions of increasing column
# and row index on screen (radiological convention: patient's right on the image's
# left, head at the top; axial from head to feet, coronal front to back, sagittal right
# to left).
_DISPLAY: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]] = {
    "axial": ((0, 0, -1), (1, 0, 0), (0, 1, 0)),
    "coronal": ((0, 1, 0), (1, 0, 0), (0, 0, -1)),
    "sagittal": ((1, 0, 0), (0, 1, 0), (0, 0, -1)),
}
# The patient axis normal to each plane, used to pair planes with the volume's axes.
_NORMALS = {"axial": 2, "coronal": 1, "sagittal": 0}
MAX_RECONSTRUCTED_ROWS = 2048
ORIENTATION_TOLERANCE = 1e-3  # direction cosines that differ less are "the same"
SPACING_TOLERANCE = 1e-3  # relative
SHEAR_TOLERANCE = 0.1  # in-plane drift of positions, as a fraction of a pixel


@dataclass(frozen=True)
class Slice:
    """One stored single-frame image: where it is and its pixels (stored values)."""

    sop_instance_uid: str
    frame_of_reference_uid: str
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]  # between rows, between columns (mm)
    rescale: tuple[float, float]  # slope, intercept
    pixels: NDArray[Any]  # (Rows, Columns)


@dataclass(frozen=True)
class Volume:
    """Slices sorted along their normal. `axes[0]` is the normal, `axes[1]` the
    direction of increasing row index (column cosines), `axes[2]` of increasing column
    index (row cosines); `distances` are each slice's offset from `origin` along the
    normal (the first is 0, strictly increasing)."""

    voxels: NDArray[Any]  # (slices, rows, columns)
    origin: NDArray[np.float64]
    axes: NDArray[np.float64]  # (3, 3)
    distances: NDArray[np.float64]
    pixel_spacing: tuple[float, float]
    frame_of_reference_uid: str
    header: Dataset  # rendering and identification attributes of the series

    @property
    def nbytes(self) -> int:
        return int(self.voxels.nbytes)


@dataclass(frozen=True)
class Plane:
    """How one named plane is cut from a volume and shown.

    `step` is the volume axis frames step along; `row_axis` and `col_axis` the volume
    axes of the displayed rows and columns; each sign says whether the display runs
    along (+1) or against (-1) that axis."""

    name: str
    step: int
    step_sign: int
    row_axis: int
    row_sign: int
    col_axis: int
    col_sign: int
    normal_grid: NDArray[np.float64] | None  # sample distances when the normal is in-plane

    def frame_count(self, volume: Volume) -> int:
        return _axis_coordinates(volume, self, self.step).size

    def size(self, volume: Volume) -> tuple[int, int]:
        """(rows, columns) of every frame."""
        return (_axis_coordinates(volume, self, self.row_axis).size,
                _axis_coordinates(volume, self, self.col_axis).size)


@dataclass(frozen=True)
class FrameGeometry:
    """Image Plane attributes (PS3.3 C.7.6.2) of one reconstructed frame."""

    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]


# ---------------------------------------------------------------------- building
def build_volume(slices: Sequence[Slice], header: Dataset,
                 voxels: NDArray[Any] | None = None) -> Volume:
    """Sort `slices` along their normal into a volume; `InvalidRequest` says why not.

    `voxels`, when given, is an array whose [i] holds slice i's pixels (the caller read
    them straight into it): it is sorted in place and becomes the volume, so the volume
    is in memory once, not twice."""
    if len(slices) < 2:
        raise InvalidRequest(f"the series has {len(slices)} image(s) with pixel data; a "
                             "reconstruction needs at least 2 parallel slices")
    first = slices[0]
    for s in slices[1:]:
        check_same(first, s)
    row_cos = np.array(first.orientation[:3], dtype=np.float64)
    col_cos = np.array(first.orientation[3:], dtype=np.float64)
    normal = np.cross(row_cos, col_cos)
    if not math.isclose(float(np.linalg.norm(normal)), 1.0, abs_tol=1e-2):
        raise InvalidRequest(f"ImageOrientationPatient {list(first.orientation)} of "
                             f"{first.sop_instance_uid} is not two orthogonal unit vectors")
    positions = np.array([s.position for s in slices], dtype=np.float64)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    sorted_slices = [slices[i] for i in order]
    gaps = np.diff(along)
    same = int(np.argmin(gaps))
    if gaps[same] < 1e-3:
        raise InvalidRequest(
            f"images {sorted_slices[same].sop_instance_uid} and "
            f"{sorted_slices[same + 1].sop_instance_uid} lie at the same position along the "
            f"slice normal ({along[same]:.3f} mm): the series holds more than one volume "
            "(several phases or echoes?); reconstruct one at a time")
    # Every slice's position, less its offset along the normal, must be the first's:
    # otherwise the slices are sheared (gantry tilt), which these planes cannot show.
    drift = positions - positions[0] - np.outer(along - along[0], normal)
    worst = int(np.argmax(np.linalg.norm(drift, axis=1)))
    offset = float(np.linalg.norm(drift[worst]))
    if offset > SHEAR_TOLERANCE * min(first.pixel_spacing):
        tilt = math.degrees(math.atan2(offset, float(along[worst] - along[0])))
        raise InvalidRequest(
            f"ImagePositionPatient of {sorted_slices[worst].sop_instance_uid} is {offset:.2f} "
            f"mm off the normal of the first slice (a gantry tilt of about {tilt:.1f} degrees): "
            "sheared volumes are not reconstructed")
    if voxels is None:
        voxels = np.stack([s.pixels for s in sorted_slices])
    else:
        voxels = voxels[:len(slices)]
        _permute_in_place(voxels, [int(i) for i in order])
    return Volume(voxels=voxels, origin=positions[0],
                  axes=np.stack([normal, col_cos, row_cos]),
                  distances=along - along[0], pixel_spacing=first.pixel_spacing,
                  frame_of_reference_uid=first.frame_of_reference_uid, header=header)


def _permute_in_place(array: NDArray[Any], order: list[int]) -> None:
    """array[i] = (old) array[order[i]] for every i, one slice of extra memory: each
    cycle of the permutation is walked once."""
    done = [False] * len(order)
    for start in range(len(order)):
        if done[start] or order[start] == start:
            done[start] = True
            continue
        kept = array[start].copy()
        i = start
        while True:
            done[i] = True
            j = order[i]
            if j == start:
                array[i] = kept
                break
            array[i] = array[j]
            i = j


def check_same(first: Slice, other: Slice) -> None:
    """`InvalidRequest` naming the first attribute in which `other` cannot share a volume
    with `first`."""

    def refuse(what: str, mine: object, theirs: object) -> InvalidRequest:
        return InvalidRequest(f"{what} of {other.sop_instance_uid} is {theirs}, of "
                              f"{first.sop_instance_uid} {mine}: a reconstruction needs one "
                              f"{what} for the whole series")

    if other.frame_of_reference_uid != first.frame_of_reference_uid:
        raise refuse("FrameOfReferenceUID (0020,0052)", first.frame_of_reference_uid,
                     other.frame_of_reference_uid)
    if max(abs(a - b) for a, b in zip(first.orientation, other.orientation,
                                       strict=True)) > ORIENTATION_TOLERANCE:
        raise refuse("ImageOrientationPatient (0020,0037)", list(first.orientation),
                     list(other.orientation))
    if other.pixels.shape != first.pixels.shape:
        raise refuse("Rows x Columns", "x".join(map(str, first.pixels.shape)),
                     "x".join(map(str, other.pixels.shape)))
    if any(abs(a - b) > SPACING_TOLERANCE * a
           for a, b in zip(first.pixel_spacing, other.pixel_spacing, strict=True)):
        raise refuse("PixelSpacing (0028,0030)", list(first.pixel_spacing),
                     list(other.pixel_spacing))
    if other.rescale != first.rescale:
        raise refuse("RescaleSlope/RescaleIntercept", list(first.rescale), list(other.rescale))
    if other.pixels.dtype != first.pixels.dtype:
        raise refuse("pixel type", first.pixels.dtype, other.pixels.dtype)


# ---------------------------------------------------------------------- planes
def plane(volume: Volume, name: str) -> Plane:
    """The named plane ("axial", "coronal", "sagittal") of `volume`; `NotFound` for
    another name."""
    if name not in PLANES:
        raise NotFound(f"plane {name!r} is not one of {', '.join(PLANES)}")
    steps = _pair_planes_with_axes(volume.axes)
    step = steps[name]
    step_dir, col_dir, row_dir = (np.array(v, dtype=np.float64) for v in _DISPLAY[name])
    p, q = (a for a in range(3) if a != step)
    col_axis = p if abs(volume.axes[p] @ col_dir) >= abs(volume.axes[q] @ col_dir) else q
    row_axis = q if col_axis == p else p
    grid = None
    if step != 0:
        # The normal lies in this plane: sample it as finely as the other in-plane axis
        # (square pixels), coarser only if that would give an absurd number of rows.
        other = col_axis if row_axis == 0 else row_axis
        h = volume.pixel_spacing[0] if other == 1 else volume.pixel_spacing[1]
        extent = float(volume.distances[-1])
        h = max(h, extent / (MAX_RECONSTRUCTED_ROWS - 1))
        grid = np.arange(int(math.floor(extent / h + 1e-6)) + 1, dtype=np.float64) * h
        shown_from_top = _sign(volume.axes[0] @ (row_dir if row_axis == 0 else col_dir)) < 0
        if shown_from_top:
            # The grid starts where the display starts: the first row is a stored slice.
            grid = np.sort(extent - grid)
    return Plane(name, step, _sign(volume.axes[step] @ step_dir), row_axis,
                 _sign(volume.axes[row_axis] @ row_dir), col_axis,
                 _sign(volume.axes[col_axis] @ col_dir), grid)


def _sign(value: float) -> int:
    return -1 if value < 0 else 1


def _pair_planes_with_axes(axes: NDArray[np.float64]) -> dict[str, int]:
    """Each plane's stepping axis: the permutation of the volume's axes that lines them
    up best with the patient's (largest sum of |cosines|)."""
    best: tuple[float, tuple[int, int, int]] | None = None
    for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        score = sum(abs(float(axes[perm[k]][_NORMALS[p]])) for k, p in enumerate(PLANES))
        if best is None or score > best[0] + 1e-9:
            best = (score, perm)
    assert best is not None
    return {p: best[1][k] for k, p in enumerate(PLANES)}


def _axis_coordinates(volume: Volume, plane: Plane, axis: int) -> NDArray[np.float64]:
    """Sample positions (mm from the origin, along the volume axis) in volume order."""
    if axis == 0:
        return plane.normal_grid if plane.normal_grid is not None else volume.distances
    spacing = volume.pixel_spacing[0] if axis == 1 else volume.pixel_spacing[1]
    return np.arange(volume.voxels.shape[axis], dtype=np.float64) * spacing


def _ordered(coords: NDArray[np.float64], sign: int) -> NDArray[np.float64]:
    return coords if sign > 0 else coords[::-1]


def frame_geometry(volume: Volume, plane: Plane, number: int) -> FrameGeometry:
    """Position, orientation and spacing of frame `number` (1-based) of `plane`."""
    index = _check_number(volume, plane, number)
    step = _ordered(_axis_coordinates(volume, plane, plane.step), plane.step_sign)[index]
    rows = _ordered(_axis_coordinates(volume, plane, plane.row_axis), plane.row_sign)
    cols = _ordered(_axis_coordinates(volume, plane, plane.col_axis), plane.col_sign)
    corner = (volume.origin + step * volume.axes[plane.step]
              + rows[0] * volume.axes[plane.row_axis] + cols[0] * volume.axes[plane.col_axis])
    row_dir = plane.col_sign * volume.axes[plane.col_axis]
    col_dir = plane.row_sign * volume.axes[plane.row_axis]
    return FrameGeometry(
        position=tuple(round(float(v), 4) + 0.0 for v in corner),  # type: ignore[arg-type]
        orientation=tuple(round(float(v), 6) + 0.0 for v in (*row_dir, *col_dir)),  # type: ignore[arg-type]
        pixel_spacing=(_spacing(rows), _spacing(cols)),
    )


def _spacing(coords: NDArray[np.float64]) -> float:
    return round(float(abs(coords[1] - coords[0])), 6) if coords.size > 1 else 1.0


def _check_number(volume: Volume, plane: Plane, number: int) -> int:
    count = plane.frame_count(volume)
    if not 1 <= number <= count:
        raise NotFound(f"frame {number} does not exist: the {plane.name} reconstruction has "
                       f"{count} frame(s), numbered from 1")
    return number - 1


def frame_pixels(volume: Volume, plane: Plane, number: int) -> NDArray[Any]:
    """Frame `number` (1-based) of `plane`: (rows, columns) stored values, the volume's
    dtype; along the normal, linear between the two nearest slices (rounded)."""
    index = _check_number(volume, plane, number)
    size = volume.voxels.shape[plane.step]
    if plane.step == 0:
        k = index if plane.step_sign > 0 else size - 1 - index
        image: NDArray[Any] = volume.voxels[k]
        axes = (1, 2)
    else:
        fixed = index if plane.step_sign > 0 else size - 1 - index
        assert plane.normal_grid is not None
        below, weight = _interpolation(volume.distances, plane.normal_grid)
        take = (slice(None), fixed, slice(None)) if plane.step == 1 else (
            slice(None), slice(None), fixed)
        sheet = volume.voxels[take]  # (slices, other axis)
        low = sheet[below].astype(np.float32)
        high = sheet[below + 1].astype(np.float32)
        mixed = low + (high - low) * weight[:, None].astype(np.float32)
        image = _as_stored(mixed, volume.voxels.dtype)
        axes = (0, 2) if plane.step == 1 else (0, 1)
    if axes[0] != plane.row_axis:
        image = image.T
    if plane.row_sign < 0:
        image = image[::-1, :]
    if plane.col_sign < 0:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def _interpolation(distances: NDArray[np.float64], grid: NDArray[np.float64]
                   ) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """For each grid distance: the slice below it and the weight of the one above."""
    below = np.clip(np.searchsorted(distances, grid, side="right") - 1, 0,
                    distances.size - 2)
    gap = distances[below + 1] - distances[below]
    weight = np.clip((grid - distances[below]) / gap, 0.0, 1.0)
    return below, weight


def _as_stored(values: NDArray[np.float32], dtype: np.dtype[Any]) -> NDArray[Any]:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


# ---------------------------------------------------------------------- metadata
_COPIED = ("SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID",
           "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
           "AccessionNumber", "StudyDescription", "StudyID", "SeriesInstanceUID",
           "SeriesNumber", "SeriesDescription", "Modality", "BodyPartExamined",
           "SliceThickness", "PhotometricInterpretation", "BitsStored", "HighBit",
           "PixelRepresentation", "RescaleSlope", "RescaleIntercept", "RescaleType",
           "WindowCenter", "WindowWidth", "VOILUTFunction", "WindowCenterWidthExplanation")


def frame_dataset(volume: Volume, plane: Plane, number: int) -> Dataset:
    """What a viewer needs of frame `number`: identification, image pixel description and
    the Image Plane module of the reconstructed frame. Not a stored instance: its SOP
    Instance UID is derived (2.25 form, PS3.5 B.2) from the series, plane and frame."""
    geometry = frame_geometry(volume, plane, number)
    rows, columns = plane.size(volume)
    ds = Dataset()
    for keyword in _COPIED:
        if keyword in volume.header:
            setattr(ds, keyword, volume.header.data_element(keyword).value)  # type: ignore[union-attr]
    series = str(volume.header.get("SeriesInstanceUID", ""))
    ds.SOPInstanceUID = derived_uid(series, plane.name, number)
    ds.ImageType = ["DERIVED", "SECONDARY", "REFORMATTED"]
    ds.DerivationDescription = (f"minipacs MPR {plane.name} plane, linear interpolation "
                                "along the slice normal")
    ds.SeriesDescription = f"{volume.header.get('SeriesDescription', '')} MPR {plane.name}".strip()
    ds.InstanceNumber = number
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = volume.voxels.dtype.itemsize * 8
    ds.FrameOfReferenceUID = volume.frame_of_reference_uid
    ds.ImagePositionPatient = list(geometry.position)
    ds.ImageOrientationPatient = list(geometry.orientation)
    ds.PixelSpacing = list(geometry.pixel_spacing)
    ds.NumberOfFrames = 1
    return ds


def plane_metadata(volume: Volume, plane: Plane) -> list[dict[str, Any]]:
    """DICOM JSON (PS3.18 F.2) of every frame of `plane`, in frame order: the first
    frame's data set made once, then only what differs per frame (UID, number, position)
    set in copies (a data set per frame took seconds for a 512-frame plane)."""
    template = frame_dataset(volume, plane, 1).to_json_dict()
    series = str(volume.header.get("SeriesInstanceUID", ""))
    steps = _ordered(_axis_coordinates(volume, plane, plane.step), plane.step_sign)
    first = np.array(frame_geometry(volume, plane, 1).position, dtype=np.float64)
    direction = volume.axes[plane.step]
    items = []
    for index, step in enumerate(steps):
        position = first + (step - steps[0]) * direction
        item = dict(template)
        item["00080018"] = {"vr": "UI", "Value": [derived_uid(series, plane.name, index + 1)]}
        item["00200013"] = {"vr": "IS", "Value": [index + 1]}
        item["00200032"] = {"vr": "DS", "Value": [round(float(v), 4) + 0.0 for v in position]}
        items.append(item)
    return items


def derived_uid(series_uid: str, plane_name: str, number: int) -> str:
    digest = hashlib.sha256(f"mpr|{series_uid}|{plane_name}|{number}".encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))
