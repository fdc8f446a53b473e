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
    # Not for accounts: a calling DICOM AE (modality, workstation). What one AE may do
    # is narrowed further by its rights in the AE registry (`minipacs ae add --rights`).
    DICOM_NODE = "dicom-node"


class Action(StrEnum):
    QUERY = "query"  # search patients/studies (C-FIND, QIDO-RS, study list)
    VIEW = "view"  # metadata, frames, rendered images, thumbnails: what a viewer shows
    DOWNLOAD = "download"  # whole instances/studies as DICOM files (WADO-RS, WADO-URI, ZIP)
    STORE = "store"  # C-STORE, STOW-RS, import
    DELETE = "delete"  # remove studies
    RECONCILE = "reconcile"  # correct demographics, merge patients
    MANAGE_USERS = "manage-users"  # accounts, API tokens, share links of others
    # the archive's configuration: the DICOM AE registry, storage state, the FHIR push,
    # report templates, the viewer's default hanging protocols (admins only)
    MANAGE_AES = "manage-aes"
    MANAGE_WORKLIST = "manage-worklist"  # orders / Modality Worklist items
    EXPORT_DEIDENTIFIED = "export-deidentified"  # research exports (PS3.15 E)
    READ_AUDIT = "read-audit"  # the audit trail
    SHARE = "share"  # create expiring read-only links to a study
    REPORT = "report"  # write and sign radiology reports (reports/)


A = Action
PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.RADIOLOGIST: frozenset({A.QUERY, A.VIEW, A.DOWNLOAD, A.STORE, A.SHARE,
                                A.REPORT}),
    Role.TECHNOLOGIST: frozenset({A.QUERY, A.VIEW, A.STORE, A.MANAGE_WORKLIST}),
    Role.CLINICIAN: frozenset({A.QUERY, A.VIEW, A.SHARE}),
    Role.EMR: frozenset({A.QUERY, A.VIEW, A.MANAGE_WORKLIST, A.SHARE, A.RECONCILE}),
    Role.RESEARCH: frozenset({A.EXPORT_DEIDENTIFIED}),
    Role.AUDITOR: frozenset({A.READ_AUDIT}),
    Role.DICOM_NODE: frozenset({A.QUERY, A.VIEW, A.DOWNLOAD, A.STORE}),
}
ACCOUNT_ROLES = tuple(r for r in Role if r is not Role.DICOM_NODE)


def role_may(role: Role, action: Action) -> bool:
    return action in PERMISSIONS[role]


def parse_role(text: str) -> Role:
    """An account role by name; `ValueError` naming the roles otherwise."""
    try:
        role = Role(text.strip().lower())
        if role in ACCOUNT_ROLES:
            return role
    except ValueError:
        pass
    known = ", ".join(r.value for r in ACCOUNT_ROLES)
    raise ValueError(f"unknown role {text!r}; roles are: {known}")
