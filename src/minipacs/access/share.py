"""Share links: an expiring, revocable, read-only link that opens one study (or one
patient's studies) in the viewer and nothing else.

The link is `<base>/viewer/#share=<token>`: the token sits in the URL fragment, which
browsers never send, so it never lands in a server or proxy log. The viewer exchanges it
(`POST /auth/share`, with the PIN when the link has one) for a session limited to the
link's studies, to `query` and `view`. Only the token's SHA-256 and the PIN's Argon2id
hash are kept. Five wrong PINs revoke the link. Creating, using (with the address) and
revoking a link are audit events.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from minipacs.access import control
from minipacs.access.accounts import TOKEN_PREFIX, LoginResult, token_digest
from minipacs.access.passwords import hash_password, verify_password
from minipacs.access.principal import Principal
from minipacs.access.roles import Action, Role
from minipacs.access.tags import limit_of, tags_text
from minipacs.audit.chain import AuditRecord, append, utc_now
from minipacs.errors import InvalidRequest, NotFound, Unauthenticated
from minipacs.index.models import ApiToken, ShareLink

SHARE_ACTIONS = frozenset({Action.QUERY, Action.VIEW})
MAX_HOURS = 24 * 30
_PIN_ATTEMPTS = 5
_SESSION_HOURS = 12


@dataclass(frozen=True)
class ShareInfo:
    id: int
    study_instance_uid: str
    patient_id: str
    created_by: str
    note: str
    has_pin: bool
    created_at: datetime | None
    expires_at: datetime
    revoked: bool
    uses: int
    last_used_at: datetime | None
    last_source: str

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = dict(self.__dict__)
        for key in ("created_at", "expires_at", "last_used_at"):
            value = out[key]
            out[key] = value.isoformat() + "Z" if isinstance(value, datetime) else None
        return out


def _info(row: ShareLink) -> ShareInfo:
    return ShareInfo(row.id, row.study_instance_uid, row.patient_id, row.created_by,
                     row.note, bool(row.pin_hash), row.created_at, row.expires_at,
                     row.revoked_at is not None, row.uses, row.last_used_at,
                     row.last_source)


def share_principal(share_pk: int, study_uids: frozenset[str], source: str,
                    access_tags: frozenset[str] | None = None) -> Principal:
    """A share link's session; `access_tags`: its creator's (`access/tags.py`), so a link
    never opens more than whoever made it could see."""
    return Principal("share", f"link-{share_pk}", Role.CLINICIAN, source,
                     actions=SHARE_ACTIONS, study_uids=study_uids, access_tags=access_tags)


class ShareLinks:
    def __init__(self, engine: Engine, write_engine: Engine | None = None) -> None:
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(write_engine or engine, expire_on_commit=False)

    def create(self, principal: Principal, *, study_uid: str = "", patient_id: str = "",
               issuer_of_patient_id: str = "", expires_hours: int = 72, pin: str = "",
               note: str = "") -> tuple[str, ShareInfo]:
        """A new link (its token returned once). The creator must be allowed to share
        and to view what is shared; the caller has checked the study or patient exists."""
        control.require(principal, Action.SHARE, study_uid or None)
        if study_uid:
            control.require(principal, Action.VIEW, study_uid)
        if bool(study_uid) == bool(patient_id):
            raise InvalidRequest("a share link opens one study (study_uid) or one "
                                 "patient's studies (patient_id): give exactly one")
        if not 1 <= expires_hours <= MAX_HOURS:
            raise InvalidRequest(f"expires_hours must be 1 to {MAX_HOURS} (30 days), "
                                 f"not {expires_hours}")
        if pin and not (4 <= len(pin) <= 12 and pin.isdigit()):
            raise InvalidRequest("a PIN is 4 to 12 digits")
        token = "sh_" + secrets.token_urlsafe(32)
        row = ShareLink(token_hash=token_digest(token), study_instance_uid=study_uid,
                        patient_id=patient_id, issuer_of_patient_id=issuer_of_patient_id,
                        created_by=principal.actor, note=note[:256],
                        pin_hash=hash_password(pin) if pin else "", failed_pins=0, uses=0,
                        last_source="", access_tags=tags_text(principal.access_tags or ()),
                        expires_at=utc_now() + timedelta(hours=expires_hours))
        with self._write() as s, s.begin():
            s.add(row)
            s.flush()
            append(s, AuditRecord(
                "share-create", principal.actor, principal.role.value, principal.source,
                patient_id, study_uid,
                detail=f"link {row.id}, expires {row.expires_at:%Y-%m-%d %H:%M} UTC"
                + (", with PIN" if pin else "") + (f": {note}" if note else "")))
        return token, _info(row)

    def links(self) -> list[ShareInfo]:
        with self._read() as s:
            return [_info(r) for r in s.scalars(select(ShareLink).order_by(ShareLink.id))]

    def revoke(self, link_id: int, principal: Principal) -> ShareInfo:
        with self._write() as s, s.begin():
            row = s.get(ShareLink, link_id)
            if row is None:
                raise NotFound(f"no share link {link_id}")
            if row.revoked_at is None:
                row.revoked_at = utc_now()
                for session in s.scalars(select(ApiToken).where(ApiToken.share_pk == row.id)):
                    session.revoked_at = row.revoked_at
                append(s, AuditRecord("share-revoke", principal.actor, principal.role.value,
                                      principal.source, row.patient_id,
                                      row.study_instance_uid, detail=f"link {row.id}"))
            return _info(row)

    def exchange(self, token: str, pin: str, *, source: str,
                 studies_of_patient: Callable[[str, str, frozenset[str] | None], list[str]]
                 ) -> LoginResult:
        """Trade a link (and its PIN) for a session limited to its studies.

        Raises `Unauthenticated` for an unknown, expired or revoked link or a wrong PIN
        (audited with the address it came from)."""
        now = utc_now()
        refusal = ""
        with self._write() as s, s.begin():
            row = s.scalars(select(ShareLink).where(
                ShareLink.token_hash == token_digest(token)).with_for_update()).one_or_none()
            if row is None:
                append(s, AuditRecord("share-use", "share:unknown", source=source,
                                      outcome="failure", detail="unknown link"))
                raise Unauthenticated("this share link is not valid")
            actor = f"share:link-{row.id}"
            if row.revoked_at is not None or row.expires_at <= now:
                refusal = "this share link has expired or was revoked"
            elif row.pin_hash and not verify_password(row.pin_hash, pin):
                row.failed_pins += 1
                if row.failed_pins >= _PIN_ATTEMPTS:
                    row.revoked_at = now
                refusal = "wrong PIN" + (" (the link is now revoked)" if row.revoked_at
                                         else "")
            if refusal:
                append(s, AuditRecord("share-use", actor, Role.CLINICIAN.value, source,
                                      row.patient_id, row.study_instance_uid,
                                      outcome="failure", detail=refusal))
            else:
                limit = limit_of(row.access_tags)
                uids = [row.study_instance_uid] if row.study_instance_uid else \
                    studies_of_patient(row.patient_id, row.issuer_of_patient_id, limit)
                session_token = TOKEN_PREFIX + secrets.token_urlsafe(32)
                expires = min(row.expires_at, now + timedelta(hours=_SESSION_HOURS))
                s.add(ApiToken(token_hash=token_digest(session_token), kind="share",
                               name=f"link-{row.id}", role=Role.CLINICIAN.value,
                               share_pk=row.id, scope_study_uids="\\".join(uids),
                               access_tags=row.access_tags,
                               expires_at=expires, last_used_at=now))
                row.uses += 1
                row.last_used_at, row.last_source = now, source
                append(s, AuditRecord("share-use", actor, Role.CLINICIAN.value, source,
                                      row.patient_id, row.study_instance_uid,
                                      detail=f"use {row.uses}: {len(uids)} studies"))
                principal = share_principal(row.id, frozenset(uids), source, limit)
        if refusal:
            raise Unauthenticated(refusal)
        return LoginResult(session_token, principal, expires)
