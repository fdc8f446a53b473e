"""WADO-URI (PS3.18 §9) against a real server: each parameter changes the image it
should, DICOM comes back as stored or transcoded, and every bad or missing parameter is
a 400 whose message names it."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from conftest import ServerProcess
from dicomweb_peers import Stored, store
from factories import make_instance


@pytest.fixture(scope="module")
def wide(server: ServerProcess) -> Stored:
    """A 2-frame CT, 128 columns by 64 rows (aspect 2:1), stored RLE-compressed."""
    return store(server, make_instance(rows=64, columns=128, frames=2,
                                       transfer_syntax=RLELossless, patient_id="WURI-1",
                                       patient_name="Trần^Thị Bích", KVP="120",
                                       PatientBirthDate="19750304"))[0]


def _params(stored: Stored, **extra: str) -> dict[str, str]:
    return {"requestType": "WADO", "studyUID": stored.study, "seriesUID": stored.series,
            "objectUID": stored.sop, **extra}


def _get(server: ServerProcess, stored: Stored, **extra: str) -> httpx.Response:
    return httpx.get(f"{server.http_url}/wado", params=_params(stored, **extra), timeout=60,
                     headers=server.auth)


def _png(server: ServerProcess, stored: Stored, **extra: str) -> NDArray[np.uint8]:
    response = _get(server, stored, contentType="image/png", **extra)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


@pytest.mark.parametrize("name", ["requestType", "studyUID", "seriesUID", "objectUID"])
def test_a_missing_required_parameter_is_400_naming_it(server: ServerProcess, wide: Stored,
                                                        name: str) -> None:
    params = _params(wide)
    del params[name]
    response = httpx.get(f"{server.http_url}/wado", params=params, headers=server.auth)
    assert response.status_code == 400
    assert name in response.text and "missing" in response.text


def test_window_center_and_width_change_the_rendered_pixels(server: ServerProcess,
                                                            wide: Stored) -> None:
    # HU here run from -2024 to about 976 (factory gradient, rescale intercept -1024).
    soft = _png(server, wide, windowCenter="-524", windowWidth="3000")
    narrow = _png(server, wide, windowCenter="-500", windowWidth="50")
    assert soft.shape == narrow.shape == (64, 128)
    # A window as wide as the data keeps a smooth ramp; a narrow one saturates it.
    assert 20 < len(np.unique(soft)) and len(np.unique(narrow)) < len(np.unique(soft))
    assert np.mean((narrow == 0) | (narrow == 255)) > 0.9
    assert np.mean((soft == 0) | (soft == 255)) < 0.1
    # Exactly the PS3.3 C.11.2.1.2 linear function: at row 32, column 64 the factory
    # stores floor(-1000 + 3000 * (0.4 * 32/64 + 0.3 * 64/128)) = 50, i.e. -974 HU.
    expected = ((-974 - (-524 - 0.5)) / (3000 - 1) + 0.5) * 255
    assert abs(int(soft[32, 64]) - expected) <= 1


def test_rows_and_columns_bound_the_size_keeping_the_aspect(server: ServerProcess,
                                                            wide: Stored) -> None:
    assert _png(server, wide).shape == (64, 128)
    assert _png(server, wide, columns="64").shape == (32, 64)
    assert _png(server, wide, rows="16").shape == (16, 32)
    assert _png(server, wide, rows="16", columns="64").shape == (16, 32)
    assert _png(server, wide, rows="256", columns="256").shape == (128, 256)


def test_region_crops_before_scaling(server: ServerProcess, wide: Stored) -> None:
    full = _png(server, wide)
    left = _png(server, wide, region="0,0,0.5,1")
    assert left.shape == (64, 64)
    assert np.array_equal(left, full[:, :64])
    corner = _png(server, wide, region="0.5,0.5,1,1")
    assert np.array_equal(corner, full[32:, 64:])
    scaled = _png(server, wide, region="0.5,0,1.0,1.0", columns="32")
    assert scaled.shape == (32, 32)
    # The right half is brighter than the left (the ramp rises with the column).
    assert scaled.mean() > left.mean()


def test_frame_number_selects_the_frame(server: ServerProcess, wide: Stored) -> None:
    first = _png(server, wide, windowCenter="0", windowWidth="4000")
    second = _png(server, wide, frameNumber="2", windowCenter="0", windowWidth="4000")
    assert np.array_equal(first, _png(server, wide, frameNumber="1", windowCenter="0",
                                      windowWidth="4000"))
    # Frame 2 is shifted up by 15 % of the range: brighter everywhere.
    assert second.mean() > first.mean() + 10


def test_content_types_and_transfer_syntax(server: ServerProcess, wide: Stored) -> None:
    jpeg = _get(server, wide)
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).format == "JPEG"
    low = _get(server, wide, contentType="image/jpeg", imageQuality="5")
    assert len(low.content) < len(jpeg.content)
    dicom = _get(server, wide, contentType="application/dicom")
    assert dicom.headers["content-type"] == "application/dicom" and dicom.content == wide.data
    explicit = _get(server, wide, contentType="application/dicom",
                    transferSyntax=ExplicitVRLittleEndian)
    ds = dcmread(io.BytesIO(explicit.content))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(ds.pixel_array, wide.dataset().pixel_array)
    # transferSyntax alone means DICOM: it applies to nothing else.
    assert _get(server, wide, transferSyntax=ExplicitVRLittleEndian).headers[
        "content-type"] == "application/dicom"
    # A preference list: the first type offered wins.
    listed = _get(server, wide, contentType="image/gif,image/png")
    assert listed.headers["content-type"] == "image/png"
    # charset is accepted and changes nothing for images.
    assert _get(server, wide, contentType="image/png", charset="utf-8").content == \
        _get(server, wide, contentType="image/png").content


def test_an_instance_without_pixels_defaults_to_dicom(server: ServerProcess) -> None:
    # A Basic Text SR: an image SOP class without Pixel Data is refused at ingest.
    [stored] = store(server, make_instance(
        modality="SR", sop_class="1.2.840.10008.5.1.4.1.1.88.11", patient_id="WURI-2",
        PixelData=None, Rows=None, Columns=None, SamplesPerPixel=None, BitsAllocated=None,
        BitsStored=None, HighBit=None, PixelRepresentation=None,
        PhotometricInterpretation=None))
    response = _get(server, stored)
    assert response.headers["content-type"] == "application/dicom"
    assert response.content == stored.data
    assert _get(server, stored, contentType="image/png").status_code == 404


@pytest.mark.parametrize(
    ("change", "named"),
    [({"requestType": "WADOX"}, "requestType"),
     ({"studyUID": "bad uid"}, "studyUID"),
     ({"windowCenter": "40"}, "windowWidth"),
     ({"windowWidth": "400"}, "windowCenter"),
     ({"windowCenter": "40", "windowWidth": "0"}, "windowWidth"),
     ({"windowCenter": "abc", "windowWidth": "10"}, "windowCenter"),
     ({"rows": "0"}, "rows"), ({"columns": "wide"}, "columns"), ({"rows": "9000"}, "rows"),
     ({"region": "0,0,1"}, "region"), ({"region": "0.5,0,0.2,1"}, "region"),
     ({"region": "0,0,1.5,1"}, "region"),
     ({"frameNumber": "3"}, "frameNumber"), ({"frameNumber": "0"}, "frameNumber"),
     ({"imageQuality": "101"}, "imageQuality"),
     ({"annotation": "patient,weather"}, "annotation"),
     ({"contentType": "application/dicom", "rows": "32"}, "rows"),
     ({"contentType": "application/dicom", "annotation": "patient"}, "annotation"),
     ({"contentType": "image/png", "transferSyntax": ExplicitVRLittleEndian},
      "transferSyntax"),
     ({"anonymize": "yes"}, "anonymize"),
     ({"presentationUID": "1.2.3", "presentationSeriesUID": "1.2.4"}, "presentationUID"),
     ({"presentationSeriesUID": "1.2.4"}, "presentationSeriesUID")],
)
def test_bad_parameters_are_400_naming_the_parameter(server: ServerProcess, wide: Stored,
                                                     change: dict[str, str], named: str
                                                     ) -> None:
    response = _get(server, wide, **change)
    assert response.status_code == 400, response.text
    assert named in response.text
    # The server keeps serving.
    assert _get(server, wide).status_code == 200


def test_unknown_instances_and_types_keep_their_statuses(server: ServerProcess,
                                                         wide: Stored) -> None:
    assert _get(server, wide, objectUID="1.2.3.4.5.6.7").status_code == 404
    assert _get(server, wide, contentType="text/html").status_code == 406
    bad_ts = _get(server, wide, contentType="application/dicom",
                  transferSyntax="1.2.840.10008.1.2.4.50")
    assert bad_ts.status_code == 406 and "JPEG Baseline" in bad_ts.text


def test_annotation_burns_text_into_the_corners(server: ServerProcess, wide: Stored) -> None:
    plain = _png(server, wide, rows="256", columns="512")
    patient = _png(server, wide, rows="256", columns="512", annotation="patient")
    both = _png(server, wide, rows="256", columns="512", annotation="patient,technique")
    assert np.array_equal(patient, _png(server, wide, rows="256", columns="512",
                                        annotation="patient"))  # deterministic (and cached)
    top_left, top_right = (slice(0, 60), slice(0, 200)), (slice(0, 60), slice(312, 512))
    assert not np.array_equal(patient[top_left], plain[top_left])
    assert np.array_equal(patient[top_right], plain[top_right])
    assert not np.array_equal(both[top_right], plain[top_right])
    # The middle of the image is untouched.
    assert np.array_equal(both[120:, 150:360], plain[120:, 150:360])
