"""Identifiers encoded without pydicom's writer (`dicom/plain_encoding.py`) and built
from raw elements (`query_scp.response_dataset`) are the bytes and values pydicom gives
for the same data; what those shortcuts do not handle is left to pydicom."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from conftest import SAMPLE_DIR
from minipacs.dicom.header import attributes_of
from minipacs.dicom.json_model import instance_json
from minipacs.dicom.plain_encoding import encode_plain, json_value_bytes
from minipacs.dimse.query_scp import _pydicom_response, response_dataset

pytestmark = pytest.mark.door_only  # pure encoding: no backend

_VIETNAMESE = "Nguyễn^Văn An=阮^文安=グエン^ヴァン"
_SAMPLES = sorted(SAMPLE_DIR.rglob("*.dcm"))

def _stored_json(path: Path) -> dict[str, Any]:
    ds = dcmread(path, stop_before_pixels=True)
    attributes, model = attributes_of(ds, str(ds.file_meta.TransferSyntaxUID))
    return instance_json(ds, attributes, model)


def _same_identifier(ours: Dataset, reference: Dataset) -> None:
    """The same bytes in both transfer syntaxes and the same decoded values."""
    plain = encode_plain(ours, True)  # first: pydicom's writer converts raw elements
    assert plain == encode(reference, True, True)
    for implicit in (True, False):
        assert encode(ours, implicit, True) == encode(reference, implicit, True), implicit
    def values(ds: Dataset) -> list[tuple[int, str, Any]]:
        # An empty raw element reads back as "", pydicom's own empty one as None.
        return [(e.tag, e.VR, None if e.is_empty else e.value) for e in ds]

    assert values(ours) == values(reference)


_ODD_MATCH: dict[str, Any] = {
    "00080020": {"vr": "DA"},  # no Value
    "00080030": {"vr": "TM", "Value": []},
    "00080050": {"vr": "SH", "Value": [None]},
    "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
    "00080090": {"vr": "PN", "Value": [{"Alphabetic": "Trần^Thị"},
                                       {"Ideographic": "陳^氏"}, None]},
    "00081030": {"vr": "LO", "Value": ["CT ngực có cản quang"]},
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Nguyễn^Văn An",
                                        "Ideographic": "阮^文安", "Phonetic": "グエン^ヴァン"}]},
    "00100020": {"vr": "LO", "Value": ["079123456789"]},
    "0020000D": {"vr": "UI", "Value": ["1.2.3.45"]},  # odd length: NUL padded
    "00201206": {"vr": "IS", "Value": [3]},
    "00201208": {"vr": "IS", "Value": [0, 12]},
}


def _requested(keys: list[str], absent: dict[str, str]) -> list[DataElement]:
    """Return keys as a C-FIND identifier holds them (empty), plus keys no match has."""
    from pydicom.datadict import dictionary_VR
    elements = [DataElement(int(key, 16), dictionary_VR(int(key, 16)), None) for key in keys]
    elements += [DataElement(int(key, 16), vr, None) for key, vr in absent.items()]
    return sorted(elements, key=lambda e: e.tag)


@pytest.mark.parametrize("path", _SAMPLES[::6], ids=lambda p: str(p.relative_to(SAMPLE_DIR)))
def test_response_identifiers_from_stored_metadata_are_pydicom_s(path: Path) -> None:
    match = _stored_json(path)
    keys = [k for k, v in match.items() if json_value_bytes(v) is not None
            and k not in ("00080005", "00080052", "00080054")]
    assert len(keys) > 10
    requested = _requested(keys, {"00081040": "LO", "00201206": "IS"})
    ours = response_dataset(match, requested, "IMAGE", "MINIPACS")
    assert all(e.is_raw for e in ours.elements()), "expected the raw elements"
    _same_identifier(ours, _pydicom_response(match, requested, "IMAGE", "MINIPACS"))


def test_response_identifiers_from_odd_values_are_pydicom_s() -> None:
    requested = _requested(list(_ODD_MATCH), {"00100030": "DA", "00080080": "LO"})
    ours = response_dataset(_ODD_MATCH, requested, "STUDY", "PACS1")  # odd AE: padded
    assert all(e.is_raw for e in ours.elements())
    _same_identifier(ours, _pydicom_response(_ODD_MATCH, requested, "STUDY", "PACS1"))


@pytest.mark.parametrize("element", [
    {"vr": "SQ", "Value": [{}]},
    {"vr": "DS", "Value": [1.5]},  # decimal strings keep pydicom's formatting
    {"vr": "US", "Value": [1]},
    {"vr": "OB", "InlineBinary": "AAA="},
    {"vr": "CS", "Value": ["CTé"]},  # CS is ASCII only
    {"vr": "IS", "Value": [1.0]},
    {"vr": "LO", "Value": [3]},
])
def test_values_it_does_not_take_are_built_by_pydicom(element: dict[str, Any]) -> None:
    assert json_value_bytes(element) is None
    match = {**_ODD_MATCH, "00181000": element}
    requested = _requested(list(_ODD_MATCH), {"00181000": element["vr"]})
    ours = response_dataset(match, requested, "STUDY", "MINIPACS")
    assert not any(e.is_raw for e in ours.elements())  # the pydicom-built identifier


def test_a_sequence_key_no_match_has_is_built_by_pydicom() -> None:
    requested = _requested(["00100020"], {"00081032": "SQ"})
    ours = response_dataset(_ODD_MATCH, requested, "STUDY", "MINIPACS")
    assert not any(e.is_raw for e in ours.elements())
    assert ours.ProcedureCodeSequence == []
