"""DICOM JSON (PS3.18 Annex F) of a header read from its raw element bytes.

Every arriving instance's metadata is one DICOM JSON object, made once at ingest. pydicom
makes it by converting each element into a `DataElement` first (value classes, charset
hooks, validation) and then into JSON: about 8 µs an element, ~0.5 ms for a CT header
and again as much for the index attributes read from the same dataset. Here the common
elements go from their bytes to their JSON value directly:

* text values (AE AS CS DA DT LO SH TM UC UI UR LT ST UT and PN), decoded with the
  dataset's first character set when it has no ISO 2022 escape sequence in it (what
  pydicom's `decode_bytes` does then), split and stripped as pydicom's converters do;
* integers and decimals (IS, DS) of plain DICOM syntax, binary numbers (US SS UL SL FL FD
  SV UV) and bulk binary values (OB OD OF OL OV OW: InlineBinary, or a BulkDataURI when
  larger than the threshold, by pydicom's rule).

Everything else goes through pydicom, element by element: sequences, AT, private or
unknown tags without an explicit VR, ambiguous VRs, UN, big endian, values that do not
decode in the character set or do not parse as plain numbers. For the elements taken
here the result equals pydicom's `Dataset.to_json_dict` (tests/test_raw_json.py
compares them), with one deliberate difference: a readable value that breaks a VR rule
(an LO longer than 64 characters, a DS of 17) is kept, where pydicom's strict reading
dropped the whole element from the metadata.
"""

from __future__ import annotations

import base64
import logging
import re
import struct
from collections.abc import Callable
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

# Placeholder base of stored BulkDataURIs (json_model.with_base_url resolves it).
BULK_PREFIX = "minipacs:base/"
BULK_THRESHOLD = 1024

_ESC = b"\x1b"
_CHARSET_TAG = 0x00080005
_DEFAULT_ENCODING = "iso8859"  # pydicom's, for the VRs not affected by the charset

# Multi-valued strings split on backslash, then stripped as pydicom's converters do.
_TRAILING_STRIPPED = frozenset({"AS", "CS", "DA", "DT", "TM", "UI"})  # whole, then split
_CHARSET_MULTI = frozenset({"SH", "LO", "UC"})  # split, then each right-stripped
_CHARSET_SINGLE = frozenset({"ST", "LT", "UT"})  # one value: backslash is text
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d",
            "SV": "q", "UV": "Q"}
_NUMBER_SIZE = {vr: struct.calcsize("<" + fmt) for vr, fmt in _NUMBERS.items()}

_IS = re.compile(r" *[-+]?[0-9]+ *")
_DS = re.compile(r" *[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)? *")
# Base64 makes a value a third longer: pydicom's test for "larger than the threshold".
_INLINE_MAX = (BULK_THRESHOLD // 4) * 3

# Dictionary VRs of implicit-VR tags, looked up once per tag.
_implicit_vrs: dict[int, str | None] = {}


class _Unhandled(Exception):
    """This element is left to pydicom."""


def _implicit_vr(tag: int) -> str | None:
    try:
        return _implicit_vrs[tag]
    except KeyError:
        pass
    try:
        vr: str | None = dictionary_VR(tag)
    except KeyError:
        vr = None
    if vr is not None and (" or " in vr or vr == "UN"):
        vr = None
    if len(_implicit_vrs) < 4096:
        _implicit_vrs[tag] = vr
    return vr


def _decode(value: bytes, encoding: str) -> str:
    if _ESC in value:
        raise _Unhandled
    try:
        return value.decode(encoding)
    except (UnicodeError, LookupError):
        raise _Unhandled from None


def _strings(value: bytes, vr: str, encoding: str) -> list[str]:
    if vr in _CHARSET_MULTI:
        return [v.rstrip("\0 ") for v in _decode(value, encoding).split("\\")]
    if vr in _CHARSET_SINGLE:
        return [_decode(value, encoding).rstrip("\0 ")]
    text = value.decode(_DEFAULT_ENCODING)
    if vr in _TRAILING_STRIPPED:
        return text.rstrip(" \0").split("\\")
    if vr == "AE":
        return [v.strip() for v in text.split("\\")]
    if vr == "UR":
        return [text.rstrip()]
    raise _Unhandled


def _person_names(value: bytes, encoding: str) -> list[dict[str, str]]:
    names = []
    for text in _decode(value.rstrip(b"\0 "), encoding).split("\\"):
        groups = text.split("=")
        while groups and not groups[-1]:
            groups.pop()
        if not groups:
            raise _Unhandled  # pydicom fails on an empty name among several
        name = {"Alphabetic": groups[0]}
        if len(groups) > 1:
            name["Ideographic"] = groups[1]
        if len(groups) > 2:
            name["Phonetic"] = groups[2]
        names.append(name)
    return names


def _value(tag: int, vr: str, value: bytes, encoding: str,
           bulk_uri: Callable[[int], str]) -> dict[str, Any]:
    """The JSON attribute of one element's bytes; raises `_Unhandled`."""
    attribute: dict[str, Any] = {"vr": vr}
    if not value:
        return attribute
    if vr in _BINARY:
        if len(value) > _INLINE_MAX:
            attribute["BulkDataURI"] = bulk_uri(tag)
        else:
            attribute["InlineBinary"] = base64.b64encode(value).decode("ascii")
        return attribute
    fmt = _NUMBERS.get(vr)
    if fmt is not None:
        size = _NUMBER_SIZE[vr]
        if len(value) % size:
            raise _Unhandled
        attribute["Value"] = list(struct.unpack(f"<{len(value) // size}{fmt}", value))
        return attribute
    if vr == "PN":
        attribute["Value"] = _person_names(value, encoding)
        return attribute
    if vr == "IS" or vr == "DS":
        texts = value.decode(_DEFAULT_ENCODING).rstrip(" \0").split("\\")
        if texts == [""]:
            return attribute
        pattern, number = (_IS, int) if vr == "IS" else (_DS, float)
        if not all(pattern.fullmatch(text) for text in texts):
            raise _Unhandled
        attribute["Value"] = [number(text) for text in texts]
        return attribute
    texts = _strings(value, vr, encoding)
    if texts != [""]:
        attribute["Value"] = texts
    return attribute


def header_json(ds: Dataset, bulk_uri: Callable[[int], str],
                encoding: str | None = None) -> dict[str, Any]:
    """DICOM JSON of `ds` (read by pydicom, elements still raw), in its element order;
    binary values longer than the threshold as `bulk_uri(tag)`. An element pydicom
    cannot convert either is left out, with a warning (as `to_json_dict` with
    `suppress_invalid_tags`). `encoding`: a sequence item's, inherited from its
    parent unless it has a character set of its own."""
    if encoding is None or _CHARSET_TAG in ds._dict:
        encoding = _first_encoding(ds)
    model: dict[str, Any] = {}
    elements = ds._dict
    for tag in list(elements):
        raw = elements[tag]
        key = f"{tag:08X}"
        if isinstance(raw, RawDataElement):
            vr = raw.VR if raw.VR is not None else (
                None if tag & 0x10000 else _implicit_vr(tag))
        else:
            vr = raw.VR  # read already: undefined-length sequences, what was asked for
        try:
            if vr == "SQ" and encoding:
                # pydicom reads the items; their elements stay raw, for this walk.
                model[key] = {"vr": "SQ", "Value": [
                    header_json(item, bulk_uri, encoding) for item in ds[tag].value]}
                continue
            if (isinstance(raw, RawDataElement) and raw.is_little_endian and encoding
                    and vr is not None and vr != "UN" and raw.value is not None):
                model[key] = _value(tag, vr, raw.value, encoding, bulk_uri)
                continue
        except _Unhandled:
            pass
        except Exception as exc:  # noqa: BLE001 - pydicom's errors on odd sequences
            log.warning("metadata: left out %s, which cannot be read: %s",
                        f"({tag >> 16:04X},{tag & 0xFFFF:04X})", exc)
            continue
        try:
            model[key] = ds[tag].to_json_dict(
                lambda element: bulk_uri(element.tag), BULK_THRESHOLD)
        except Exception as exc:  # noqa: BLE001 - pydicom raises assorted errors on odd values
            log.warning("metadata: left out %s, which cannot be converted: %s",
                        f"({tag >> 16:04X},{tag & 0xFFFF:04X})", exc)
    return model


def _first_encoding(ds: Dataset) -> str:
    """The Python codec pydicom decodes text with when it holds no escape sequence;
    "" when the character set is one pydicom does not know (then pydicom decides)."""
    try:
        charset = ds.get("SpecificCharacterSet")
        encodings = convert_encodings(charset)
        "".encode(encodings[0])
    except Exception:  # noqa: BLE001 - an unknown or malformed character set
        return ""
    return str(encodings[0])
