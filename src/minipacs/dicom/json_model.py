"""DICOM JSON (PS3.18 Annex F) for stored metadata and query responses.

Instance metadata is computed once at ingest and stored as text. Large binary values
become BulkDataURIs written with the placeholder `BULK_PREFIX`; `with_base_url`
swaps in the server's public base when the text is served, so a change of public URL
never needs the stored JSON rewritten.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydicom import config
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.jsonrep import convert_to_python_number
from pydicom.tag import Tag

from minipacs.dicom.header import InstanceAttributes
from minipacs.dicom.raw_json import BULK_PREFIX, header_json

log = logging.getLogger(__name__)


# VRs whose JSON "Value" holds numbers (PS3.18 F.2.3).
_NUMBER_VRS = {"DS", "IS", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV"}


def instance_path(attrs: InstanceAttributes) -> str:
    return (
        f"studies/{attrs.study_instance_uid}/series/{attrs.series_instance_uid}"
        f"/instances/{attrs.sop_instance_uid}"
    )


def instance_json(ds: Dataset, attrs: InstanceAttributes,
                  model: dict[str, Any] | None = None) -> dict[str, Any]:
    """Full DICOM JSON of one instance header, pixel data as a BulkDataURI. `model` is
    the header's JSON as `header.parse_instance` read it (else read from `ds` now)."""
    base = BULK_PREFIX + instance_path(attrs)
    if model:
        model = dict(model)
    else:
        model = header_json(ds, lambda tag: f"{base}/bulkdata/{tag:08X}")
    if attrs.has_pixels:
        vr = "OW" if (attrs.bits_allocated or 8) > 8 and not _encapsulated(attrs) else "OB"
        model["7FE00010"] = {"vr": vr, "BulkDataURI": f"{base}/bulkdata/7FE00010"}
    model.setdefault("00020010", {"vr": "UI", "Value": [attrs.transfer_syntax_uid]})
    return model


def _encapsulated(attrs: InstanceAttributes) -> bool:
    return attrs.transfer_syntax_uid not in {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
    }


def with_base_url(text: str, base_url: str) -> str:
    """Resolve stored BulkDataURIs against the DICOMweb base (e.g. http://h/dicom-web)."""
    return text.replace(BULK_PREFIX, base_url.rstrip("/") + "/")


def tag_key(keyword_or_tag: str) -> str:
    """'PatientName' or '00100010' or '0010,0010' → '00100010'; raises KeyError if unknown."""
    text = keyword_or_tag.strip()
    compact = text.replace(",", "").replace("(", "").replace(")", "")
    if len(compact) == 8 and all(c in "0123456789abcdefABCDEF" for c in compact):
        return compact.upper()
    tag = tag_for_keyword(text)
    if tag is None:
        raise KeyError(text)
    return f"{tag:08X}"


def keyword_of(key: str) -> str:
    return keyword_for_tag(Tag(int(key, 16))) or key


def vr_of(key: str) -> str:
    try:
        vr = dictionary_VR(Tag(int(key, 16)))
    except KeyError:
        return "UN"
    return vr.split(" or ")[0]


def element(key: str, value: Any, vr: str | None = None) -> dict[str, Any]:
    """One DICOM JSON attribute. `value` None or "" gives an empty (zero-length) attribute."""
    vr = vr or vr_of(key)
    if value is None or value == "" or value == []:
        return {"vr": vr}
    values = value if isinstance(value, list | tuple) else [value]
    if vr == "PN":
        return {"vr": vr, "Value": [_person_name(str(v)) for v in values]}
    if vr in _NUMBER_VRS:
        out: list[Any] = []
        for v in values:
            try:
                number = float(v)
                out.append(int(number) if number.is_integer() and vr != "FD" else number)
            except (TypeError, ValueError):
                continue
        return {"vr": vr, "Value": out} if out else {"vr": vr}
    if isinstance(value, str) and "\\" in value and vr not in {"LT", "ST", "UT"}:
        values = value.split("\\")
    return {"vr": vr, "Value": [str(v) for v in values]}


def _person_name(value: str) -> dict[str, str]:
    """PS3.18 F.2.2: a PN value's component groups (separated by '=') become the
    Alphabetic, Ideographic and Phonetic members; empty groups are left out."""
    groups = value.split("=")
    names = ("Alphabetic", "Ideographic", "Phonetic")
    return {name: group for name, group in zip(names, groups, strict=False) if group}


def dumps(model: Any) -> str:
    return json.dumps(model, ensure_ascii=False, separators=(",", ":"))


# VRs whose JSON "Value" `dataset_from_json` turns into an element itself: strings and
# numbers. PN (objects), AT, SQ and the binary VRs go through pydicom's converter.
_PLAIN_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC",
                        "UI", "UR", "UT"}) | _NUMBER_VRS


def dataset_from_json(model: dict[str, Any]) -> Dataset:
    """DICOM JSON → pydicom Dataset (BulkDataURIs dropped: C-FIND never returns bulk data).

    The same elements as pydicom's `Dataset.from_json`, for every worklist item and the
    C-FIND matches `query_scp.response_dataset` cannot build from raw bytes: string and
    number values are converted here, as that does (`convert_to_python_number`, empty
    values per VR), without its per-element converter object and value checks (~0.15 ms
    per match); values come from our own index. Anything else, or anything unexpected,
    is left to pydicom."""
    ds = Dataset()
    rest: dict[str, Any] = {}
    for key, entry in model.items():
        if "BulkDataURI" in entry:
            continue
        vr = entry.get("vr")
        values = entry.get("Value")
        if (vr not in _PLAIN_VRS or "InlineBinary" in entry
                or (values is not None and not isinstance(values, list))):
            rest[key] = entry
            continue
        if not values:
            value: Any = empty_value_for_VR(vr)
        else:
            items = [empty_value_for_VR(vr) if v is None else v for v in values]
            value = items[0] if len(items) == 1 else items
            if vr in _NUMBER_VRS:
                value = convert_to_python_number(value, vr)
        ds.add(DataElement(int(key, 16), vr, value, validation_mode=config.IGNORE))
    if rest:
        ds.update(Dataset.from_json(rest))
    return ds
