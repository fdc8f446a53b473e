"""Pure DICOM helpers: name folding, matching semantics, UID and key validation."""

from __future__ import annotations

import pytest

from minipacs.dicom.json_model import element, tag_key
from minipacs.dicom.matching import like_pattern, parse_match
from minipacs.dicom.names import fold_text, lower_name, strip_diacritics
from minipacs.dicom.uids import is_safe_uid, is_valid_uid, require_uid
from minipacs.errors import InvalidAttribute, QueryError
from minipacs.storage.keys import check_key, instance_key

pytestmark = pytest.mark.door_only  # pure code, no backend


@pytest.mark.parametrize(
    ("name", "folded"),
    [
        ("Nguyễn^Văn An", "nguyen van an"),
        ("Đặng^Quốc Bảo", "dang quoc bao"),
        ("TRẦN^THỊ BÍCH NGỌC", "tran thi bich ngoc"),
        ("Lê^Đức  Thọ^^", "le duc tho"),
        ("Nguyễn^Văn An=阮^文安", "nguyen van an 阮 文安"),
    ],
)
def test_fold_text_removes_vietnamese_diacritics_and_case(name: str, folded: str) -> None:
    assert fold_text(name) == folded


def test_fold_text_maps_d_with_stroke_which_unicode_does_not_decompose() -> None:
    assert fold_text("đ") == "d" and fold_text("Đ") == "d"
    assert strip_diacritics("Đặng") == "Dang"


def test_lower_name_keeps_diacritics() -> None:
    assert lower_name("NGUYỄN^VĂN AN") == "nguyễn^văn an"


def test_parse_match_kinds() -> None:
    assert parse_match("00100010", "").kind == "universal"
    assert parse_match("00100010", "*").kind == "universal"
    assert parse_match("00100010", "Nguy*").kind == "wildcard"
    assert parse_match("00100020", "BN1").kind == "single"
    date_range = parse_match("00080020", "20240101-")
    assert (date_range.kind, date_range.values) == ("range", ("20240101", ""))
    uids = parse_match("0020000D", "1.2.3\\1.2.4")
    assert (uids.kind, uids.values) == ("list", ("1.2.3", "1.2.4"))
    qido_uids = parse_match("0020000D", "1.2.3,1.2.4", list_sep=",")
    assert qido_uids.values == ("1.2.3", "1.2.4")


def test_parse_match_names_the_attribute_on_a_bad_date() -> None:
    with pytest.raises(QueryError, match="StudyDate"):
        parse_match("00080020", "2024-01-01x")


def test_like_pattern_escapes_sql_wildcards() -> None:
    assert like_pattern("a%b_c*?") == "a\\%b\\_c%_"


def test_tag_key_accepts_keywords_and_tags() -> None:
    assert tag_key("PatientName") == "00100010"
    assert tag_key("0020000d") == "0020000D"
    with pytest.raises(KeyError):
        tag_key("NotAKeyword")


def test_element_numbers_and_names_follow_ps3_18_annex_f() -> None:
    assert element("00201208", "12") == {"vr": "IS", "Value": [12]}
    assert element("00100010", "Nguyễn^Văn An") == {
        "vr": "PN", "Value": [{"Alphabetic": "Nguyễn^Văn An"}]}
    assert element("00080050", "") == {"vr": "SH"}


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2", "2.25.1234567890", "1"])
def test_valid_uids(uid: str) -> None:
    assert is_valid_uid(uid) and is_safe_uid(uid)


@pytest.mark.parametrize(
    "uid", ["", "../../etc/passwd", "1.2/3", "1..2", ".1.2", "1.2.", "1.2.3a", "1" * 65,
            "1.2\\3", "１.２", "1.2 .3"],
)
def test_traversal_looking_or_malformed_uids_are_refused(uid: str) -> None:
    assert not is_safe_uid(uid) and not is_valid_uid(uid)
    with pytest.raises(InvalidAttribute):
        require_uid(uid, "StudyInstanceUID")


def test_a_uid_with_a_line_break_is_neither_valid_nor_safe() -> None:
    # (require_uid strips padding first: "1.2\n" read from a file is "1.2".)
    assert not is_valid_uid("1.2\n") and not is_safe_uid("1.2\n")


def test_leading_zero_uid_is_not_strictly_valid_but_still_safe_to_store() -> None:
    assert not is_valid_uid("1.02.3") and is_safe_uid("1.02.3")


def test_instance_key_and_check_key() -> None:
    assert instance_key("1.2", "1.3", "1.4") == "studies/1.2/series/1.3/1.4.dcm"
    for bad in ("../x", "/abs", "a//b", "a/./b", "a\\b"):
        with pytest.raises(ValueError):
            check_key(bad)


def test_auth_is_on_unless_turned_off_and_nothing_else_is_accepted() -> None:
    from pydantic import ValidationError

    from minipacs.config import Settings

    assert Settings().auth == "on"
    assert Settings(auth="off").auth == "off"
    with pytest.raises(ValidationError):
        Settings(auth="maybe")
