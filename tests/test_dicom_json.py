"""DICOM JSON details (PS3.18 Annex F) of query responses."""

from __future__ import annotations

import pytest

from minipacs.dicom.json_model import element

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
