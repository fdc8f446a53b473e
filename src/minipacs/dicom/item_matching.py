"""Sequence matching (PS3.4 C.2.2.2.6) over stored DICOM JSON, in Python.

The index keeps a few sequences per entity as DICOM JSON (PS3.18 Annex F). A query on
one of them arrives as `Match`es whose keys are tag paths, ``SEQUENCE.ITEMTAG`` (or
deeper, ``SEQUENCE.NESTED.ITEMTAG``): the keys of the query's one item. An entity matches
when at least one stored item satisfies every non-universal key of that item; a nested
sequence key inside the item is matched the same way, recursively.

Values are compared with the rules `index/query.py` compiles to SQL for columns (single
value, wildcard, range, list; PN case-insensitive, optionally fuzzy), so whether a value
matches never depends on where it is stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from minipacs.dicom.json_model import keyword_of
from minipacs.dicom.matching import Match
from minipacs.dicom.names import fold_text, lower_name
from minipacs.errors import QueryError

# VRs whose DICOM JSON values are numbers (PS3.18 F.2.3).
_NUMBER_VRS = {"DS", "IS", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV"}

JsonItem = dict[str, Any]


@dataclass(frozen=True)
class SequenceKey:
    """One sequence key of a query: the sequence's tag and the matches of its one item.

    Each match's key is the full path starting with `sequence` (``00081110.00081155``).
    """

    sequence: str
    matches: tuple[Match, ...]

    @property
    def keyword(self) -> str:
        return keyword_of(self.sequence)


def sequence_keys(matches: Iterable[Match]) -> tuple[SequenceKey, ...]:
    """Group the active matches on sequence items by their top-level sequence, in order."""
    groups: dict[str, list[Match]] = {}
    for match in matches:
        if match.kind == "universal" or "." not in match.key:
            continue
        groups.setdefault(match.key.split(".", 1)[0], []).append(match)
    return tuple(SequenceKey(tag, tuple(group)) for tag, group in groups.items())


def check_sequence_key(key: SequenceKey) -> None:
    """Refuse, before any data is read, what no stored value could be matched with:
    a value on a sequence itself, or a number compared other than by value or list."""
    for match in key.matches:
        if match.vr == "SQ":
            raise QueryError(
                f"{match.keyword} is a sequence: give the attributes of its "
                "item (e.g. Sequence.Attribute=value)"
            )
        if match.vr in _NUMBER_VRS:
            if match.kind not in ("single", "list"):
                raise QueryError(
                    f"{match.keyword}: {match.kind} matching is not supported on numbers"
                )
            for value in match.values:
                try:
                    float(value)
                except ValueError as exc:
                    raise QueryError(f"{match.keyword}: {value!r} is not a number") from exc


def dataset_matches(model: dict[str, Any], key: SequenceKey) -> bool:
    """Does the stored DICOM JSON `model` (an entity's sequences) match `key`?"""
    return bool(matching_items(model.get(key.sequence), key.matches, depth=1))


def matching_items(
    sequence: dict[str, Any] | None, matches: Sequence[Match], depth: int
) -> list[JsonItem]:
    """Items of a stored SQ element in which every match holds; `depth` is the position
    of the item-level tag in the matches' key paths."""
    if not sequence:
        return []
    items: list[JsonItem] = sequence.get("Value") or []
    return [item for item in items if item_matches(item, matches, depth)]


def item_matches(item: JsonItem, matches: Sequence[Match], depth: int) -> bool:
    nested: dict[str, list[Match]] = {}
    for match in matches:
        parts = match.key.split(".")
        if len(parts) == depth + 1:
            if not element_matches(match, item.get(parts[depth])):
                return False
        else:
            nested.setdefault(parts[depth], []).append(match)
    # Recursive sequence matching: some item of each nested sequence matches its keys.
    return all(matching_items(item.get(tag), group, depth + 1) for tag, group in nested.items())


def keep_matching_items(model: dict[str, Any], keys: Sequence[SequenceKey]) -> None:
    """Reduce each matched sequence in a result to the items that matched, nested
    sequences too (C.2.2.2.6: the response carries the sequence of matching items)."""
    for key in keys:
        if model.get(key.sequence):
            model[key.sequence] = _reduced(model[key.sequence], key.matches, 1)


def _reduced(sequence: dict[str, Any], matches: Sequence[Match], depth: int) -> dict[str, Any]:
    if not sequence.get("Value"):
        return sequence
    nested: dict[str, list[Match]] = {}
    for match in matches:
        parts = match.key.split(".")
        if len(parts) > depth + 1:
            nested.setdefault(parts[depth], []).append(match)
    kept = [
        {**item, **{tag: _reduced(item[tag], group, depth + 1) for tag, group in nested.items()}}
        for item in matching_items(sequence, matches, depth)
    ]
    return {**sequence, "Value": kept}


def element_matches(match: Match, element: dict[str, Any] | None) -> bool:
    """One attribute of a stored item against a match. A zero-length or absent value
    matches only universal matching (PS3.4 C.2.2.2.1)."""
    if match.kind == "universal":
        return True
    if not element or not element.get("Value"):
        return False
    values: list[Any] = element["Value"]
    vr = element.get("vr") or match.vr
    if vr == "PN":
        return any(_name_matches(match, _person_name(v)) for v in values)
    if vr in _NUMBER_VRS:
        return any(_number_matches(match, v) for v in values)
    return any(value_matches(match, str(v)) for v in values)


def value_matches(match: Match, text: str) -> bool:
    """A non-PN text value against a match (case-sensitive, PS3.4 C.2.2.2)."""
    if match.kind == "single":
        return text == match.values[0]
    if match.kind == "list":
        return text in match.values
    if match.kind == "wildcard":
        return _wildcard(match.values[0]).fullmatch(text) is not None
    if match.kind == "range":
        low, high = match.values
        # As in SQL: '~' sorts after digits and '.', so a high time "1200" admits "120030".
        return text != "" and (not low or text >= low) and (not high or text <= high + "~")
    return True


def _name_matches(match: Match, name: str) -> bool:
    """PN: case-insensitive; fuzzy also ignores diacritics and may start at any name
    component, exactly as the SQL on the patient name columns does."""
    values = match.values if match.kind == "list" else match.values[:1]
    for value in values:
        if match.fuzzy:
            pattern = _wildcard(fold_text(value), prefix=".* ", suffix=".*")
            if pattern.fullmatch(" " + fold_text(name)):
                return True
        elif "*" in value or "?" in value:
            if _wildcard(lower_name(value)).fullmatch(lower_name(name)):
                return True
        elif lower_name(name) == lower_name(value):
            return True
    return False


def _number_matches(match: Match, value: Any) -> bool:
    """Numbers match by value ("007" is 7), as the integer columns do in SQL;
    `check_sequence_key` has already refused other kinds and non-numbers."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False  # a stored value that is no number matches no number
    return number in [float(v) for v in match.values]


def _person_name(value: Any) -> str:
    if isinstance(value, dict):
        groups = [value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
        return "=".join(groups).rstrip("=")
    return str(value)


@lru_cache(maxsize=256)
def _wildcard(value: str, prefix: str = "", suffix: str = "") -> re.Pattern[str]:
    """DICOM wildcard (``*`` any run, ``?`` one character) as an anchored regex."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value)
    return re.compile(prefix + body + suffix, re.DOTALL)
