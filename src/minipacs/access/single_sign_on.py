"""Accounts the OpenID Provider vouches for: their local record, sessions and principals.

A person signing in through the provider gets a local account record (created at first
sign-in, its role kept in step with the token's role claim at each sign-in) so that
administrators see them in `minipacs user list`, can disable them, and so the audit
trail names them like any user. Such an account has no usable password: a password login
to it is refused (`Accounts._login`). A local password account and a provider's user of
the same name are never merged: the sign-in is refused, so the provider cannot take over
an existing account.

Every sign-in, success or failure, and the first use of each bearer access token on a
node are login events in the audit trail, like password logins.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from minipacs.access.accounts import TOKEN_PREFIX, Accounts, LoginResult, token_digest
from minipacs.access.oidc import Identity, OpenIdProvider
from minipacs.access.passwords import hash_password
from minipacs.access.principal import Principal
from minipacs.access.roles import Role
from minipacs.audit.chain import AuditRecord, append, utc_now
from minipacs.errors import Unauthenticated
from minipacs.index.models import ApiToken, UserAccount

_RECHECK_SECONDS = 10.0  # a disabled account stops its bearer tokens within this time
_CACHE_LIMIT = 10_000


class SingleSignOn:
    """The provider and the accounts it signs in; thread-safe, one per node."""

    def __init__(self, provider: OpenIdProvider, accounts: Accounts) -> None:
        self.provider = provider
        self.accounts = accounts
        self._lock = threading.Lock()
        # token digest → (principal, token expiry, last account check), monotonic-free:
        # expiry is the token's own 'exp' (Unix time).
        self._bearers: dict[str, tuple[Principal, float, float]] = {}

    # ------------------------------------------------------------- audit
    def refuse(self, reason: str, *, source: str, username: str = "") -> None:
        """Record a failed sign-in (the caller then raises or answers the refusal)."""
        actor = f"user:{username[:64]}" if username else "user:(openid-connect)"
        with self.accounts._write() as s, s.begin():
            append(s, AuditRecord("login", actor, source=source, outcome="failure",
                                  detail=f"OpenID Connect: {reason}"[:1000]))

    def _account_problem(self, s: Session, user: UserAccount | None,
                         identity: Identity) -> str:
        """Why this identity may not use the account of its name ("" when it may)."""
        if user is None:
            return ""
        if not user.identity_provider:
            return (f"a local account {user.username} exists; a user of the OpenID "
                    "Provider cannot sign in to it (rename one of them)")
        if (user.identity_provider, user.external_subject) != (identity.issuer,
                                                               identity.subject):
            return (f"account {user.username} belongs to subject {user.external_subject} "
                    f"of {user.identity_provider}, not to {identity.subject}")
        return self.accounts._check_usable(s, user, utc_now())

    # ------------------------------------------------------------- viewer sign-in
    def open_session(self, identity: Identity, *, source: str) -> LoginResult:
        """The provider signed `identity` in: create or update its account, open a
        session (a bearer token, also the viewer's cookie) and audit the login."""
        if not identity.is_user:
            raise Unauthenticated("the ID token names no user (no "
                                  f"{self.provider.username_claim} claim)")
        now = utc_now()
        refusal = ""
        with self.accounts._write() as s, s.begin():
            user = s.scalars(select(UserAccount).where(
                UserAccount.username == identity.username).with_for_update()).one_or_none()
            refusal = self._account_problem(s, user, identity)
            if refusal:
                append(s, AuditRecord("login", f"user:{identity.username}",
                                      identity.role.value, source, outcome="failure",
                                      detail=f"OpenID Connect: {refusal}"))
            else:
                detail = f"OpenID Connect session ({identity.issuer})"
                if user is None:
                    # A random password nobody knows; `_login` refuses password logins to
                    # provider accounts anyway.
                    user = UserAccount(username=identity.username, role=identity.role.value,
                                       password_hash=hash_password(secrets.token_urlsafe(32)),
                                       must_change_password=False,
                                       identity_provider=identity.issuer,
                                       external_subject=identity.subject)
                    s.add(user)
                    s.flush()
                    append(s, AuditRecord("user-add", "system:openid-connect",
                                          detail=f"user {identity.username} "
                                          f"({identity.role.value}) from {identity.issuer}"))
                elif user.role != identity.role.value:
                    append(s, AuditRecord("user-role", "system:openid-connect",
                                          detail=f"user {user.username}: {user.role} → "
                                          f"{identity.role.value} (the provider's role claim)"))
                    user.role = identity.role.value
                user.failed_logins, user.locked_until, user.last_login_at = 0, None, now
                token = TOKEN_PREFIX + secrets.token_urlsafe(32)
                expires = now + timedelta(hours=self.accounts.policy.session_max_hours)
                s.add(ApiToken(token_hash=token_digest(token), kind="session",
                               name=user.username, role=user.role, user_pk=user.id,
                               expires_at=expires, last_used_at=now))
                append(s, AuditRecord("login", f"user:{user.username}", user.role, source,
                                      detail=detail))
        if refusal:
            raise Unauthenticated(refusal)
        return LoginResult(token, Principal("user", identity.username, identity.role,
                                            source), expires)

    # ------------------------------------------------------------- API callers
    def bearer_principal(self, token: str, *, source: str) -> Principal:
        """The principal of a provider's JWT access token; `Unauthenticated` (audited)
        when it does not validate or its account is disabled."""
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
        now = time.time()
        with self._lock:
            hit = self._bearers.get(digest)
        if hit is not None and now < hit[1] + self.provider.leeway and \
                now - hit[2] < _RECHECK_SECONDS:
            return _with_source(hit[0], source)
        try:
            identity = self.provider.verify_access_token(token)
        except Unauthenticated as exc:
            self.refuse(str(exc), source=source)
            raise
        with self.accounts._write() as s, s.begin():
            user = s.scalars(select(UserAccount).where(
                UserAccount.username == identity.username)).one_or_none()
            problem = self._account_problem(s, user, identity) if identity.is_user else ""
            if problem or hit is None:
                append(s, AuditRecord(
                    "login", f"{'user' if identity.is_user else 'token'}:{identity.username}",
                    identity.role.value, source, outcome="failure" if problem else "success",
                    detail=f"OpenID Connect access token: {problem}" if problem else
                    f"OpenID Connect access token ({identity.issuer})"))
        if problem:
            with self._lock:
                self._bearers.pop(digest, None)
            raise Unauthenticated(problem)
        principal = Principal("user" if identity.is_user else "token", identity.username,
                              Role(identity.role), source)
        with self._lock:
            if len(self._bearers) > _CACHE_LIMIT:
                self._bearers.clear()
            self._bearers[digest] = (principal, identity.expires_at, now)
        return principal


def _with_source(principal: Principal, source: str) -> Principal:
    if principal.source == source:
        return principal
    return Principal(principal.kind, principal.name, principal.role, source)
