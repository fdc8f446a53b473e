"""The DICOM JSON and index attributes read from raw elements (`dicom/raw_json.py`,
`header.attributes_of`) are what pydicom's converted values give, for real files and
for generated headers full of odd values; what the raw walk leaves to pydicom still
comes out, and the one deliberate difference (values that break a VR rule are kept)
is as documented."""

from __future__ import annotations

import io
import json
import logging
import random
import struct
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_files
from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from conftest import SAMPLE_DIR
from minipacs.dicom.header import attributes_of, parse_instance
from minipacs.dicom.raw_json import BULK_THRESHOLD, header_json

pytestmark = pytest.mark.door_only  # pure decoding: no backend


def _uri(tag: int) -> str:
    return f"bulk/{tag:08X}"


def _pydicom_json(ds: Dataset) -> dict[str, Any]:
    """pydicom's JSON of each element, items of sequences included, in the lenient
    reading mode the archive reads with (pydicom's strict mode drops values that break
    a VR rule, and a whole sequence for one element it cannot convert; see the last
    tests)."""
    model: dict[str, Any] = {}
    for tag in ds.keys():
        try:
            element = ds[tag]
            if element.VR == "SQ":
                model[f"{tag:08X}"] = {"vr": "SQ",
                                       "Value": [_pydicom_json(i) for i in element.value]}
            else:
                model[f"{tag:08X}"] = element.to_json_dict(lambda e: _uri(e.tag),
                                                           BULK_THRESHOLD)
        except Exception:  # noqa: BLE001 - pydicom cannot convert it: left out by both
            continue
    return model


def _both(read: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return header_json(read(), _uri), _pydicom_json(read())


def _readable(paths: list[str]) -> list[str]:
    good = []
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - pydicom's own broken-on-purpose files
            continue
        good.append(path)
    return good


# Our samples, and pydicom's test and character-set files (big endian, implicit VR,
# private tags, ISO 2022 escapes, sequences, undefined lengths).
_FILES = [str(p) for p in sorted(SAMPLE_DIR.rglob("*.dcm"))[::3]] + _readable(
    sorted(get_testdata_files("*.dcm")) + sorted(get_charset_files("*.dcm")))


@pytest.mark.parametrize("path", _FILES, ids=lambda p: Path(p).name)
def test_files_read_as_pydicom_reads_them(path: str) -> None:
    ours, theirs = _both(lambda: pydicom.dcmread(path, stop_before_pixels=True))
    assert json.dumps(ours) == json.dumps(theirs)  # and in the same order


def test_the_corpus_covers_what_the_walk_leaves_to_pydicom() -> None:
    """Not a vacuous comparison: the files above hold big-endian, implicit-VR,
    escape-coded and private elements, which take pydicom's path."""
    names = {Path(p).name for p in _FILES}
    assert {"MR_small_bigendian.dcm", "MR_small_implicit.dcm", "chrH31.dcm",
            "chrX1.dcm"} <= names


# --- generated headers --------------------------------------------------------------

_LONG_LENGTH_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT",
                    "SV", "UV"}
_CHARSETS = [None, "ISO_IR 100", "ISO_IR 192", "ISO_IR 144", "ISO_IR 6",
             "ISO 2022 IR 6\\ISO 2022 IR 87", "ISO_IR 999"]
_TEXTS = {
    None: ["Nguyen", "Müller", "a b"], "ISO_IR 100": ["Müller", "Ça va", "x"],
    "ISO_IR 192": ["Nguyễn Văn An", "阮^文安", "Trần"], "ISO_IR 144": ["Иван", "b"],
    "ISO_IR 6": ["plain", "x y"], "ISO 2022 IR 6\\ISO 2022 IR 87": ["Yamada", "b"],
    "ISO_IR 999": ["odd", "Müller"],
}
_CODECS = {None: "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8",
           "ISO_IR 144": "iso8859_5", "ISO_IR 6": "latin-1",
           "ISO 2022 IR 6\\ISO 2022 IR 87": "latin-1", "ISO_IR 999": "latin-1"}
_PLAIN = {
    "AE": ["STORESCU", " PACS ", "A"], "AS": ["045Y", "3M"], "CS": ["ORIGINAL", "CT", "ct"],
    "DA": ["20250120", "2025"], "DT": ["20250120101010.5+0700"], "TM": ["101010", "1010.25"],
    "UI": ["1.2.840.10008.5.1.4.1.1.2", "1.2.3"], "UR": ["http://a/b c"],
    "IS": [" 12", "-3", "+4", "007", "1.0", "x", "12345678901234"],
    "DS": ["1.5", " -2e3 ", ".5", "5.", "1", "abc", "nan", "1.234567890123456789"],
}


def _tags_by_vr() -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for tag, (vr, _vm, _name, retired, _kw) in sorted(DicomDictionary.items()):
        # Not: retired tags, the character set (set per header), file meta, item
        # delimiters, pixel data, group lengths.
        if retired or tag == 0x00080005 or tag >> 16 in (0x0002, 0xFFFE, 0x7FE0) \
                or tag & 0xFFFF == 0:
            continue
        found.setdefault(vr, []).append(tag)
    return {vr: tags[:: max(1, len(tags) // 6)] for vr, tags in found.items()}


_TAGS = _tags_by_vr()


def _text_value(rng: random.Random, vr: str, charset: str | None) -> bytes:
    def one() -> str:
        if vr in _PLAIN:
            return rng.choice(_PLAIN[vr] + [""])
        if vr == "PN":
            groups = [rng.choice(_TEXTS[charset] + ["", "Doe^John"])
                      for _ in range(rng.randint(1, 3))]
            return "=".join(groups) + rng.choice(["", "", "="])
        return rng.choice(_TEXTS[charset] + ["", " lead", "trail "])
    count = 1 if vr in ("ST", "LT", "UT", "UR") else rng.choice([1, 1, 2, 3])
    text = "\\".join(one() for _ in range(count))
    codec = _CODECS[charset] if vr in ("SH", "LO", "UC", "ST", "LT", "UT", "PN") else "latin-1"
    data = text.encode(codec, errors="replace") + rng.choice([b"", b" ", b"\0", b"  "])
    if vr == "LO" and rng.random() < 0.1:
        data = b"L" * 70  # longer than LO allows
    return data


def _binary_value(rng: random.Random, vr: str) -> bytes:
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT"):
        size = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "SV": 8, "UV": 8,
                "AT": 4}[vr]
        count = rng.choice([0, 1, 1, 2, 3])
        data = bytes(rng.getrandbits(8) for _ in range(size * count))
        if vr in ("FL", "FD") and data:  # finite numbers: NaN is never equal to itself
            fmt = "<" + ("f" if vr == "FL" else "d") * count
            data = struct.pack(fmt, *(rng.uniform(-1e6, 1e6) for _ in range(count)))
        return data + (b"\x01" if rng.random() < 0.05 else b"")  # sometimes ragged
    size = rng.choice([0, 2, 10, 766, 768, 770, 2000])
    return bytes(rng.getrandbits(8) for _ in range(size))


def _element(tag: int, vr: str, value: bytes, implicit: bool) -> bytes:
    if len(value) % 2 and vr not in ("SQ",):
        value += b"\0" if vr in ("UI", "OB", "UN") else b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<L", len(value)) + value
    if vr in _LONG_LENGTH_VRS:
        return head + vr.encode() + b"\0\0" + struct.pack("<L", len(value)) + value
    return head + vr.encode() + struct.pack("<H", len(value)) + value


def _sequence(rng: random.Random, charset: str | None, implicit: bool, depth: int
              ) -> tuple[bytes, bool]:
    """A sequence's value and whether it has undefined length (delimited)."""
    items = b""
    for _ in range(rng.choice([0, 1, 2])):
        content = _elements(rng, charset, implicit, depth + 1, count=3)
        if rng.random() < 0.5:
            items += struct.pack("<HHL", 0xFFFE, 0xE000, len(content)) + content
        else:
            items += (struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + content
                      + struct.pack("<HHL", 0xFFFE, 0xE00D, 0))
    if rng.random() < 0.5:
        return items + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0), True
    return items, False


def _elements(rng: random.Random, charset: str | None, implicit: bool, depth: int,
              count: int) -> bytes:
    vrs = sorted(_TAGS)
    chosen: dict[int, str] = {}
    while len(chosen) < count:
        vr = rng.choice(vrs)
        if vr == "SQ" and depth > 1 or vr in ("UN", "OB or OW", "US or SS", "US or OW",
                                               "US or SS or OW", "NONE"):
            continue
        chosen[rng.choice(_TAGS[vr])] = vr
    if rng.random() < 0.2:  # a private element
        chosen[0x00091010] = "LO"
    out = b""
    for tag in sorted(chosen):
        vr = chosen[tag]
        if vr == "SQ":
            value, undefined = _sequence(rng, charset, implicit, depth)
            head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
            length = struct.pack("<L", 0xFFFFFFFF if undefined else len(value))
            out += head + (b"" if implicit else b"SQ\0\0") + length + value
        elif vr in _PLAIN or vr in ("PN", "SH", "LO", "UC", "ST", "LT", "UT"):
            out += _element(tag, vr, _text_value(rng, vr, charset), implicit)
        else:
            out += _element(tag, vr, _binary_value(rng, vr), implicit)
    return out


def _generated(seed: int) -> tuple[bytes, bool]:
    rng = random.Random(seed)
    implicit = rng.random() < 0.3
    charset = rng.choice(_CHARSETS)
    head = b""
    if charset is not None:
        head = _element(0x00080005, "CS", charset.encode(), implicit)
    return head + _elements(rng, charset, implicit, 0, count=rng.randint(5, 25)), implicit


@pytest.mark.parametrize("seed", range(400))
def test_generated_headers_read_as_pydicom_reads_them(seed: int) -> None:
    data, implicit = _generated(seed)

    def read() -> Dataset:
        return read_dataset(io.BytesIO(data), implicit, True)

    ours, theirs = _both(read)
    assert json.dumps(ours) == json.dumps(theirs)  # order too; NaN equals NaN


# --- index attributes ---------------------------------------------------------------

def _reference_attributes(ds: Dataset) -> dict[str, Any]:
    """The index attributes as pydicom's values give them (how minipacs read them
    before the raw walk)."""
    def text(keyword: str) -> str:
        value = ds.get(keyword)
        if value is None:
            return ""
        if isinstance(value, pydicom.multival.MultiValue):
            return "\\".join(str(v) for v in value)
        return str(value).strip()

    def number(keyword: str) -> int | None:
        value = ds.get(keyword)
        try:
            return None if value is None or value == "" else int(value)
        except (TypeError, ValueError):
            return None

    keywords = ["PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate",
                "PatientSex", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
                "StudyDescription", "ReferringPhysicianName", "Modality",
                "SeriesDescription", "SeriesDate", "SeriesTime", "BodyPartExamined"]
    numbers = ["SeriesNumber", "InstanceNumber", "Rows", "Columns", "BitsAllocated",
               "NumberOfFrames"]
    return {**{k: text(k) for k in keywords}, **{k: number(k) for k in numbers}}


def _attributes(ds: Dataset) -> dict[str, Any]:
    a, _model = attributes_of(ds, "1.2.840.10008.1.2.1")
    names = {"PatientID": a.patient_id, "IssuerOfPatientID": a.issuer_of_patient_id,
             "PatientName": a.patient_name, "PatientBirthDate": a.patient_birth_date,
             "PatientSex": a.patient_sex, "StudyDate": a.study_date,
             "StudyTime": a.study_time, "AccessionNumber": a.accession_number,
             "StudyID": a.study_id, "StudyDescription": a.study_description,
             "ReferringPhysicianName": a.referring_physician_name,
             "Modality": a.modality, "SeriesDescription": a.series_description,
             "SeriesDate": a.series_date, "SeriesTime": a.series_time,
             "BodyPartExamined": a.body_part_examined}
    numbers = {"SeriesNumber": a.series_number, "InstanceNumber": a.instance_number,
               "Rows": a.rows, "Columns": a.columns, "BitsAllocated": a.bits_allocated,
               "NumberOfFrames": a.number_of_frames}
    return {**names, **numbers}


@pytest.mark.parametrize("path", sorted(SAMPLE_DIR.rglob("*.dcm"))[::5],
                         ids=lambda p: str(p.relative_to(SAMPLE_DIR)))
def test_sample_attributes_are_pydicom_s(path: Path) -> None:
    def read() -> Dataset:
        return pydicom.dcmread(path, stop_before_pixels=True)

    assert _attributes(read()) == _reference_attributes(read())


def test_odd_attribute_values_are_read_as_pydicom_reads_them() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Nguyễn^Văn An=阮^文安"
    ds.PatientID = " 079123456789 "
    ds.StudyDescription = "CT ngực\\có cản quang"  # two values
    ds.Modality = "CT"
    ds.SeriesNumber = "3"
    ds.InstanceNumber = ["1", "2"]  # several: no number
    ds.Rows = 512
    ds.ReferringPhysicianName = ["Trần^Thị", "Lê^Văn"]
    ds.SOPInstanceUID, ds.SOPClassUID = "1.2.3.4", "1.2.840.10008.5.1.4.1.1.2"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.5"
    ds.OtherPatientIDsSequence = [Dataset(), Dataset()]
    ds.OtherPatientIDsSequence[0].PatientID = "CCCD 001090012345"
    ds.OtherPatientIDsSequence[1].PatientID = "BHYT DN4010123456789"
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = True, True
    write_dataset(buffer, ds)

    def read() -> Dataset:
        return read_dataset(io.BytesIO(buffer.getvalue()), True, True)

    assert _attributes(read()) == _reference_attributes(read())
    a, _model = attributes_of(read(), "1.2.840.10008.1.2")
    assert a.patient_name == "Nguyễn^Văn An=阮^文安"
    assert a.other_patient_ids == ("CCCD 001090012345", "BHYT DN4010123456789")


# --- where the walk and pydicom part ------------------------------------------------

def test_a_value_breaking_its_vr_rule_is_kept() -> None:
    """An LO of 70 characters: pydicom's strict JSON conversion (`to_json_dict` with
    `suppress_invalid_tags`) dropped the element; the metadata keeps what was sent."""
    data = _element(0x00081030, "LO", b"D" * 70, False) + _element(
        0x00180015, "CS", b"CHEST", False)
    ds = read_dataset(io.BytesIO(data), False, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strict = read_dataset(io.BytesIO(data), False, True).to_json_dict(
            BULK_THRESHOLD, lambda e: "", suppress_invalid_tags=True)
        assert "00081030" not in strict
        assert header_json(ds, _uri)["00081030"] == {"vr": "LO", "Value": ["D" * 70]}


def test_a_value_pydicom_cannot_convert_is_left_out_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    data = (_element(0x00200011, "IS", b"twelve", False)
            + _element(0x00280010, "US", b"\x00\x02", False))
    ds = read_dataset(io.BytesIO(data), False, True)
    with caplog.at_level(logging.WARNING, "minipacs.dicom.raw_json"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = header_json(ds, _uri)
    assert model == {"00280010": {"vr": "US", "Value": [512]}}
    assert "left out (0020,0011)" in caplog.text


def test_parsed_instances_carry_the_model_the_index_stores() -> None:
    path = sorted(SAMPLE_DIR.rglob("*.dcm"))[0]
    parsed = parse_instance(path)
    assert parsed.model == header_json(
        pydicom.dcmread(path, stop_before_pixels=True),
        lambda tag: (f"minipacs:base/studies/{parsed.attributes.study_instance_uid}"
                     f"/series/{parsed.attributes.series_instance_uid}"
                     f"/instances/{parsed.attributes.sop_instance_uid}/bulkdata/{tag:08X}"))
    assert parsed.model["00100010"]["Value"][0]["Alphabetic"] == (
        parsed.attributes.patient_name.split("=")[0])
