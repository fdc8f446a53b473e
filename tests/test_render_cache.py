"""The first render and its cache (docs/performance.md "Rendered, fourth pass"): the
header of a rendered instance comes from the frames' header cache unless the patient was
reconciled; the cache write happens after the answer, so a kill right after an answer
may lose it, and the next answer, rendered again, is the same bytes."""

from __future__ import annotations

import io

import httpx
from pydicom import dcmread

from conftest import ServerProcess, open_test_archive
from dicomweb_peers import store
from factories import make_instance
from minipacs.archive import Archive
from minipacs.dicom import pixel_headers
from minipacs.dicom.frames import decode_frame
from minipacs.dicom.render import RenderOptions, Viewport, parse_window, render_frame
from minipacs.imaging import Imaging
from node_tools import server_settings
from test_fhir_push import eventually  # polls a condition with a deadline


def _expected(part10: bytes, options: RenderOptions, **changes: str) -> bytes:
    """The image the pure rendering code makes from the whole instance (no cache, no
    ranged read), the header changed as given."""
    ds = dcmread(io.BytesIO(part10))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return render_frame(decode_frame(ds, 1), ds, options)


def test_a_reconciled_patient_s_annotation_uses_the_corrected_header_not_the_cached_one(
    archive: Archive
) -> None:
    # The corrected header as long as the stored one, so the stored Pixel Data offset
    # still fits it: a header taken from the wrong place would not be caught by a failed
    # ranged read.
    data = make_instance(patient_id="P-HDR", patient_name="Old^Name", rows=96, columns=160,
                         PatientBirthDate="19700101", PatientSex="F", IssuerOfPatientID="")
    study = archive.ingest(data).study_instance_uid
    (record,) = archive.instances(study)
    imaging = Imaging(archive)
    pixel_headers.forget_all()
    # A viewer reads the frames first: the stored header (old name) is now cached.
    assert len(list(imaging.iter_frames(record, [1], decode=True))) == 1
    options = RenderOptions(annotation=("patient",))
    before = imaging.rendered(record, None, options)
    assert before == _expected(data, options)

    archive.update_patient(("P-HDR", ""), {"PatientName": "New^Name"}, reason="typo")
    (record,) = archive.instances(study)
    after = imaging.rendered(record, None, options)
    assert after != before
    assert after == _expected(data, options, PatientName="New^Name")
    # Without the annotation the pixels are all there is: the cached header serves.
    plain = RenderOptions()
    assert imaging.rendered(record, None, plain) == _expected(data, plain)


def _get(server: ServerProcess, path: str, **params: str) -> bytes:
    response = httpx.get(server.dicomweb_url + path, params=params, timeout=60,
                         headers={**server.auth, "Accept": "image/jpeg"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    return response.content


def test_rendered_answers_are_the_same_bytes_cached_and_after_a_kill_right_after_one(
    empty_server: ServerProcess
) -> None:
    server = empty_server
    data = make_instance(modality="CT", rows=128, columns=96, WindowCenter=40,
                         WindowWidth=400)
    (item,) = store(server, data)
    rendered, thumbnail = item.path + "/rendered", item.path + "/thumbnail"
    plain = RenderOptions()
    small = RenderOptions(viewport=Viewport(128, 128))
    windowed = RenderOptions(window=parse_window("-600,1500"))

    first = _get(server, rendered)
    assert first == _expected(data, plain)
    assert _get(server, thumbnail) == _expected(data, small)
    archive = open_test_archive(server_settings(server))
    try:
        eventually(lambda: len(list(archive.store.keys(f"derived/{item.study}/"))) == 2,
                    "the rendered image and the thumbnail cached after their answers")
    finally:
        archive.close()
    assert _get(server, rendered) == first  # from the cache now

    # A new image, then the process killed at once: its cache write may be lost or torn.
    assert _get(server, rendered, window="-600,1500") == _expected(data, windowed)
    server.stop(kill=True)
    server.start()
    assert _get(server, rendered, window="-600,1500") == _expected(data, windowed)
    assert _get(server, rendered) == first
    assert _get(server, thumbnail) == _expected(data, small)
