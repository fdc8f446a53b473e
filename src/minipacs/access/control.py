"""The one permission check. Doors authenticate; this decides."""

from __future__ import annotations

from minipacs.access.principal import Principal
from minipacs.access.roles import Action, role_may
from minipacs.errors import Forbidden


def permits(principal: Principal, action: Action, study_uid: str | None = None) -> bool:
    """May `principal` do `action` (to `study_uid`, when the action is on one study)?"""
    if principal.must_change_password or principal.must_enroll_totp:
        return False
    if not role_may(principal.role, action):
        return False
    if principal.actions is not None and action not in principal.actions:
        return False
    if principal.study_uids is not None:
        # A share link: queries are narrowed to its studies by the core (`Archive.find`);
        # anything on a study must be on one of them.
        if study_uid is None:
            return action is Action.QUERY
        return study_uid in principal.study_uids
    return True


def require(principal: Principal, action: Action, study_uid: str | None = None) -> None:
    """Raise `Forbidden` naming the principal, the action and why, unless permitted."""
    if permits(principal, action, study_uid):
        return
    if principal.must_change_password:
        raise Forbidden(f"{principal.name} must change the one-time password first "
                        "(POST /auth/password, or the viewer's login page)")
    if principal.must_enroll_totp:
        raise Forbidden(f"{principal.name} must enrol a second factor first "
                        "(POST /auth/totp/enroll, then POST /auth/totp/confirm)")
    if principal.study_uids is not None and study_uid not in principal.study_uids:
        raise Forbidden(f"{principal.actor} may only open the study it was shared for")
    raise Forbidden(f"{principal.actor} (role {principal.role.value}) may not "
                    f"{action.value}")
