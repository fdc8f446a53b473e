"""Attribute matching as PS3.4 C.2.2.2 defines it, independent of any door.

A C-FIND identifier and a QIDO-RS query string both become a `Filter`: one `Match`
per attribute. The index compiles a Filter to SQL, so DIMSE and DICOMweb match alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

from minipacs.dicom.json_model import keyword_of, vr_of
from minipacs.errors import QueryError

MatchKind = Literal["universal", "single", "wildcard", "range", "list"]

_DATE_RE = re.compile(r"^\d{8}$")
_TIME_RE = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_RANGE_VRS = {"DA", "TM", "DT"}


@dataclass(frozen=True)
class Match:
    """How one attribute is matched.

    `key` is the tag as 8 hex digits; for sequence matching it is ``SEQTAG.ITEMTAG``.
    `values`: one value for single/wildcard; (low, high) for range, either may be "";
    several for list. `fuzzy` asks for accent- and case-insensitive PN matching.
    """

    key: str
    kind: MatchKind
    values: tuple[str, ...] = ()
    vr: str = "UN"
    fuzzy: bool = False

    @property
    def keyword(self) -> str:
        return ".".join(keyword_of(part) for part in self.key.split("."))


@dataclass(frozen=True)
class Filter:
    matches: tuple[Match, ...] = ()
    fuzzy: bool = False
    return_keys: tuple[str, ...] = field(default=())

    def get(self, key: str) -> Match | None:
        return next((m for m in self.matches if m.key == key), None)

    def active(self) -> tuple[Match, ...]:
        return tuple(m for m in self.matches if m.kind != "universal")

    def within(self, key: str, allowed: Iterable[str]) -> Filter:
        """This filter, further limited to `key` (a UID) being one of `allowed`."""
        allowed = sorted(set(allowed))
        current = self.get(key)
        if current is not None and current.kind in ("single", "list"):
            allowed = [v for v in current.values if v in set(allowed)]
        # An empty list matches nothing: keep one value no UID can have.
        narrowed = Match(key, "list", tuple(allowed) or ("",), "UI")
        return replace(self, matches=tuple(m for m in self.matches if m.key != key)
                       + (narrowed,))

    def describe(self) -> str:
        """The active keys as `Keyword=value` text, for logs and the audit trail."""
        parts = [f"{m.keyword}={'-'.join(m.values) if m.kind == 'range' else ','.join(m.values)}"
                 for m in self.active()]
        return " ".join(parts) + (" (fuzzy)" if self.fuzzy else "") if parts else "(all)"


def _check_date(value: str, name: str) -> str:
    if value and not _DATE_RE.match(value):
        raise QueryError(f"{name}: {value!r} is not a DICOM date (YYYYMMDD) or date range")
    return value


def _check_time(value: str, name: str) -> str:
    if value and not _TIME_RE.match(value.replace(":", "")):
        raise QueryError(f"{name}: {value!r} is not a DICOM time (HHMMSS.FFFFFF) or time range")
    return value.replace(":", "")


def parse_match(key: str, raw: str, *, fuzzy: bool = False, list_sep: str = "") -> Match:
    """Build the Match for one attribute value as a client sent it.

    Raises `QueryError` naming the attribute when the value cannot be matched
    (e.g. a malformed date range).
    """
    last = key.split(".")[-1]
    vr = vr_of(last)
    name = ".".join(keyword_of(part) for part in key.split("."))
    value = raw.strip() if vr not in {"LT", "ST", "UT"} else raw
    value = value.rstrip("\0")
    if value == "" or value == "*":
        return Match(key, "universal", (), vr, fuzzy)
    if vr in _RANGE_VRS and "-" in value:
        low, _, high = value.partition("-")
        low, high = low.strip(), high.strip()
        if vr == "DA":
            low, high = _check_date(low, name), _check_date(high, name)
        elif vr == "TM":
            low, high = _check_time(low, name), _check_time(high, name)
        if not low and not high:
            raise QueryError(f"{name}: range {value!r} has neither start nor end")
        return Match(key, "range", (low, high), vr, fuzzy)
    if vr == "DA":
        _check_date(value, name)
    elif vr == "TM":
        value = _check_time(value, name)
    # Value lists: UIDs (PS3.4 C.2.2.2.2) and coded strings; free text (PN, LO...) never.
    if vr in {"UI", "CS", "AE", "SH", "LO", "IS", "DA"} and vr != "PN":
        separators = ["\\", list_sep] if vr in {"UI", "CS", "AE"} else [list_sep]
        parts = [value]
        for sep in separators:
            if sep:
                parts = [p for chunk in parts for p in chunk.split(sep)]
        parts = [p.strip() for p in parts if p.strip()]
        if len(parts) > 1:
            return Match(key, "list", tuple(parts), vr, fuzzy)
    if vr != "UI" and ("*" in value or "?" in value):
        return Match(key, "wildcard", (value,), vr, fuzzy)
    return Match(key, "single", (value,), vr, fuzzy)


def like_pattern(value: str) -> str:
    """DICOM wildcard (``*``, ``?``) → SQL LIKE pattern with ``\\`` as the escape."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")
