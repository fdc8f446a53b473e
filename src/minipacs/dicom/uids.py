"""UID validation: the only gate between client text and blob keys or SQL values."""

from __future__ import annotations

import re

from minipacs.errors import InvalidAttribute

# PS3.5 §9.1: components of digits separated by '.', no leading zero in a
# multi-digit component, at most 64 characters in all.
_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
# Components of ASCII digits separated by single dots (leading zeros allowed).
_SAFE_UID_RE = re.compile(r"(?:[0-9]+\.)*[0-9]+")


def is_valid_uid(value: str) -> bool:
    return len(value) <= 64 and _UID_RE.fullmatch(value) is not None


def is_safe_uid(value: str) -> bool:
    """Digits and dots only, at most 64 characters: safe as a path component and a key.

    Looser than `is_valid_uid` on purpose: real modalities send UIDs with leading
    zeros in a component, and we must still store and serve those.
    """
    return len(value) <= 64 and _SAFE_UID_RE.fullmatch(value) is not None


def require_uid(value: object, keyword: str) -> str:
    """Return `value` as a UID string or raise `InvalidAttribute` naming the attribute."""
    if value is None or str(value).strip() == "":
        raise InvalidAttribute(f"{keyword} is missing; every instance must carry one")
    text = str(value).strip().rstrip("\0")
    if not is_safe_uid(text):
        raise InvalidAttribute(
            f"{keyword} {text[:80]!r} is not a DICOM UID (digits and dots, at most 64 characters)"
        )
    return text
