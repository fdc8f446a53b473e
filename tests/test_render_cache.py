"""The first render and its cache (docs/performance.md "Rendered, fourth pass"): the
header of a rendered instance comes from the frames' header cache unless the patient was
reconciled."""

from __future__ import annotations

import io

from pydicom import dcmread

from factories import make_instance
from minipacs.archive import Archive
from minipacs.dicom import pixel_headers
from minipacs.dicom.frames import decode_frame
from minipacs.dicom.render import RenderOptions, render_frame
from minipacs.imaging import Imaging


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
