"""Who is asking: the one identity every door establishes and every core call receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from minipacs.access.roles import Action, Role

PrincipalKind = Literal["user", "token", "share", "ae", "hl7", "system", "anonymous"]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    `kind`: a logged-in user, an API token, a share link, a calling DICOM AE, the system
    itself (CLI, sample preload, background jobs), an HL7 v2 sending application (its
    MSH-3^MSH-4, `hl7/senders.py`) or, with auth off, an anonymous caller.
    `source` is where the request came from (IP address, or "cli"). `actions`, when
    given, narrows what the principal may do below its role (a DICOM AE's registry
    rights, a share link's read-only view); `study_uids`, when given, limits it to those
    studies (share links). `access_tags`, when given, limits it to the studies carrying
    at least one of those tags (`access/tags.py`); None: every study. `store_tags`: the
    tags studies it stores are given (a calling AE's registry entry).
    """

    kind: PrincipalKind
    name: str
    role: Role
    source: str = ""
    actions: frozenset[Action] | None = None
    study_uids: frozenset[str] | None = None
    access_tags: frozenset[str] | None = None
    store_tags: frozenset[str] = frozenset()
    must_change_password: bool = False
    must_enroll_totp: bool = False  # an admin under `auth_admin_totp=required`, not enrolled
    session_id: int | None = field(default=None, compare=False)
    # Why this caller opens a restricted patient's record (HTTP X-Break-Glass-Reason;
    # `access/restricted.py`); None when none was given.
    break_glass_reason: str | None = field(default=None, compare=False)

    @property
    def actor(self) -> str:
        """How the audit trail names this principal: `user:alice`, `ae:CT1`, ..."""
        return f"{self.kind}:{self.name}"


def system_principal(name: str = "minipacs", source: str = "local") -> Principal:
    """The archive acting on its own behalf (CLI commands run by the server's operator,
    the sample preload, maintenance). Audited like anyone else."""
    return Principal("system", name, Role.ADMIN, source)


def cli_principal(command: str) -> Principal:
    """Whoever runs a `minipacs` command on the server: the operator, named by OS user."""
    import getpass

    return Principal("system", f"cli-{command}:{getpass.getuser()}", Role.ADMIN, "cli")


def ae_principal(calling_ae_title: str, address: str,
                 actions: frozenset[Action] | None, *,
                 access_tags: frozenset[str] | None = None,
                 store_tags: frozenset[str] = frozenset()) -> Principal:
    """A calling DICOM AE. `actions`: what its registry rights allow (None: every action
    a DICOM node may take, when unregistered AEs are admitted); `access_tags` and
    `store_tags` from its registry entry (`access/tags.py`)."""
    return Principal("ae", calling_ae_title, Role.DICOM_NODE, address, actions=actions,
                     access_tags=access_tags, store_tags=store_tags)


def anonymous_principal(source: str) -> Principal:
    """A caller with auth off (MINIPACS_AUTH=off): may do anything, audited as anonymous."""
    return Principal("anonymous", "anonymous", Role.ADMIN, source)
