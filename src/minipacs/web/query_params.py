"""QIDO-RS query string → `Filter` (PS3.18 §8.3.4), with errors that name the parameter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from minipacs.dicom.json_model import tag_key
from minipacs.dicom.matching import Filter, Match, parse_match
from minipacs.dicom.uids import is_safe_uid
from minipacs.errors import QueryError

RESERVED = {"limit", "offset", "fuzzymatching", "includefield", "orderby"}


@dataclass(frozen=True)
class QidoQuery:
    filter: Filter
    include: tuple[str, ...] | Literal["all"]
    limit: int | None
    offset: int


def _attribute_key(name: str) -> str:
    """'PatientName', '00100010' or 'OtherPatientIDsSequence.PatientID' → tag path."""
    try:
        return ".".join(tag_key(part) for part in name.split("."))
    except KeyError as exc:
        raise QueryError(
            f"query parameter {name!r} is not a DICOM keyword or tag (e.g. PatientName or "
            "00100010)"
        ) from exc


def _non_negative(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise QueryError(f"{name}={value!r} must be a whole number") from exc
    if number < 0:
        raise QueryError(f"{name}={value!r} must not be negative")
    return number


def parse_qido(items: list[tuple[str, str]]) -> QidoQuery:
    fuzzy = False
    limit: int | None = None
    offset = 0
    include: list[str] = []
    include_all = False
    raw_matches: list[tuple[str, str]] = []
    for name, value in items:
        lname = name.lower()
        if lname == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise QueryError(f"fuzzymatching={value!r} must be true or false")
            fuzzy = value.lower() == "true"
        elif lname == "limit":
            limit = _non_negative("limit", value)
        elif lname == "offset":
            offset = _non_negative("offset", value)
        elif lname == "includefield":
            for field in value.split(","):
                field = field.strip()
                if field.lower() == "all":
                    include_all = True
                elif field:
                    # A path into a sequence (Seq.Attr) returns the whole sequence.
                    include.append(_attribute_key(field).split(".")[0])
        elif lname == "orderby":
            continue  # PS3.18 leaves ordering to the origin server; we sort newest first
        else:
            raw_matches.append((_attribute_key(name), value))
    matches: list[Match] = [
        parse_match(key, value, fuzzy=fuzzy, list_sep=",") for key, value in raw_matches
    ]
    for match in matches:
        if match.vr == "UI":
            for value in match.values:
                if not is_safe_uid(value):
                    raise QueryError(f"{match.keyword}={value[:80]!r} is not a UID (digits and "
                                     "dots, at most 64 characters; no wildcards, PS3.4 "
                                     "C.2.2.2.2)")
    return QidoQuery(
        Filter(tuple(matches), fuzzy=fuzzy),
        "all" if include_all else tuple(include),
        limit,
        offset,
    )
