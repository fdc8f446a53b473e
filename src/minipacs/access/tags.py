"""Access tags (issue #11): which studies a principal limited to tags may see.

A study carries a set of tags, given when it is stored: by the calling AE (its registry
entry's `store_tags`), by rules on its attributes (`MINIPACS_ACCESS_TAG_RULES`, e.g.
InstitutionalDepartmentName "CARDIO*" -> tag `cardio`), or by an admin. A principal with
access tags (a user, an API token, a calling AE, a share link made by such a user) sees
only studies carrying at least one of them, in every query and retrieve; the core adds
that condition to the SQL that answers (`index/access_tags.py`). A principal without
tags (None) sees every study, as before tags existed.

Pure code: parsing tags and evaluating the rules on a parsed header; no I/O.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from minipacs.dicom.names import fold_text
from minipacs.errors import InvalidRequest

_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def parse_tags(text: str | Iterable[str] | None) -> frozenset[str]:
    """'a,b' or ['a', 'b'] -> frozenset; raises `InvalidRequest` naming a bad tag."""
    if text is None:
        return frozenset()
    items = text.split(",") if isinstance(text, str) else list(text)
    tags = {item.strip() for item in items if item.strip()}
    for tag in sorted(tags):
        if not _TAG.fullmatch(tag):
            raise InvalidRequest(f"access tag {tag[:80]!r} must be 1 to 64 characters of "
                                 "A-Z, a-z, 0-9, '.', '_', ':', '-' (starting with a "
                                 "letter or digit)")
    return frozenset(tags)


def tags_text(tags: Iterable[str]) -> str:
    """How tags are kept in a text column: sorted, comma-separated ("" for none)."""
    return ",".join(sorted(tags))


def limit_of(text: str) -> frozenset[str] | None:
    """A stored tag column as a principal's limit: None (every study) when empty."""
    tags = frozenset(t for t in text.split(",") if t)
    return tags or None


@dataclass(frozen=True)
class AccessTagRule:
    """Give `tag` to a study when an instance's `attribute` (a DICOM keyword) has a
    value matching `pattern` (DICOM wildcards `*` and `?`, PS3.4 C.2.2.2.4, applied to
    a stored value), ignoring case, accents and repeated spaces ("Chẩn đoán hình ảnh"
    matches "CHAN DOAN HINH ANH*")."""

    attribute: str
    pattern: str
    tag: str

    def matches(self, dataset: Dataset) -> bool:
        element = dataset.get(self.attribute)
        if element is None:
            return False
        values = list(element) if isinstance(element, MultiValue | list | tuple) else [element]
        # fnmatch's [..] classes are not DICOM wildcards: escape them.
        wanted = fold_text(self.pattern).replace("[", "[[]")
        return any(fnmatch.fnmatchcase(fold_text(str(value)), wanted) for value in values)


def parse_rules(text: str) -> tuple[AccessTagRule, ...]:
    """`MINIPACS_ACCESS_TAG_RULES`: a JSON list of {"attribute", "pattern", "tag"}.
    Raises `ValueError` naming the entry and what is wrong (so the setting's validator
    says what to change)."""
    if not text.strip():
        return ()
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"access tag rules are not JSON ({exc}); expected e.g. "
                         '[{"attribute": "InstitutionalDepartmentName", "pattern": '
                         '"CARDIO*", "tag": "cardio"}]') from None
    if not isinstance(data, list):
        raise ValueError("access tag rules must be a JSON list of objects")
    rules = []
    for n, item in enumerate(data, 1):
        if not isinstance(item, dict) or set(item) != {"attribute", "pattern", "tag"}:
            raise ValueError(f"access tag rule {n} must have exactly the keys 'attribute', "
                             f"'pattern' and 'tag', not {item!r}")
        attribute, pattern, tag = (str(item[k]) for k in ("attribute", "pattern", "tag"))
        if tag_for_keyword(attribute) is None:
            raise ValueError(f"access tag rule {n}: {attribute!r} is not a DICOM keyword "
                             "(e.g. InstitutionalDepartmentName, InstitutionName, "
                             "StationName, Modality)")
        try:
            (checked,) = parse_tags([tag]) or {""}
        except InvalidRequest as exc:
            raise ValueError(f"access tag rule {n}: {exc}") from None
        if not checked or not pattern:
            raise ValueError(f"access tag rule {n}: 'pattern' and 'tag' must not be empty")
        rules.append(AccessTagRule(attribute, pattern, checked))
    return tuple(rules)


def tags_by_rules(rules: Iterable[AccessTagRule], dataset: Dataset) -> frozenset[str]:
    """The tags the rules give an instance with this header."""
    return frozenset(rule.tag for rule in rules if rule.matches(dataset))
