"""Blob keys. Only validated UIDs ever become part of a key, so no client text is a path."""

from __future__ import annotations

from minipacs.dicom.uids import is_safe_uid
from minipacs.errors import InvalidInstance


def instance_key(study_uid: str, series_uid: str, sop_uid: str) -> str:
    for name, uid in (("study", study_uid), ("series", series_uid), ("instance", sop_uid)):
        if not is_safe_uid(uid):
            raise InvalidInstance(f"{name} UID {uid[:80]!r} cannot be used as a storage key")
    return f"studies/{study_uid}/series/{series_uid}/{sop_uid}.dcm"


def check_key(key: str) -> str:
    """Reject keys that could escape the store root (defence in depth for every backend)."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise ValueError(f"unsafe blob key {key!r}")
    return key
