"""A stored instance's patient attributes, corrected as it is served (reconciliation).

Stored bytes are never rewritten: when a patient's demographics are corrected or two
patients are merged (`emr/reconciliation.py`), the index keeps the corrected values and
each affected instance is served with them. Two pure helpers do that:

- `overlay_json` puts the values into an instance's DICOM JSON (the stored metadata);
- `patched_header` re-encodes only the header of a Part-10 file (preamble, file meta
  and the data set up to Pixel Data) with the values, and says where the unchanged
  remainder of the stored file starts, so pixel data is copied through, never decoded.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from minipacs.dicom.json_model import element

# The Patient module attributes reconciliation corrects (PS3.3 C.7.1.1), by keyword.
PATIENT_TAGS: dict[str, str] = {
    "PatientName": "00100010",
    "PatientID": "00100020",
    "IssuerOfPatientID": "00100021",
    "PatientBirthDate": "00100030",
    "PatientSex": "00100040",
}
UTF8 = "ISO_IR 192"


def values_of_json(model: Mapping[str, Any]) -> dict[str, str]:
    """The patient attributes of a DICOM JSON object, keyword -> text ("" if absent)."""
    out = {}
    for keyword, key in PATIENT_TAGS.items():
        values = (model.get(key) or {}).get("Value") or [""]
        first = values[0]
        if isinstance(first, dict):  # PN (PS3.18 F.2.2): component groups joined by "="
            groups = [first.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
            first = "=".join(groups).rstrip("=")
        out[keyword] = str(first)
    return out


def overlay_json(model: dict[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """`model` with the patient attributes set to `values` (changed in place, returned)."""
    for keyword, value in values.items():
        key = PATIENT_TAGS[keyword]
        model[key] = element(key, value)
    return model


def patched_header(source: BinaryIO, values: Mapping[str, str]) -> tuple[bytes, int]:
    """(header, offset): the Part-10 header of `source` re-encoded with `values`, and the
    offset in `source` where the bytes to copy unchanged after it begin (Pixel Data or
    whatever follows the header). Same transfer syntax, same preamble; the file meta
    group length is recomputed. Values that the stored character set cannot encode
    switch the data set to UTF-8 (ISO_IR 192), every other text element re-encoded.

    A deflated data set (PS3.5 A.5) is compressed as a whole: it is re-encoded whole."""
    source.seek(0)
    ds = dcmread(source, stop_before_pixels=True)
    offset = source.tell()
    deflated = ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    if deflated:
        source.seek(0)
        ds = dcmread(source)
        source.seek(0, io.SEEK_END)
        offset = source.tell()
    _apply(ds, values)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue(), offset


def _apply(ds: Dataset, values: Mapping[str, str]) -> None:
    charset = ds.get("SpecificCharacterSet", "")
    charsets = [charset] if isinstance(charset, str) else list(charset)
    if not all(v.isascii() for v in values.values()) and charsets != [UTF8]:
        # Decode every text element with the stored character set before switching:
        # elements still raw would otherwise be decoded as UTF-8 when written.
        for elem in ds.iterall():
            _ = elem.value
        ds.SpecificCharacterSet = UTF8
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    # Data set group lengths (gggg,0000; retired, PS3.5 7.2) would no longer be true.
    for tag in [t for t in ds.keys() if t.element == 0 and t.group > 2]:
        del ds[tag]
