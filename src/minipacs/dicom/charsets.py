"""Character-set repairs and downgrades for peers that get (0008,0005) wrong.

* `relabel_charset`: a modality that sends no Specific Character Set, or labels its
  bytes with the wrong one (Vietnamese bytes labelled ISO_IR 100), gets its data set
  relabelled with what it really uses, so names decode right everywhere later.
  Only (0008,0005) changes (PS3.4 B.2.3: coercion of data elements, status 0xB000).
* `ascii_dataset`: for old consoles that cannot show UTF-8, a response copy with every
  text value transliterated to ASCII (Nguyễn → Nguyen, Đ → D); stored data never changes.
"""

from __future__ import annotations

import io

from pydicom import dcmread
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.valuerep import PersonName

from minipacs.dicom.names import strip_diacritics

# Text VRs whose values are decoded with (0008,0005) (PS3.5 §6.1.2.3).
_TEXT_VRS = {"SH", "LO", "ST", "LT", "UT", "UC", "PN"}


def charset_fix(current: list[str], default: str, remap_from: str, remap_to: str
                ) -> list[str] | None:
    """The (0008,0005) values to use instead of `current`, or None when fine as is."""
    if not current and default:
        return [default]
    if remap_from and remap_from in current:
        return [remap_to if term == remap_from else term for term in current]
    return None


def relabel_charset(part10: bytes, default: str, remap_from: str = "", remap_to: str = ""
                    ) -> bytes | None:
    """`part10` with (0008,0005) set as the sender's AE entry says, or None when the
    data set needs no change. Other elements are written back as they were read."""
    ds = dcmread(io.BytesIO(part10))
    raw = ds.get("SpecificCharacterSet")
    if raw is None or raw == "":
        current: list[str] = []
    elif isinstance(raw, str):
        current = [raw]
    else:
        current = [str(v) for v in raw]
    fixed = charset_fix(current, default, remap_from, remap_to)
    if fixed is None:
        return None
    relabel_dataset(ds, fixed)
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def relabel_dataset(ds: Dataset, charset: list[str]) -> None:
    """Label a data set read from bytes with `charset`, the one its text bytes are
    really in: text not decoded yet will be decoded in it, and written back verbatim
    (pydicom re-encodes text whose character set changed since reading, so the new one
    is declared the original)."""
    ds.SpecificCharacterSet = charset[0] if len(charset) == 1 else charset
    _declare_original_charset(ds, ds.SpecificCharacterSet)


def _declare_original_charset(ds: Dataset, charset: str | list[str]) -> None:
    implicit, little = ds.original_encoding
    terms = [charset] if isinstance(charset, str) else list(charset)
    ds.set_original_encoding(implicit, little, convert_encodings(terms))


def ascii_text(value: str) -> str:
    """ASCII transliteration: diacritics dropped, đ/Đ → d/D, anything else left → '?'."""
    return strip_diacritics(value).encode("ascii", "replace").decode("ascii")


def ascii_dataset(ds: Dataset) -> Dataset:
    """A copy of `ds` with every text value in ASCII and (0008,0005) ISO_IR 6 (default
    repertoire: the attribute is left empty)."""
    out = Dataset()
    for elem in ds:
        copy = elem.__class__(elem.tag, elem.VR, elem.value)
        if elem.VR == "SQ":
            copy.value = [ascii_dataset(item) for item in elem.value]
        elif elem.VR in _TEXT_VRS and elem.value not in (None, ""):
            values = elem.value if elem.VM > 1 else [elem.value]
            converted = [PersonName(ascii_text(str(v))) if elem.VR == "PN" else
                         ascii_text(str(v)) for v in values]
            copy.value = converted if elem.VM > 1 else converted[0]
        out.add(copy)
    if "SpecificCharacterSet" in out:
        out.SpecificCharacterSet = ""
    return out
