"""WADO-RS frames, bulk data, rendered images and thumbnails against a real server."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import get_frame
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)

from conftest import ServerProcess, open_test_archive
from dicomweb_peers import Stored, multipart_parts, store
from factories import make_instance
from node_tools import server_settings
from test_fhir_push import eventually

# (eventually:) the rendered-image cache is written after the answer is sent (web/wado_pixels.py
# `_after_answer`): a test reading the cache right after a response polls for it.

RAW_ACCEPT = ('multipart/related; type="application/octet-stream"; '
              "transfer-syntax=1.2.840.10008.1.2.1")


@pytest.fixture(scope="module")
def ct(server: ServerProcess) -> Stored:
    """A 3-frame CT, Explicit VR LE, with a window in the header."""
    return store(server, make_instance(modality="CT", frames=3, WindowCenter=40,
                                       WindowWidth=400))[0]


def _get(server: ServerProcess, path: str, accept: str | None = None, **params: str
         ) -> httpx.Response:
    headers = {"Accept": accept} if accept else {}
    return httpx.get(server.dicomweb_url + path,
                     headers={**server.auth, **headers}, params=params, timeout=60)




def _image(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


# ---------------------------------------------------------------------- frames
def test_uncompressed_frames_are_the_pixels_of_the_frames_asked_for(
    server: ServerProcess, ct: Stored
) -> None:
    client = DICOMwebClient(url=server.dicomweb_url, headers=server.auth)
    frames = client.retrieve_instance_frames(
        ct.study, ct.series, ct.sop, frame_numbers=[1, 3],
        media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),),
    )
    pixels = ct.dataset().pixel_array
    assert frames == [pixels[0].astype("<i2").tobytes(), pixels[2].astype("<i2").tobytes()]


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLosslessSV1, JPEG2000Lossless,
                                    ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian,
                                    ImplicitVRLittleEndian], ids=lambda ts: ts.name)
def test_compressed_frames_are_decompressed_server_side(server: ServerProcess, syntax: str
                                                       ) -> None:
    (item,) = store(server, make_instance(modality="MR", frames=2, transfer_syntax=syntax))
    response = _get(server, item.path + "/frames/2", RAW_ACCEPT)
    assert response.status_code == 200, response.text
    ((headers, data),) = multipart_parts(response)
    reference = make_instance(modality="MR", frames=2)  # same gradient, uncompressed
    expected = dcmread(io.BytesIO(reference)).pixel_array[1].astype("<u2").tobytes()
    assert data == expected
    assert headers["content-type"] == ("application/octet-stream; "
                                       "transfer-syntax=1.2.840.10008.1.2.1")
    assert headers["x-photometric-interpretation"] == "MONOCHROME2"
    assert headers["content-location"].endswith(item.path + "/frames/2")


def test_ybr_jpeg_frames_come_back_as_interleaved_rgb(server: ServerProcess) -> None:
    (item,) = store(server, make_instance(modality="US", frames=2,
                                          transfer_syntax=JPEGBaseline8Bit))
    ((headers, data),) = multipart_parts(_get(server, item.path + "/frames/1", RAW_ACCEPT))
    assert headers["x-photometric-interpretation"] == "RGB"
    assert headers["x-planar-configuration"] == "0"
    # pydicom decodes YBR_FULL_422 JPEG to RGB; we must return exactly that
    assert data == item.dataset().pixel_array[0].tobytes()


def test_frames_in_the_stored_jpeg_syntax_when_the_client_asks_for_image_jpeg(
    server: ServerProcess
) -> None:
    (item,) = store(server, make_instance(modality="US", frames=3,
                                          transfer_syntax=JPEGBaseline8Bit))
    response = _get(server, item.path + "/frames/1,3", 'multipart/related; type="image/jpeg"')
    parts = multipart_parts(response)
    ds = item.dataset()
    assert [data for _, data in parts] == [
        get_frame(ds.PixelData, i, number_of_frames=3) for i in (0, 2)]
    assert parts[0][0]["content-type"] == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"


def test_frames_as_stored_with_transfer_syntax_star(server: ServerProcess) -> None:
    (item,) = store(server, make_instance(frames=2, transfer_syntax=JPEG2000Lossless))
    response = _get(server, item.path + "/frames/2",
                    'multipart/related; type="application/octet-stream"; transfer-syntax=*')
    ((headers, data),) = multipart_parts(response)
    assert headers["content-type"].startswith("image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90")
    assert data == get_frame(item.dataset().PixelData, 1, number_of_frames=2)


@pytest.mark.parametrize(
    ("suffix", "accept", "status"),
    [("/frames/4", RAW_ACCEPT, 404), ("/frames/0", RAW_ACCEPT, 400),
     ("/frames/1,x", RAW_ACCEPT, 400), ("/frames/1", 'multipart/related; type="image/jp2"', 406),
     ("/frames/1", "text/html", 406)],
)
def test_frame_errors(server: ServerProcess, ct: Stored, suffix: str, accept: str, status: int
                      ) -> None:
    response = _get(server, ct.path + suffix, accept)
    assert response.status_code == status
    assert response.json()["error"]


# ---------------------------------------------------------------------- bulk data
def test_bulkdata_uris_in_metadata_resolve_to_the_values(server: ServerProcess) -> None:
    profile = bytes(range(256)) * 8
    (item,) = store(server, make_instance(modality="OT", ICCProfile=profile))
    client = DICOMwebClient(url=server.dicomweb_url, headers=server.auth)
    meta = client.retrieve_instance_metadata(item.study, item.series, item.sop)
    assert client.retrieve_bulkdata(meta["00282000"]["BulkDataURI"]) == [profile]
    (pixels,) = client.retrieve_bulkdata(meta["7FE00010"]["BulkDataURI"])
    assert pixels == item.dataset().pixel_array.tobytes()


def test_bulkdata_of_an_absent_tag_is_404(server: ServerProcess, ct: Stored) -> None:
    assert _get(server, ct.path + "/bulkdata/00282000").status_code == 404
    assert _get(server, ct.path + "/bulkdata/nothex!!").status_code == 400


# ---------------------------------------------------------------------- rendered
def test_rendered_instance_is_a_jpeg_of_the_image_size(server: ServerProcess, ct: Stored
                                                       ) -> None:
    response = _get(server, ct.path + "/rendered")
    assert response.headers["content-type"] == "image/jpeg"
    image = _image(response)
    assert (image.format, image.size, image.mode) == ("JPEG", (64, 64), "L")


def test_rendered_png_applies_rescale_and_the_requested_window(server: ServerProcess,
                                                               ct: Stored) -> None:
    hu = ct.dataset().pixel_array[0].astype(float) - 1024  # RescaleIntercept -1024
    narrow = np.asarray(_image(_get(server, ct.path + "/rendered", "image/png",
                                    window="-500,1")))
    # Width 1 is a threshold at center - 0.5 (PS3.3 C.11.2.1.2.1)
    assert np.array_equal(narrow, np.where(hu > -500.5, 255, 0))
    wide = np.asarray(_image(_get(server, ct.path + "/rendered", "image/png",
                                  window="0,6000")))
    expected = np.rint(np.clip(((hu + 0.5) / 5999 + 0.5) * 255, 0, 255))
    assert np.abs(wide.astype(int) - expected).max() <= 1
    header = np.asarray(_image(_get(server, ct.path + "/rendered", "image/png")))
    assert not np.array_equal(header, wide)  # the header's 40/400 window was used


def test_monochrome1_renders_inverted(server: ServerProcess) -> None:
    study = generate_uid()
    mono2, mono1 = store(
        server,
        make_instance(modality="DX", study_uid=study),
        make_instance(modality="DX", study_uid=study, PhotometricInterpretation="MONOCHROME1"),
    )
    a = np.asarray(_image(_get(server, mono2.path + "/rendered", "image/png"))).astype(int)
    b = np.asarray(_image(_get(server, mono1.path + "/rendered", "image/png"))).astype(int)
    assert a.std() > 20 and np.array_equal(a + b, np.full_like(a, 255))


def test_rendered_frames_viewport_quality_and_multiframe(server: ServerProcess, ct: Stored
                                                         ) -> None:
    first = _image(_get(server, ct.path + "/frames/1/rendered", "image/png"))
    third = _image(_get(server, ct.path + "/frames/3/rendered", "image/png"))
    assert np.asarray(first).tolist() != np.asarray(third).tolist()
    small = _image(_get(server, ct.path + "/rendered", viewport="32,16"))
    assert small.size == (16, 16)
    low = _get(server, ct.path + "/rendered", quality="5", window="0,4000").content
    high = _get(server, ct.path + "/rendered", quality="100", window="0,4000").content
    assert len(low) < len(high)
    by_param = _get(server, ct.path + "/rendered", accept="image/png")
    assert by_param.headers["content-type"] == "image/png"
    parts = multipart_parts(_get(server, ct.path + "/frames/1,2,3/rendered"))
    assert [h["content-type"] for h, _ in parts] == ["image/jpeg"] * 3


def test_dicomweb_client_retrieves_rendered_instances_and_frames(server: ServerProcess,
                                                                 ct: Stored) -> None:
    client = DICOMwebClient(url=server.dicomweb_url, headers=server.auth)
    png = client.retrieve_instance_rendered(ct.study, ct.series, ct.sop,
                                            media_types=("image/png",),
                                            params={"viewport": "32,32"})
    assert Image.open(io.BytesIO(png)).size == (32, 32)
    jpeg = client.retrieve_instance_frames_rendered(ct.study, ct.series, ct.sop, [2])
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"


def test_rendered_colour_instance_is_rgb(server: ServerProcess) -> None:
    (item,) = store(server, make_instance(modality="US", transfer_syntax=JPEGBaseline8Bit))
    assert _image(_get(server, item.path + "/rendered", "image/png")).mode == "RGB"


def test_rendered_series_and_study_have_one_part_per_instance(server: ServerProcess) -> None:
    study, series = generate_uid(), generate_uid()
    # A Basic Text SR: an image SOP class without Pixel Data is refused at ingest (PS3.3
    # C.7.6.3; it is what a file cut just before its pixels looks like).
    no_pixels = make_instance(study_uid=study, modality="SR",
                              sop_class="1.2.840.10008.5.1.4.1.1.88.11", Rows=None, Columns=None,
                              PixelData=None, SamplesPerPixel=None, BitsAllocated=None,
                              BitsStored=None, HighBit=None, PixelRepresentation=None,
                              PhotometricInterpretation=None)
    store(server, *[make_instance(study_uid=study, series_uid=series, InstanceNumber=n)
                    for n in (1, 2)], make_instance(study_uid=study, modality="MR"), no_pixels)
    series_parts = multipart_parts(_get(server, f"/studies/{study}/series/{series}/rendered"))
    study_parts = multipart_parts(_get(server, f"/studies/{study}/rendered", "image/png"))
    assert len(series_parts) == 2 and len(study_parts) == 3  # the pixel-less one left out
    assert all(Image.open(io.BytesIO(d)).format == "PNG" for _, d in study_parts)


@pytest.mark.parametrize(
    ("params", "accept", "status"),
    [({"window": "40"}, None, 400), ({"viewport": "0,0"}, None, 400),
     ({"quality": "0"}, None, 400), ({}, "image/gif", 406)],
)
def test_rendered_errors(server: ServerProcess, ct: Stored, params: dict[str, str],
                         accept: str | None, status: int) -> None:
    response = _get(server, ct.path + "/rendered", accept, **params)
    assert response.status_code == status
    assert response.json()["error"]


# ---------------------------------------------------------------------- thumbnails
def test_thumbnails_are_small_jpegs_of_the_middle_image_and_are_cached(
    server: ServerProcess
) -> None:
    study, series = generate_uid(), generate_uid()
    items = store(server, *[
        make_instance(study_uid=study, series_uid=series, InstanceNumber=n, rows=256,
                      columns=200, WindowCenter=-1500 + 500 * n, WindowWidth=400)
        for n in (1, 2, 3)])
    study_thumb = _get(server, f"/studies/{study}/thumbnail")
    series_thumb = _get(server, f"/studies/{study}/series/{series}/thumbnail")
    middle = _get(server, items[1].path + "/thumbnail")
    assert study_thumb.headers["content-type"] == "image/jpeg"
    assert _image(study_thumb).size == (100, 128)
    assert study_thumb.content == series_thumb.content == middle.content
    assert middle.content != _get(server, items[0].path + "/thumbnail").content
    # Through the server's own blob store (folder or S3, whichever the run uses).
    archive = open_test_archive(server_settings(server))

    def cached() -> list[str]:
        return [k for k in archive.store.keys(f"derived/{study}/") if k.endswith(".jpg")]

    try:
        eventually(lambda: len(cached()) >= 2, "two thumbnails in the cache")
        # the middle instance's thumbnail once, the first's once
        assert len(cached()) == 2
    finally:
        archive.close()
    assert _image(_get(server, f"/studies/{study}/thumbnail", viewport="64,64")).size == (50, 64)


def test_a_torn_rendered_cache_file_is_rendered_again_not_served(
    server: ServerProcess, ct: Stored
) -> None:
    """The rendered cache is written without fsync: what a crash may leave (an empty or
    zero-filled file) must be recognised and replaced, never sent as the image."""
    first = _get(server, ct.path + "/rendered", "image/jpeg")
    assert first.status_code == 200
    archive = open_test_archive(server_settings(server))
    try:
        keys = eventually(lambda: [k for k in archive.store.keys(f"derived/{ct.study}/")
                                    if archive.store.read(k) == first.content],
                           "the rendered image in the cache")
        assert len(keys) == 1
        torn = b"\0" * len(first.content)  # the length survived the crash, the data did not
        archive.store.put(keys[0], torn)
        assert archive.store.read(keys[0]) == torn
        again = _get(server, ct.path + "/rendered", "image/jpeg")
        assert again.status_code == 200
        assert again.content == first.content
        # and the cache is repaired
        eventually(lambda: archive.store.read(keys[0]) == first.content,
                    "the torn cache file rewritten")
    finally:
        archive.close()


def test_thumbnail_of_unknown_study_is_404_and_bad_uid_400(server: ServerProcess) -> None:
    assert _get(server, "/studies/1.2.3.4.5.6.7.8.9/thumbnail").status_code == 404
    assert _get(server, "/studies/x.y/thumbnail").status_code == 400
