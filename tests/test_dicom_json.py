"""DICOM JSON details (PS3.18 Annex F) of query responses."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from conftest import SAMPLE_DIR
from minipacs.dicom.header import attributes_of
from minipacs.dicom.json_model import dataset_from_json, element, instance_json

pytestmark = pytest.mark.door_only  # the DICOM JSON encoding


def test_person_names_split_into_alphabetic_ideographic_phonetic() -> None:
    value = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert element("00100010", value) == {"vr": "PN", "Value": [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}]}
    assert element("00100010", "=山田^太郎") == {
        "vr": "PN", "Value": [{"Ideographic": "山田^太郎"}]}


def test_empty_values_have_no_value_member_and_numbers_are_numbers() -> None:
    assert element("00100010", "") == {"vr": "PN"}
    assert element("00201206", 3) == {"vr": "IS", "Value": [3]}
    assert element("00281050", "40.5") == {"vr": "DS", "Value": [40.5]}


def _same_as_pydicom(model: dict[str, object]) -> None:
    """`dataset_from_json` gives what pydicom's `Dataset.from_json` gives: the same
    elements, values and encoding (BulkDataURIs dropped by both)."""
    ours = dataset_from_json(model)
    theirs = Dataset.from_json({k: v for k, v in model.items()
                                if "BulkDataURI" not in v})  # type: ignore[operator]
    assert [(e.tag, e.VR) for e in ours] == [(e.tag, e.VR) for e in theirs]
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.value == reference.value, mine.tag
        assert type(mine.value) is type(reference.value), mine.tag
    for implicit in (True, False):
        assert encode(ours, implicit, True) == encode(theirs, implicit, True)


@pytest.mark.parametrize("path", sorted(SAMPLE_DIR.rglob("*.dcm"))[::7],
                         ids=lambda p: str(p.relative_to(SAMPLE_DIR)))
def test_datasets_from_stored_metadata_are_pydicom_s(path: Path) -> None:
    ds = dcmread(path, stop_before_pixels=True)
    attributes, model = attributes_of(ds, str(ds.file_meta.TransferSyntaxUID))
    _same_as_pydicom(instance_json(ds, attributes, model))


def test_datasets_from_odd_values_are_pydicom_s() -> None:
    _same_as_pydicom({
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "00080020": {"vr": "DA"},  # no Value: empty
        "00080030": {"vr": "TM", "Value": []},
        "00081010": {"vr": "SH", "Value": [None]},
        "00080061": {"vr": "CS", "Value": ["CT", "MR", None]},
        "00201206": {"vr": "IS", "Value": [3]},
        "00201208": {"vr": "IS", "Value": [1, None, 7]},
        "00281050": {"vr": "DS", "Value": [40.5, -1000]},
        "00280010": {"vr": "US", "Value": [512]},
        "00280011": {"vr": "US", "Value": [512.0]},  # a number as a float
        "00181310": {"vr": "US", "Value": [0, 512, 512, 0]},
        "00189327": {"vr": "FD", "Value": [12.25]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Nguyễn^Văn An"}]},
        "00091010": {"vr": "LO", "Value": ["private"]},
        "00200037": {"vr": "DS", "Value": [1, 0, 0, 0, 1, 0]},
        "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
        "00082112": {"vr": "SQ", "Value": [{"00081150": {"vr": "UI", "Value": ["1.2.3"]}}]},
        "00209165": {"vr": "AT", "Value": ["00100020"]},
        "7FE00010": {"vr": "OW", "BulkDataURI": "minipacs:base/x"},
    })
