"""Volumes of stored series for multiplanar reconstruction, built through the Archive
and kept in memory (least recently used first out, bounded in bytes).

A service next to `imaging.py`: it lists a series with `Archive.instances` (permission
checked and the read audited on every request, cached volume or not), reads the pixels
with `Archive.open_instance`, and leaves the geometry to `dicom/mpr.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.dataset import Dataset

from minipacs.archive import Archive, InstanceRecord
from minipacs.dicom.frames import (
    can_decode,
    decode_frame_from_file,
    native_frame_from_file,
    stored_pixels,
)
from minipacs.dicom.mpr import Slice, Volume, build_volume, check_same
from minipacs.errors import InvalidRequest, NotFound

log = logging.getLogger(__name__)


class VolumeCache:
    """Built volumes by key, at most `capacity` bytes of voxels; a key is built once even
    when several requests ask for it together (the others wait for the first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._volumes: OrderedDict[str, Volume] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self.builds = 0  # how many volumes were built (tests and logs)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(v.nbytes for v in self._volumes.values())

    def get(self, key: str, build: Callable[[], Volume]) -> Volume:
        with self._lock:
            volume = self._volumes.get(key)
            if volume is not None:
                self._volumes.move_to_end(key)
                return volume
            gate = self._building.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                volume = self._volumes.get(key)
                if volume is not None:
                    self._volumes.move_to_end(key)
                    return volume
            try:
                volume = build()
            finally:
                with self._lock:
                    self._building.pop(key, None)
            with self._lock:
                self.builds += 1
                self._volumes[key] = volume
                total = sum(v.nbytes for v in self._volumes.values())
                while total > self.capacity and len(self._volumes) > 1:
                    _, dropped = self._volumes.popitem(last=False)
                    total -= dropped.nbytes
                if total > self.capacity:  # alone larger than the cache: serve, keep none
                    self._volumes.clear()
            return volume


class SeriesVolumes:
    """The volume of a stored series, for the principal the archive acts as."""

    def __init__(self, archive: Archive, cache: VolumeCache, max_bytes: int) -> None:
        self.archive = archive
        self.cache = cache
        self.max_bytes = max_bytes

    def volume(self, study_uid: str, series_uid: str) -> Volume:
        """Raises `NotFound` (no such series), `Forbidden`, `InvalidRequest` (cannot be
        a volume, or larger than MINIPACS_MPR_MAX_VOLUME_BYTES)."""
        records = self.archive.instances(study_uid, series_uid)
        # The key names the exact instances (and any patient correction) it is made of:
        # a series that gained or lost an image is built again.
        key = hashlib.sha256("|".join(
            f"{r.sop_instance_uid}:{r.sha256}:{r.patient_patch}" for r in records
        ).encode()).hexdigest()
        return self.cache.get(key, lambda: self._build(records))

    def _build(self, records: list[InstanceRecord]) -> Volume:
        started = time.perf_counter()
        images = [r for r in records if r.number_of_frames != 0]
        multi = next((r for r in images if (r.number_of_frames or 1) > 1), None)
        if multi is not None:
            raise InvalidRequest(
                f"instance {multi.sop_instance_uid} has {multi.number_of_frames} frames: "
                "multi-frame images (enhanced CT/MR, per-frame geometry) are not "
                "reconstructed; only series of single-frame slices are")
        undecodable = next((r for r in images if not can_decode(r.transfer_syntax_uid)), None)
        if undecodable is not None:
            raise InvalidRequest(
                f"instance {undecodable.sop_instance_uid} is stored as "
                f"{undecodable.transfer_syntax_uid}, which no installed codec decodes")
        slices: list[Slice] = []
        voxels: NDArray[Any] | None = None
        for record in images:
            piece = self._slice(record, len(images))
            if piece is None:
                continue
            if voxels is None:
                # Each slice's pixels go straight into the volume: it is in memory once.
                voxels = np.empty((len(images), *piece.pixels.shape), piece.pixels.dtype)
            else:
                check_same(slices[0], piece)
            voxels[len(slices)] = piece.pixels
            slices.append(dataclasses.replace(piece, pixels=voxels[len(slices)]))
        if not slices:
            raise InvalidRequest("the series has no image with pixel data to reconstruct")
        middle = images[len(images) // 2]
        with self.archive.open_instance(middle) as fh:  # patched: what a viewer is shown
            header = dcmread(fh, stop_before_pixels=True)
        volume = build_volume(slices, header, voxels)
        log.info("MPR volume of series %s: %d slices %s, %.0f MB, built in %.2f s",
                 header.get("SeriesInstanceUID", "?"), len(slices),
                 "x".join(map(str, volume.voxels.shape[1:])), volume.nbytes / 1e6,
                 time.perf_counter() - started)
        return volume

    def _slice(self, record: InstanceRecord, count: int) -> Slice | None:
        with self.archive.open_instance(record, as_stored=True) as fh:
            try:
                pixels = stored_pixels(fh)
            except NotFound:
                return None  # no pixel data (a stray non-image object): not part of it
            header = pixels.header
            self._check_size(header, count)
            frame = native_frame_from_file(fh, pixels, 1)
            if frame is None:
                fh.seek(0)
                frame, _ = decode_frame_from_file(fh, 1)
        uid = record.sop_instance_uid
        if frame.pixels.ndim != 2:
            raise InvalidRequest(f"instance {uid} is colour ({frame.photometric_interpretation}"
                                 "): only greyscale series are reconstructed")
        return Slice(
            sop_instance_uid=uid,
            frame_of_reference_uid=str(header.get("FrameOfReferenceUID", "")),
            position=_numbers(header, "ImagePositionPatient", 3, uid),  # type: ignore[arg-type]
            orientation=_numbers(header, "ImageOrientationPatient", 6, uid),  # type: ignore[arg-type]
            pixel_spacing=_numbers(header, "PixelSpacing", 2, uid),  # type: ignore[arg-type]
            rescale=(float(header.get("RescaleSlope", 1) or 1),
                     float(header.get("RescaleIntercept", 0) or 0)),
            pixels=frame.pixels,
        )

    def _check_size(self, header: Dataset, count: int) -> None:
        bits = int(header.get("BitsAllocated", 16))
        size = int(header.Rows) * int(header.Columns) * max(bits, 8) // 8 * count
        if size > self.max_bytes:
            raise InvalidRequest(
                f"the series would be a {size / 2**20:.0f} MiB volume ({count} images of "
                f"{header.Rows}x{header.Columns}, {bits} bits); at most "
                f"{self.max_bytes / 2**20:.0f} MiB are reconstructed "
                "(MINIPACS_MPR_MAX_VOLUME_BYTES)")


def _numbers(header: Dataset, keyword: str, count: int, uid: str) -> tuple[float, ...]:
    value = header.get(keyword)
    try:
        numbers = tuple(float(v) for v in value) if value is not None else ()
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != count:
        raise InvalidRequest(f"instance {uid} has no usable {keyword} ({value!r}; {count} "
                             "numbers expected): without it the slices cannot be placed")
    return numbers
