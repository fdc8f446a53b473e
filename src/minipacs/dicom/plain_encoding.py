"""Encoding of small, flat data sets of text elements, as pydicom would, but faster.

C-FIND response identifiers are such data sets: a dozen string, name and number
elements. pydicom's writer dispatches every element through its generic machinery
(~0.2 ms per identifier, about an eighth of a C-FIND's server time with five matches);
here each element is a few byte operations.

`json_value_bytes` goes the other way round from DICOM JSON: the value bytes of one
element, as pydicom writes them after `Dataset.from_json`, for a raw element
(`RawDataElement`) that pydicom decodes only if someone reads it.

`encode_plain` handles only what it can encode exactly like pydicom's `dcmwrite` of the
same data set body: little endian, implicit or explicit VR, elements of the text, name,
number and default-repertoire VRs, in a data set whose Specific Character Set is UTF-8
(ISO_IR 192) or absent / ISO_IR 6 (plain ASCII). For anything else (a sequence, binary
values, another character set, a non-ASCII byte where only ASCII may go) it returns
None and the caller uses pydicom. tests/test_plain_encoding.py compares the two.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, cast

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

# Default character repertoire only (PS3.5 §6.1.2.3): pydicom writes these with its
# default encoding, so only ASCII values are encoded here.
_ASCII_VRS = {"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR"}
_NUMBER_VRS = {"DS", "IS"}
# Decoded with (0008,0005).
_TEXT_VRS = {"LO", "LT", "SH", "ST", "UC", "UT"}
# Explicit VR elements with a 4-byte length (PS3.5 §7.1.2) among those handled here.
_LONG_LENGTH_VRS = {"UC", "UR", "UT"}
_CODECS = {None: "ascii", "": "ascii", "ISO_IR 6": "ascii", "ISO_IR 192": "utf-8"}

_IMPLICIT_HEADER = struct.Struct("<HHI")
_EXPLICIT_SHORT = struct.Struct("<HH2sH")
_EXPLICIT_LONG = struct.Struct("<HH2s2xI")


def _codec(ds: Dataset) -> str | None:
    charset = ds.get("SpecificCharacterSet")
    if charset is not None and not isinstance(charset, str):
        return None  # several values: code extensions
    return _CODECS.get(charset)


def _values(value: Any) -> Iterable[Any]:
    if isinstance(value, str | PersonName) or not isinstance(value, Iterable):
        return (value,)
    return value


def _number_text(value: Any) -> str:
    original = getattr(value, "original_string", None)
    return original if original is not None else str(value)


def _joined(vr: str, texts: Iterable[str], codec: str) -> bytes:
    """Values of one element, `\\`-separated, encoded (the default repertoire's VRs in
    ASCII, the others with `codec`) and padded to even length as pydicom pads them."""
    data = "\\".join(texts).encode(codec if vr in _TEXT_VRS or vr == "PN" else "ascii")
    if len(data) % 2:
        return data + (b"\0" if vr == "UI" else b" ")
    return data


def _value_bytes(vr: str, value: Any, codec: str) -> bytes | None:
    """The padded value of one element, or None when not handled here."""
    if value is None or value == "":
        return b""
    if vr in _ASCII_VRS or vr in _TEXT_VRS:
        if isinstance(value, bytes):
            return None
        return _joined(vr, _values(value), codec)
    if vr in _NUMBER_VRS:
        return _joined(vr, (_number_text(v) for v in _values(value)), codec)
    if vr == "PN":
        names = list(_values(value))
        # A name read from bytes keeps them, and pydicom writes those back as they were.
        if not all(isinstance(name, PersonName) and name.original_string is None
                   for name in names):
            return None
        return _joined(vr, (str(name) for name in names), codec)
    return None


def padded_text(value: str) -> bytes:
    """An ASCII text value (CS, AE, ...) padded to even length with a space."""
    return _joined("CS", (value,), "ascii")


def _person_name(value: Any) -> str | None:
    """A DICOM JSON person name (PS3.18 F.2.2) as its `=`-joined component groups,
    trailing empty groups left out; None when it is not a name object."""
    if value is None:
        return ""
    if not isinstance(value, dict):
        return None
    groups = [value.get("Alphabetic") or "", value.get("Ideographic") or "",
              value.get("Phonetic") or ""]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def json_value_bytes(element: dict[str, Any]) -> bytes | None:
    """The padded value bytes, in UTF-8, of a DICOM JSON element (PS3.18 F.2) of a text,
    name or integer string VR, as pydicom writes the element `Dataset.from_json` makes
    of it in an ISO_IR 192 data set; None for other VRs and for values that are not
    plain (the caller uses pydicom). tests/test_plain_encoding.py compares the two."""
    vr = element.get("vr")
    if not isinstance(vr, str) or not (vr in _ASCII_VRS or vr in _TEXT_VRS
                                       or vr in ("PN", "IS")):
        return None
    values = element.get("Value")
    if not values:
        return None if values is None and len(element) > 1 else b""  # BulkData, inline
    if vr == "PN":
        texts: list[str | None] = [_person_name(value) for value in values]
    elif vr == "IS":
        texts = [str(value) if type(value) is int else None for value in values]
    else:
        texts = ["" if value is None else value if isinstance(value, str) else None
                 for value in values]
    if any(text is None for text in texts):
        return None
    try:
        return _joined(vr, cast(list[str], texts), "utf-8")
    except UnicodeEncodeError:
        return None


def encode_plain(ds: Dataset, implicit_vr: bool) -> bytes | None:
    """The little-endian encoding of `ds` (no preamble, no file meta), or None when
    `ds` holds something this function does not encode (pydicom must). Raw elements
    (little endian, with a VR) are written as they are, as pydicom does."""
    codec = _codec(ds)
    if codec is None:
        return None
    out = bytearray()
    try:
        for elem in ds.elements():
            vr = elem.VR
            value: bytes | None
            if not isinstance(vr, str):
                return None
            if isinstance(elem, RawDataElement):
                if (not elem.is_little_endian or not isinstance(elem.value, bytes)
                        or elem.length == 0xFFFFFFFF):
                    return None
                value = elem.value
            else:
                value = _value_bytes(vr, elem.value, codec)
            if value is None:
                return None
            group, number = elem.tag >> 16, elem.tag & 0xFFFF
            if implicit_vr:
                out += _IMPLICIT_HEADER.pack(group, number, len(value))
            elif vr in _LONG_LENGTH_VRS:
                out += _EXPLICIT_LONG.pack(group, number, vr.encode(), len(value))
            elif len(value) > 0xFFFF:
                return None
            else:
                out += _EXPLICIT_SHORT.pack(group, number, vr.encode(), len(value))
            out += value
    except (UnicodeEncodeError, TypeError):
        return None
    return bytes(out)
