"""Multiplanar reconstruction (web/mpr.py, volumes.py, dicom/mpr.py) against a real server.

The synthetic CT: 40 axial slices of 64x64 at irregular heights (gaps of 2 and 3 mm),
PixelSpacing 0.5 mm between rows and 1 mm between columns, stored in shuffled order,
each voxel's stored value 3*row + 5*column + 4*z (z in mm): linear in every direction,
so a correct reslice is known exactly everywhere, interpolated rows included.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless, generate_uid

from conftest import ServerProcess, open_test_archive
from dicomweb_peers import multipart_parts, store, stow
from factories import make_instance
from minipacs.config import Settings
from minipacs.dicom.mpr import Slice, build_volume, frame_dataset, frame_pixels, plane
from minipacs.errors import InvalidRequest
from minipacs.volumes import SeriesVolumes, VolumeCache

ROWS = COLUMNS = 64
ORIGIN_X, ORIGIN_Y = -32.0, -16.0
ROW_SPACING, COLUMN_SPACING = 0.5, 1.0
HEIGHTS = [10.0 + sum(2.0 if g % 2 == 0 else 3.0 for g in range(k)) for k in range(40)]
Z_TOP = HEIGHTS[-1]


def _value(i: float, j: float, z: float) -> float:
    return 3 * i + 5 * j + 4 * z


def _slice_pixels(z: float) -> np.ndarray:
    i, j = np.mgrid[0:ROWS, 0:COLUMNS]
    return _value(i, j, z).astype(np.int16)


@dataclass(frozen=True)
class Series:
    study: str
    series: str

    def path(self, tail: str = "") -> str:
        return f"/studies/{self.study}/series/{self.series}/mpr{tail}"


FRAME_OF_REFERENCE = generate_uid()


def _ct_slices(study: str, series: str, heights: list[float], **extra: object) -> list[bytes]:
    frame_of_reference = FRAME_OF_REFERENCE
    out = []
    for number, z in enumerate(heights, start=1):
        values = {"ImagePositionPatient": [ORIGIN_X, ORIGIN_Y, z],
                  "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
                  "PixelSpacing": [ROW_SPACING, COLUMN_SPACING],
                  "FrameOfReferenceUID": frame_of_reference, "SliceThickness": 2,
                  "WindowCenter": 40, "WindowWidth": 400, **extra}
        out.append(make_instance(modality="CT", study_uid=study, series_uid=series,
                                 rows=ROWS, columns=COLUMNS, InstanceNumber=number,
                                 PixelData=_slice_pixels(z).tobytes(), **values))
    return out


@pytest.fixture(scope="module")
def ct(server: ServerProcess) -> Series:
    study, series = generate_uid(), generate_uid()
    # InstanceNumber in another order than the heights (the archive lists instances by
    # InstanceNumber: the volume is sorted by position, in place), stored in a third order.
    heights = random.Random(3).sample(HEIGHTS, len(HEIGHTS))
    slices = _ct_slices(study, series, heights)
    random.Random(7).shuffle(slices)
    store(server, *slices)
    return Series(study, series)


def _get(server: ServerProcess, path: str, accept: str | None = None,
         headers: dict[str, str] | None = None, **params: str) -> httpx.Response:
    head = {**(headers if headers is not None else server.auth),
            **({"Accept": accept} if accept else {})}
    return httpx.get(server.dicomweb_url + path, headers=head, params=params, timeout=120)


def _frame(server: ServerProcess, series: Series, plane: str, number: int,
           shape: tuple[int, int]) -> np.ndarray:
    response = _get(server, series.path(f"/{plane}/frames/{number}"))
    assert response.status_code == 200, response.text
    ((headers, data),) = multipart_parts(response)
    assert headers["x-bits-allocated"] == "16"
    assert headers["x-pixel-representation"] == "1"
    return np.frombuffer(data, dtype="<i2").reshape(shape)


def _metadata(server: ServerProcess, series: Series, plane: str) -> list[dict]:
    response = _get(server, series.path(f"/{plane}"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    return response.json()


def _values(item: dict, tag: str) -> list:
    return item[tag]["Value"]


# ---------------------------------------------------------------------- geometry and pixels
def test_coronal_frames_are_the_volume_cut_at_each_row_with_square_pixels(
    server: ServerProcess, ct: Series
) -> None:
    items = _metadata(server, ct, "coronal")
    heights = int((Z_TOP - HEIGHTS[0]) / COLUMN_SPACING) + 1  # 1 mm grid: the column spacing
    assert len(items) == ROWS
    first, tenth = items[0], items[9]
    assert _values(first, "00280010") == [heights] and _values(first, "00280011") == [COLUMNS]
    assert _values(first, "00280030") == [COLUMN_SPACING, COLUMN_SPACING]
    assert _values(first, "00200037") == [1, 0, 0, 0, 0, -1]
    assert _values(tenth, "00200032") == [ORIGIN_X, ORIGIN_Y + 9 * ROW_SPACING, Z_TOP]
    assert _values(tenth, "00200013") == [10]
    assert _values(tenth, "00200052") == _values(first, "00200052")
    assert _values(first, "00281052") == [-1024]  # rescale of the source: HU as stored

    pixels = _frame(server, ct, "coronal", 10, (heights, COLUMNS))
    r, c = np.mgrid[0:heights, 0:COLUMNS]
    expected = _value(9, c, Z_TOP - r * COLUMN_SPACING)
    at_slices = np.isin(Z_TOP - r[:, 0], HEIGHTS)
    assert at_slices.sum() == len(HEIGHTS)
    # Rows through stored slices are those slices' pixels exactly; between, interpolated.
    assert np.array_equal(pixels[at_slices], expected[at_slices])
    assert np.abs(pixels.astype(float) - expected).max() <= 1


def test_sagittal_frames_step_right_to_left_with_rows_head_to_feet(
    server: ServerProcess, ct: Series
) -> None:
    items = _metadata(server, ct, "sagittal")
    heights = int((Z_TOP - HEIGHTS[0]) / ROW_SPACING) + 1  # 0.5 mm grid: the row spacing
    assert len(items) == COLUMNS
    item = items[20]
    assert _values(item, "00200037") == [0, 1, 0, 0, 0, -1]
    assert _values(item, "00200032") == [ORIGIN_X + 20 * COLUMN_SPACING, ORIGIN_Y, Z_TOP]
    assert _values(item, "00280030") == [ROW_SPACING, ROW_SPACING]
    assert _values(item, "00280010") == [heights] and _values(item, "00280011") == [ROWS]
    pixels = _frame(server, ct, "sagittal", 21, (heights, ROWS))
    r, c = np.mgrid[0:heights, 0:ROWS]
    expected = _value(c, 20, Z_TOP - r * ROW_SPACING)
    assert np.abs(pixels.astype(float) - expected).max() <= 1
    at_slices = np.isin(Z_TOP - r[:, 0] * ROW_SPACING, HEIGHTS)
    assert np.array_equal(pixels[at_slices], expected[at_slices])


def test_axial_frames_are_the_stored_slices_from_head_to_feet(
    server: ServerProcess, ct: Series
) -> None:
    items = _metadata(server, ct, "axial")
    assert len(items) == len(HEIGHTS)
    assert [_values(i, "00200032")[2] for i in items] == sorted(HEIGHTS, reverse=True)
    assert _values(items[0], "00200037") == [1, 0, 0, 0, 1, 0]
    assert _values(items[0], "00280030") == [ROW_SPACING, COLUMN_SPACING]
    pixels = _frame(server, ct, "axial", 5, (ROWS, COLUMNS))
    assert np.array_equal(pixels, _slice_pixels(sorted(HEIGHTS, reverse=True)[4]))


def test_a_frame_rendered_uses_the_window_of_the_request(server: ServerProcess, ct: Series
                                                         ) -> None:
    response = _get(server, ct.path("/coronal/frames/1/rendered"), accept="image/png",
                    window="-1000,4000")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG")
    single = _get(server, ct.path("/coronal/frames/1"), accept="application/octet-stream")
    assert single.status_code == 200
    assert single.headers["x-photometric-interpretation"] == "MONOCHROME2"
    assert len(single.content) == (int(Z_TOP - HEIGHTS[0]) + 1) * COLUMNS * 2


def test_the_first_row_is_the_top_slice_when_the_height_is_no_whole_number_of_pixels(
) -> None:
    # 48 slices 2.5 mm apart: 117.5 mm, sampled every 1 mm from the top down.
    slices = [Slice(str(k), "1.2.3", (-48.0, -48.0, -60.0 + 2.5 * k), (1, 0, 0, 0, 1, 0),
                    (1.0, 1.0), (1.0, -1024.0), np.full((8, 8), 10 * k, np.int16))
              for k in range(48)]
    volume = build_volume(slices, Dataset())
    coronal = plane(volume, "coronal")
    item = frame_dataset(volume, coronal, 1)
    assert item.Rows == 118 and list(item.ImagePositionPatient) == [-48.0, -48.0, 57.5]
    assert list(frame_pixels(volume, coronal, 1)[:3, 0]) == [470, 466, 462]


# ---------------------------------------------------------------------- refusals
def _series_of(server: ServerProcess, *instances: bytes) -> Series:
    response = stow(server, *instances)
    assert response.status_code == 200, response.text
    ds = dcmread(io.BytesIO(instances[0]), stop_before_pixels=True)
    return Series(ds.StudyInstanceUID, ds.SeriesInstanceUID)


def _refusal(server: ServerProcess, series: Series) -> str:
    response = _get(server, series.path("/coronal"))
    assert response.status_code == 400, response.text
    return response.text


def test_a_single_slice_is_refused_naming_the_count(server: ServerProcess) -> None:
    study, series = generate_uid(), generate_uid()
    text = _refusal(server, _series_of(server, *_ct_slices(study, series, [0.0])))
    assert "1 image(s)" in text and "at least 2" in text


def test_mixed_orientations_are_refused_naming_both(server: ServerProcess) -> None:
    study, series = generate_uid(), generate_uid()
    slices = _ct_slices(study, series, [0.0, 2.0, 4.0])
    slices.append(_ct_slices(study, series, [6.0],
                             ImageOrientationPatient=[1, 0, 0, 0, 0, -1])[0])
    text = _refusal(server, _series_of(server, *slices))
    assert "ImageOrientationPatient" in text and "[1.0, 0.0, 0.0, 0.0, 0.0, -1.0]" in text


def test_a_gantry_tilt_is_refused_with_its_angle(server: ServerProcess) -> None:
    study, series = generate_uid(), generate_uid()
    slices = [
        _ct_slices(study, series, [z], ImagePositionPatient=[ORIGIN_X, ORIGIN_Y + z * 0.2, z])[0]
        for z in (0.0, 2.0, 4.0, 6.0)
    ]
    text = _refusal(server, _series_of(server, *slices))
    assert "gantry tilt of about 11.3 degrees" in text


def test_two_slices_at_one_position_are_refused(server: ServerProcess) -> None:
    study, series = generate_uid(), generate_uid()
    text = _refusal(server, _series_of(server, *_ct_slices(study, series, [0.0, 2.0, 2.0])))
    assert "same position" in text


def test_multi_frame_images_are_refused(server: ServerProcess) -> None:
    (item,) = store(server, make_instance(modality="CT", frames=3))
    text = _refusal(server, Series(item.study, item.series))
    assert "3 frames" in text and "multi-frame" in text


def test_unknown_planes_and_frames_are_not_found(server: ServerProcess, ct: Series) -> None:
    response = _get(server, ct.path("/oblique"))
    assert response.status_code == 404 and "axial, coronal, sagittal" in response.text
    response = _get(server, ct.path(f"/sagittal/frames/{COLUMNS + 1}"))
    assert response.status_code == 404 and f"has {COLUMNS} frame(s)" in response.text
    assert _get(server, f"/studies/{ct.study}/series/{generate_uid()}/mpr/axial"
                ).status_code == 404


# ---------------------------------------------------------------------- access and audit
def test_mpr_needs_the_view_permission_and_is_audited(server: ServerProcess, ct: Series
                                                      ) -> None:
    assert _get(server, ct.path("/axial"), headers={}).status_code == 401
    research = server.create_token("mpr-research", "research")
    assert _get(server, ct.path("/axial/frames/1"),
                headers={"Authorization": f"Bearer {research}"}).status_code == 403
    doctor = server.create_token("mpr-doctor", "clinician")
    assert _get(server, ct.path("/sagittal/frames/3"),
                headers={"Authorization": f"Bearer {doctor}"}).status_code == 200
    trail = httpx.get(f"{server.http_url}/admin/audit",
                      params={"actor": "token:mpr-doctor"}, headers=server.auth,
                      timeout=60).json()
    views = [e for e in trail if e["action"] == "view"]
    assert views and views[0]["study_instance_uid"] == ct.study
    assert views[0]["detail"] == f"{len(HEIGHTS)} instances"
    refused = httpx.get(f"{server.http_url}/admin/audit",
                        params={"actor": "token:mpr-research"}, headers=server.auth,
                        timeout=60).json()
    assert any(e["outcome"] == "refused" and e["action"] == "view" for e in refused)


# ---------------------------------------------------------------------- the volume cache
def test_volumes_are_built_once_kept_by_bytes_and_bounded(settings: Settings) -> None:
    archive = open_test_archive(settings)
    try:
        series = []
        for _ in range(2):
            study, uid = generate_uid(), generate_uid()
            for data in _ct_slices(study, uid, HEIGHTS[:10]):
                archive.ingest(data)
            series.append((study, uid))
        one_volume = 10 * ROWS * COLUMNS * 2
        cache = VolumeCache(capacity=one_volume)
        volumes = SeriesVolumes(archive, cache, max_bytes=one_volume)
        first = volumes.volume(*series[0])
        assert volumes.volume(*series[0]) is first and cache.builds == 1
        volumes.volume(*series[1])  # evicts the first: the cache holds one volume
        assert cache.builds == 2 and cache.nbytes == one_volume
        assert volumes.volume(*series[0]) is not first and cache.builds == 3
        # A new slice makes another volume, not the cached one.
        archive.ingest(_ct_slices(*series[0], [HEIGHTS[10]])[0])
        with pytest.raises(InvalidRequest, match="MINIPACS_MPR_MAX_VOLUME_BYTES"):
            volumes.volume(*series[0])
    finally:
        archive.close()


# ---------------------------------------------------------------------- stored compressed
def _compressed_series(server: ServerProcess, syntax: str, **extra: object) -> Series:
    study, uid, frame = generate_uid(), generate_uid(), generate_uid()
    instances = [make_instance(modality="MR", study_uid=study, series_uid=uid,
                               transfer_syntax=syntax, InstanceNumber=k + 1,
                               ImagePositionPatient=[0, 0, 3.0 * k],
                               ImageOrientationPatient=[1, 0, 0, 0, 1, 0], PixelSpacing=[3, 3],
                               FrameOfReferenceUID=frame, **extra)
                 for k in range(3)]
    return _series_of(server, *instances)


def test_slices_stored_compressed_are_decoded_as_for_frames(server: ServerProcess) -> None:
    series = _compressed_series(server, RLELossless)
    # 3 slices 3 mm apart, 3 mm pixels: the sagittal plane is the three slices' column 10.
    slice_pixels = dcmread(io.BytesIO(make_instance(modality="MR"))).pixel_array
    pixels = _get(server, series.path("/sagittal/frames/11"), accept="application/octet-stream")
    assert pixels.status_code == 200, pixels.text
    sagittal = np.frombuffer(pixels.content, dtype="<u2").reshape(3, ROWS)
    assert np.array_equal(sagittal, np.stack([slice_pixels[:, 10]] * 3))


def test_slices_no_installed_codec_decodes_are_refused_naming_the_syntax(
    server: ServerProcess
) -> None:
    mpeg2 = "1.2.840.10008.1.2.4.100"  # MPEG2 Main Profile: no decoder here
    series = _compressed_series(server, mpeg2, encapsulated_frames=[b"\x00\x00\x01\xb3" * 4])
    assert f"stored as {mpeg2}, which no installed codec decodes" in _refusal(server, series)
