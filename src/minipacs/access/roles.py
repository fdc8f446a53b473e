"""Roles, actions and the permission matrix: the one table that says who may do what.

`docs/security.md` renders this table; `tests/test_access_matrix.py` checks every HTTP
route against it for every role and an anonymous caller, so a route without a rule, or a
rule that drifts from this table, fails the suite.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    RADIOLOGIST = "radiologist"
    TECHNOLOGIST = "technologist"
    CLINICIAN = "clinician"
    EMR = "emr"  # a system account: the hospital's EMR/HIS
    RESEARCH = "research"
    AUDITOR = "auditor"


class Action(StrEnum):
    QUERY = "query"  # search patients/studies (C-FIND, QIDO-RS, study list)
    VIEW = "view"  # metadata, frames, rendered images, thumbnails: what a viewer shows
    DOWNLOAD = "download"  # whole instances/studies as DICOM files (WADO-RS, WADO-URI, ZIP)
    STORE = "store"  # C-STORE, STOW-RS, import
    DELETE = "delete"  # remove studies
    RECONCILE = "reconcile"  # correct demographics, merge patients
    MANAGE_USERS = "manage-users"  # accounts, API tokens, share links of others
    MANAGE_AES = "manage-aes"  # the DICOM AE registry
    MANAGE_WORKLIST = "manage-worklist"  # orders / Modality Worklist items
    EXPORT_DEIDENTIFIED = "export-deidentified"  # research exports (PS3.15 E)
    READ_AUDIT = "read-audit"  # the audit trail
    SHARE = "share"  # create expiring read-only links to a study


A = Action
PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.RADIOLOGIST: frozenset({A.QUERY, A.VIEW, A.DOWNLOAD, A.STORE, A.SHARE}),
    Role.TECHNOLOGIST: frozenset({A.QUERY, A.VIEW, A.STORE, A.MANAGE_WORKLIST}),
    Role.CLINICIAN: frozenset({A.QUERY, A.VIEW, A.SHARE}),
    Role.EMR: frozenset({A.QUERY, A.VIEW, A.MANAGE_WORKLIST, A.SHARE, A.RECONCILE}),
    Role.RESEARCH: frozenset({A.EXPORT_DEIDENTIFIED}),
    Role.AUDITOR: frozenset({A.READ_AUDIT}),
}


def role_may(role: Role, action: Action) -> bool:
    return action in PERMISSIONS[role]


def parse_role(text: str) -> Role:
    try:
        return Role(text.strip().lower())
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role {text!r}; roles are: {known}") from None
