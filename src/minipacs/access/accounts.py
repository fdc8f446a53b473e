"""Accounts, API tokens and login sessions; authenticating a credential to a `Principal`.

Passwords are kept as Argon2id hashes, tokens as SHA-256 digests (they are 256-bit
random, so a fast hash is enough and keeps a request's check cheap). A verified
credential is cached for a few seconds as its digest (never the password), so a viewer's
hundreds of frame requests cost one database look-up per `_CACHE_SECONDS`, not one each;
a revoked token or disabled account stops working within that time on every node.
Logins, failures, lockouts and every account change are audit events, written in the same
transaction as the change.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from minipacs.access import totp
from minipacs.access.passwords import (
    PasswordPolicy,
    hash_password,
    one_time_password,
    verify_password,
)
from minipacs.access.principal import Principal, PrincipalKind
from minipacs.access.roles import Action, Role, parse_role
from minipacs.access.tags import limit_of, parse_tags, tags_text
from minipacs.audit.chain import AuditRecord, append, utc_now
from minipacs.config import Settings
from minipacs.errors import Conflict, InvalidRequest, NotFound, Unauthenticated
from minipacs.index.models import ApiToken, ShareLink, UserAccount

_CACHE_SECONDS = 10.0
_TOUCH_SECONDS = 60  # how often a session's last use is written back
TOKEN_PREFIX = "mp_"
_USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-@")


@dataclass(frozen=True)
class AccountPolicy:
    """Security level 3 defaults (see docs/security.md for where each comes from)."""

    passwords: PasswordPolicy = PasswordPolicy()
    lockout_attempts: int = 5
    lockout_minutes: int = 15
    session_idle_minutes: int = 15
    admin_session_idle_minutes: int = 5
    session_max_hours: int = 12
    admin_password_max_age_days: int = 90
    account_idle_days: int = 45
    admin_totp: str = "optional"  # or "required": admins need a second factor

    @classmethod
    def from_settings(cls, settings: Settings) -> AccountPolicy:
        return cls(
            passwords=PasswordPolicy(settings.auth_password_min_length,
                                     settings.auth_password_history),
            lockout_attempts=settings.auth_lockout_attempts,
            lockout_minutes=settings.auth_lockout_minutes,
            session_idle_minutes=settings.auth_session_idle_minutes,
            admin_session_idle_minutes=settings.auth_admin_session_idle_minutes,
            session_max_hours=settings.auth_session_max_hours,
            admin_password_max_age_days=settings.auth_admin_password_max_age_days,
            account_idle_days=settings.auth_account_idle_days,
            admin_totp=settings.auth_admin_totp,
        )


@dataclass(frozen=True)
class UserInfo:
    username: str
    role: Role
    full_name: str
    disabled: bool
    disabled_reason: str
    must_change_password: bool
    locked_until: datetime | None
    last_login_at: datetime | None
    created_at: datetime | None
    totp_enabled: bool = False
    access_tags: tuple[str, ...] = ()  # empty: every study (`access/tags.py`)
    practising_certificate: str = ""  # mã chứng chỉ hành nghề (claims' MA_BS_DOC_KQ)


@dataclass(frozen=True)
class TokenInfo:
    id: int
    kind: str
    name: str
    role: Role
    created_at: datetime | None
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool
    access_tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoginResult:
    token: str
    principal: Principal
    expires_at: datetime


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _user_info(u: UserAccount) -> UserInfo:
    return UserInfo(u.username, Role(u.role), u.full_name, u.disabled, u.disabled_reason,
                    u.must_change_password, u.locked_until, u.last_login_at, u.created_at,
                    u.totp_enabled, tuple(sorted(limit_of(u.access_tags) or ())),
                    u.practising_certificate)


def _token_info(t: ApiToken) -> TokenInfo:
    return TokenInfo(t.id, t.kind, t.name, Role(t.role), t.created_at, t.expires_at,
                     t.last_used_at, t.revoked_at is not None,
                     tuple(sorted(limit_of(t.access_tags) or ())))


def account_role(role: Role | str) -> Role:
    """A role an account or API token may have; `InvalidRequest` naming them otherwise."""
    try:
        return parse_role(role.value if isinstance(role, Role) else role)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def check_practising_certificate(code: str) -> str:
    """A practising-certificate code as claims carry it (QĐ 130/QĐ-BYT: MA_BS_DOC_KQ is
    at most 255 characters and lists several doctors separated by ';', so one code has
    none); "" clears it. `InvalidRequest` naming the value otherwise."""
    value = code.strip()
    if len(value) > 64 or ";" in value or not value.isprintable():
        raise InvalidRequest(f"practising-certificate code {code[:80]!r} must be at most 64 "
                             "printable characters without ';' (e.g. 003539/HCM-CCHN)")
    return value


def check_username(username: str) -> str:
    name = username.strip().lower()
    if not name or len(name) > 64 or not set(name) <= _USERNAME_CHARS:
        raise InvalidRequest(f"user name {username[:80]!r} must be 1 to 64 characters of "
                             "a-z, 0-9, '.', '_', '-', '@'")
    return name


class Accounts:
    """Users, tokens and sessions in the index; thread-safe, one per node."""

    def __init__(self, engine: Engine, write_engine: Engine | None = None,
                 policy: AccountPolicy | None = None) -> None:
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(write_engine or engine, expire_on_commit=False)
        self.policy = policy or AccountPolicy()
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._cache_lock = threading.Lock()
        # Keyed digests of verified Basic credentials: a memory dump shows no password.
        self._cache_key = secrets.token_bytes(32)

    # ----------------------------------------------------------------- users
    def has_users(self) -> bool:
        with self._read() as s:
            return s.scalar(select(func.count(UserAccount.id))) != 0

    def add_user(self, username: str, role: Role | str, *, password: str | None = None,
                 full_name: str = "", actor: str = "system:cli",
                 access_tags: Iterable[str] = (), practising_certificate: str = ""
                 ) -> tuple[UserInfo, str | None]:
        """Create an account. Without `password`, a one-time password is generated and
        returned (the user must change it at first login); with one, it must meet the
        policy and the user need not change it."""
        name = check_username(username)
        role = account_role(role)
        tags = tags_text(parse_tags(access_tags))
        certificate = check_practising_certificate(practising_certificate)
        generated = None
        if password is None:
            generated = password = one_time_password()
        else:
            self._check_policy(password, name)
        user = UserAccount(username=name, role=role.value, full_name=full_name,
                           password_hash=hash_password(password),
                           must_change_password=generated is not None, access_tags=tags,
                           practising_certificate=certificate)
        try:
            with self._write() as s, s.begin():
                s.add(user)
                s.flush()
                append(s, AuditRecord("user-add", actor, detail=f"user {name} ({role.value})"
                                      + (f", access tags {tags}" if tags else "")
                                      + (f", practising certificate {certificate}"
                                         if certificate else "")))
        except IntegrityError:
            raise Conflict(f"user {name!r} already exists") from None
        return _user_info(user), generated

    def ensure_admin(self) -> str | None:
        """First start with accounts on: create `admin` with a one-time password and
        return it (None when any account exists already, or another node made it)."""
        if self.has_users():
            return None
        try:
            _user, password = self.add_user("admin", Role.ADMIN, actor="system:first-start")
        except Conflict:
            return None
        return password

    def users(self) -> list[UserInfo]:
        with self._read() as s:
            return [_user_info(u) for u in s.scalars(select(UserAccount)
                                                      .order_by(UserAccount.username))]

    def user(self, username: str) -> UserInfo:
        with self._read() as s:
            return _user_info(self._get_user(s, username))

    def _get_user(self, s: Session, username: str, lock: bool = False) -> UserAccount:
        stmt = select(UserAccount).where(UserAccount.username == username.strip().lower())
        user = s.scalars(stmt.with_for_update() if lock else stmt).one_or_none()
        if user is None:
            raise NotFound(f"no user {username!r}")
        return user

    def set_disabled(self, username: str, disabled: bool, *, reason: str = "",
                     actor: str = "system:cli") -> UserInfo:
        with self._write() as s, s.begin():
            user = self._get_user(s, username, lock=True)
            user.disabled, user.disabled_reason = disabled, reason if disabled else ""
            if not disabled:
                user.failed_logins, user.locked_until = 0, None
                user.last_login_at = utc_now()  # re-enabled: the idle clock restarts
            else:
                self._end_sessions(s, user)
            append(s, AuditRecord("user-disable" if disabled else "user-enable", actor,
                                  detail=f"user {user.username}" +
                                  (f": {reason}" if reason else "")))
            info = _user_info(user)
        self._forget_cache()
        return info

    def set_user_access_tags(self, username: str, tags: Iterable[str], *,
                             actor: str = "system:cli") -> UserInfo:
        """Limit the account to studies carrying one of `tags` (none: every study)."""
        text = tags_text(parse_tags(tags))
        with self._write() as s, s.begin():
            user = self._get_user(s, username, lock=True)
            user.access_tags = text
            append(s, AuditRecord("user-tags", actor, detail=f"user {user.username}: "
                                  f"access tags {text or '(none: every study)'}"))
            info = _user_info(user)
        self._forget_cache()
        return info

    def set_practising_certificate(self, username: str, code: str, *,
                                   actor: str = "system:cli") -> UserInfo:
        """Record (or, with "", clear) the account's practising-certificate code; an
        account change, audited in its transaction. Reports signed afterwards carry it."""
        value = check_practising_certificate(code)
        with self._write() as s, s.begin():
            user = self._get_user(s, username, lock=True)
            before, user.practising_certificate = user.practising_certificate, value
            append(s, AuditRecord("user-certificate", actor, detail=f"user {user.username}: "
                                  f"practising certificate {before or '(none)'} -> "
                                  f"{value or '(none)'}"))
            info = _user_info(user)
        return info

    def set_token_access_tags(self, token_id: int, tags: Iterable[str], *,
                              actor: str = "system:cli") -> TokenInfo:
        """Limit an API token to studies carrying one of `tags` (none: every study)."""
        text = tags_text(parse_tags(tags))
        with self._write() as s, s.begin():
            row = s.get(ApiToken, token_id)
            if row is None or row.kind != "api":
                raise NotFound(f"no API token {token_id}")
            row.access_tags = text
            append(s, AuditRecord("token-tags", actor, detail=f"token {row.id} {row.name}: "
                                  f"access tags {text or '(none: every study)'}"))
            info = _token_info(row)
        self._forget_cache()
        return info

    def reset_password(self, username: str, *, actor: str = "system:cli") -> str:
        """A new one-time password (returned), to be changed at next login; ends sessions."""
        password = one_time_password()
        with self._write() as s, s.begin():
            user = self._get_user(s, username, lock=True)
            self._set_password(user, password)
            user.must_change_password = True
            user.failed_logins, user.locked_until = 0, None
            self._end_sessions(s, user)
            append(s, AuditRecord("password-reset", actor, detail=f"user {user.username}"))
        self._forget_cache()
        return password

    def change_password(self, username: str, old: str, new: str, *, source: str = "") -> None:
        """The user's own change: the old password must verify; the new one must meet the
        policy and differ from the last `history` ones."""
        with self._write() as s, s.begin():
            user = self._get_user(s, username, lock=True)
            if not verify_password(user.password_hash, old):
                append(s, AuditRecord("password-change", f"user:{user.username}",
                                      user.role, source, outcome="failure",
                                      detail="wrong current password"))
                raise Unauthenticated("the current password is wrong")
            self._check_policy(new, user.username)
            history = [user.password_hash, *user.password_history.split("\n")]
            if any(h and verify_password(h, new)
                   for h in history[: self.policy.passwords.history]):
                raise InvalidRequest(f"the new password must differ from the last "
                                     f"{self.policy.passwords.history}")
            self._set_password(user, new)
            user.must_change_password = False
            append(s, AuditRecord("password-change", f"user:{user.username}", user.role,
                                  source))
        self._forget_cache()

    def _check_policy(self, password: str, username: str) -> None:
        problem = self.policy.passwords.problem(password, username)
        if problem:
            raise InvalidRequest(problem)

    def _set_password(self, user: UserAccount, password: str) -> None:
        if user.password_hash:
            kept = [user.password_hash, *user.password_history.split("\n")]
            user.password_history = "\n".join(h for h in kept if h)[:4000]
        user.password_hash = hash_password(password)
        user.password_changed_at = utc_now()

    # ----------------------------------------------------------------- login
    def _check_usable(self, s: Session, user: UserAccount, now: datetime) -> str:
        """Why this account cannot log in now ("" when it can); disables idle accounts."""
        if user.disabled:
            return f"account {user.username} is disabled"
        if user.locked_until is not None and user.locked_until > now:
            return f"account {user.username} is locked until {user.locked_until:%H:%M} UTC " \
                "after repeated failed logins"
        idle_since = user.last_login_at or user.created_at
        if idle_since is not None and now - idle_since > timedelta(
                days=self.policy.account_idle_days):
            user.disabled = True
            user.disabled_reason = f"unused for more than {self.policy.account_idle_days} days"
            append(s, AuditRecord("user-disable", "system:policy",
                                  detail=f"user {user.username}: {user.disabled_reason}"))
            return f"account {user.username} is disabled: {user.disabled_reason}"
        return ""

    def login(self, username: str, password: str, *, code: str = "", source: str = ""
              ) -> LoginResult:
        """Verify a user's password (and one-time `code`, when the account has a second
        factor) and open a session (a bearer token, returned once).

        Raises `Unauthenticated` with a message that does not tell a wrong user name from
        a wrong password; the audit trail records which."""
        result = self._login(username, password, source, open_session=True, code=code)
        assert isinstance(result, LoginResult)
        return result

    def _must_enroll(self, user: UserAccount) -> bool:
        return (self.policy.admin_totp == "required" and user.role == Role.ADMIN.value
                and not user.totp_enabled and not user.identity_provider)

    def _failed(self, s: Session, user: UserAccount, now: datetime, source: str,
                what: str) -> None:
        """A failed login that counts towards the lockout, audited."""
        user.failed_logins += 1
        detail = f"{what} ({user.failed_logins} in a row)"
        if user.failed_logins >= self.policy.lockout_attempts:
            user.locked_until = now + timedelta(minutes=self.policy.lockout_minutes)
            detail += f"; locked for {self.policy.lockout_minutes} min"
        append(s, AuditRecord("login", f"user:{user.username}", user.role, source,
                              outcome="failure", detail=detail))

    def _second_factor(self, s: Session, user: UserAccount, code: str, now: datetime,
                       source: str) -> str:
        """Why the one-time code does not let `user` in ("" when it does); a wrong or
        replayed code counts as a failed login, a missing one does not (the viewer asks
        for it after the password)."""
        code = code.strip()
        if not code:
            append(s, AuditRecord("login", f"user:{user.username}", user.role, source,
                                  outcome="failure", detail="no one-time code"))
            return (f"a one-time code from the authenticator app is required for account "
                    f"{user.username}: send 'totp' (6 digits) with the password")
        step = totp.matching_step(user.totp_secret, code)
        if step is None:
            self._failed(s, user, now, source, "wrong one-time code")
            return f"the one-time code {code[:8]!r} is wrong or expired"
        if step <= user.totp_last_step:
            self._failed(s, user, now, source, "one-time code used again")
            return "this one-time code was already used; wait for the next one"
        user.totp_last_step = step
        return ""

    def _login(self, username: str, password: str, source: str, *, open_session: bool,
               code: str = "") -> LoginResult | Principal:
        now = utc_now()
        refusal = ""
        with self._write() as s, s.begin():
            user = s.scalars(select(UserAccount).where(
                UserAccount.username == username.strip().lower()).with_for_update()
            ).one_or_none()
            if user is None:
                append(s, AuditRecord("login", f"user:{username[:64]}", source=source,
                                      outcome="failure", detail="no such user"))
                refusal = "wrong user name or password"
            else:
                problem = self._check_usable(s, user, now)
                if not problem and user.identity_provider:
                    # Single sign-on accounts (access/single_sign_on.py) have no password.
                    problem = (f"account {user.username} signs in with its OpenID "
                               f"Provider ({user.identity_provider}), not with a password")
                if problem:
                    append(s, AuditRecord("login", f"user:{user.username}", user.role, source,
                                          outcome="failure", detail=problem))
                    refusal = problem
                elif not open_session and (user.totp_enabled or self._must_enroll(user)):
                    # Checked before the password: Basic is no oracle for it either.
                    refusal = (f"HTTP Basic cannot carry the second factor account "
                               f"{user.username} needs: use an API token (Bearer) or log "
                               "in (POST /auth/login with 'totp')")
                    append(s, AuditRecord("login", f"user:{user.username}", user.role, source,
                                          outcome="failure", detail="HTTP Basic refused: "
                                          "the account needs a second factor"))
                elif not verify_password(user.password_hash, password):
                    self._failed(s, user, now, source, "wrong password")
                    refusal = "wrong user name or password"
                elif user.totp_enabled and (refusal := self._second_factor(
                        s, user, code, now, source)):
                    pass
                else:
                    user.failed_logins, user.locked_until, user.last_login_at = 0, None, now
                    must_change = user.must_change_password or (
                        user.role == Role.ADMIN.value and now - user.password_changed_at
                        > timedelta(days=self.policy.admin_password_max_age_days))
                    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
                    expires = now + timedelta(hours=self.policy.session_max_hours)
                    if open_session:
                        s.add(ApiToken(token_hash=token_digest(token), kind="session",
                                       name=user.username, role=user.role, user_pk=user.id,
                                       expires_at=expires, last_used_at=now))
                    detail = "session" if open_session else "HTTP Basic"
                    if user.totp_enabled:
                        detail += " with one-time code"
                    must_enroll = self._must_enroll(user)
                    append(s, AuditRecord("login", f"user:{user.username}", user.role, source,
                                          detail=detail + (", must change password"
                                                           if must_change else "")
                                          + (", must enrol a second factor"
                                             if must_enroll else "")))
                    principal = Principal("user", user.username, Role(user.role), source,
                                          must_change_password=must_change,
                                          must_enroll_totp=must_enroll,
                                          access_tags=limit_of(user.access_tags))
        if refusal:
            raise Unauthenticated(refusal)
        return LoginResult(token, principal, expires) if open_session else principal

    def logout(self, token: str, *, source: str = "") -> None:
        digest = token_digest(token)
        with self._write() as s, s.begin():
            row = s.scalars(select(ApiToken).where(ApiToken.token_hash == digest)
                            ).one_or_none()
            if row is not None and row.revoked_at is None:
                row.revoked_at = utc_now()
                append(s, AuditRecord("logout", f"{'user' if row.user_pk else 'token'}:"
                                      f"{row.name}", row.role, source))
        with self._cache_lock:
            self._cache.pop(digest, None)

    def _end_sessions(self, s: Session, user: UserAccount) -> None:
        for row in s.scalars(select(ApiToken).where(ApiToken.user_pk == user.id,
                                                    ApiToken.revoked_at.is_(None))):
            row.revoked_at = utc_now()

    # ----------------------------------------------------------------- second factor
    def enroll_totp(self, username: str, *, actor: str = "system:cli") -> tuple[str, str]:
        """The operator enrols `username` (CLI): a new secret, active at once, replacing
        any earlier one; returns (base32 secret, otpauth URI), shown only now."""
        secret = totp.new_secret()
        with self._write() as s, s.begin():
            user = self._get_user(s, username, lock=True)
            user.totp_secret, user.totp_enabled, user.totp_last_step = secret, True, 0
            append(s, AuditRecord("totp-enable", actor, detail=f"user {user.username}"))
            name = user.username
        self._forget_cache()
        return secret, totp.provisioning_uri(secret, name)

    def disable_totp(self, username: str, *, actor: str = "system:cli") -> UserInfo:
        with self._write() as s, s.begin():
            user = self._get_user(s, username, lock=True)
            if not user.totp_enabled and not user.totp_secret:
                raise Conflict(f"user {user.username} has no second factor")
            user.totp_secret, user.totp_enabled, user.totp_last_step = "", False, 0
            append(s, AuditRecord("totp-disable", actor, detail=f"user {user.username}"))
            info = _user_info(user)
        self._forget_cache()
        return info

    def start_totp(self, username: str, *, source: str = "") -> tuple[str, str]:
        """A logged-in user starts enrolling: a pending secret (inactive until
        `confirm_totp`); returns (secret, URI). Refused when one is active already: only
        an operator replaces it (`minipacs user totp NAME`)."""
        secret = totp.new_secret()
        with self._write() as s, s.begin():
            user = self._get_user(s, username, lock=True)
            if user.totp_enabled:
                raise Conflict(f"user {user.username} has a second factor already; an "
                               "operator replaces it with `minipacs user totp NAME`")
            user.totp_secret, user.totp_last_step = secret, 0
            append(s, AuditRecord("totp-enroll", f"user:{user.username}", user.role, source,
                                  detail="secret issued, awaiting confirmation"))
            name = user.username
        return secret, totp.provisioning_uri(secret, name)

    def confirm_totp(self, username: str, code: str, *, source: str = "") -> None:
        """The first code from the app proves it holds the pending secret: activate it."""
        with self._write() as s, s.begin():
            user = self._get_user(s, username, lock=True)
            if user.totp_enabled:
                raise Conflict(f"user {user.username}'s second factor is active already")
            if not user.totp_secret:
                raise InvalidRequest("no enrolment is pending: POST /auth/totp/enroll first")
            step = totp.matching_step(user.totp_secret, code.strip())
            if step is None:
                raise InvalidRequest(f"the one-time code {code[:8]!r} does not match the "
                                     "secret being enrolled (6 digits from the app, "
                                     "with its clock right)")
            user.totp_enabled, user.totp_last_step = True, step
            append(s, AuditRecord("totp-enable", f"user:{user.username}", user.role, source,
                                  detail=f"user {user.username}, confirmed with a code"))
        self._forget_cache()

    def disable_own_totp(self, username: str, code: str, *, source: str = "") -> None:
        """The user removes their own second factor, proving it with a current code (never
        one used before); refused for administrators when the policy requires one."""
        with self._write() as s, s.begin():
            user = self._get_user(s, username, lock=True)
            if not user.totp_enabled:
                raise Conflict(f"user {user.username} has no active second factor")
            if user.role == Role.ADMIN.value and self.policy.admin_totp == "required":
                raise Conflict("administrators must keep a second factor here "
                               "(MINIPACS_AUTH_ADMIN_TOTP=required)")
            step = totp.matching_step(user.totp_secret, code.strip())
            if step is None or step <= user.totp_last_step:
                append(s, AuditRecord("totp-disable", f"user:{user.username}", user.role,
                                      source, outcome="failure", detail="wrong or used code"))
                raise InvalidRequest(f"the one-time code {code[:8]!r} is wrong, expired or "
                                     "used already")
            user.totp_secret, user.totp_enabled, user.totp_last_step = "", False, 0
            append(s, AuditRecord("totp-disable", f"user:{user.username}", user.role, source,
                                  detail=f"user {user.username}, confirmed with a code"))
        self._forget_cache()

    # ----------------------------------------------------------------- tokens
    def create_token(self, name: str, role: Role | str, *, expires_days: int | None = None,
                     actor: str = "system:cli", access_tags: Iterable[str] = ()
                     ) -> tuple[str, TokenInfo]:
        """An API token for a system (EMR, script): returned once, kept as a digest."""
        label = check_username(name)
        role = account_role(role)
        if expires_days is not None and expires_days < 1:
            raise InvalidRequest("--expires-days must be at least 1")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = utc_now() + timedelta(days=expires_days) if expires_days else None
        tags = tags_text(parse_tags(access_tags))
        row = ApiToken(token_hash=token_digest(token), kind="api", name=label,
                       role=role.value, expires_at=expires, access_tags=tags)
        with self._write() as s, s.begin():
            s.add(row)
            s.flush()
            append(s, AuditRecord("token-create", actor,
                                  detail=f"token {row.id} {label} ({role.value})" +
                                  (f", expires {expires:%Y-%m-%d}" if expires else "")
                                  + (f", access tags {tags}" if tags else "")))
        return token, _token_info(row)

    def tokens(self, *, include_sessions: bool = False) -> list[TokenInfo]:
        stmt = select(ApiToken).order_by(ApiToken.id)
        if not include_sessions:
            stmt = stmt.where(ApiToken.kind == "api")
        with self._read() as s:
            return [_token_info(t) for t in s.scalars(stmt)]

    def revoke_token(self, token_id: int, *, actor: str = "system:cli") -> TokenInfo:
        with self._write() as s, s.begin():
            row = s.get(ApiToken, token_id)
            if row is None:
                raise NotFound(f"no token {token_id}")
            if row.revoked_at is None:
                row.revoked_at = utc_now()
                append(s, AuditRecord("token-revoke", actor,
                                      detail=f"token {row.id} {row.name} ({row.role})"))
            info = _token_info(row)
        self._forget_cache()
        return info

    # ----------------------------------------------------------------- per request
    def authenticate_bearer(self, token: str, *, source: str = "") -> Principal:
        """The principal a bearer token (API token or login session) stands for.

        Raises `Unauthenticated` for unknown, expired, revoked or idle-timed-out tokens."""
        digest = token_digest(token)
        cached = self._cached(digest)
        if cached is not None:
            return cached
        now = utc_now()
        with self._write() as s, s.begin():
            row = s.scalars(select(ApiToken).where(ApiToken.token_hash == digest)
                            ).one_or_none()
            if row is None or row.revoked_at is not None:
                raise Unauthenticated("the token is unknown or revoked; log in again")
            if row.expires_at is not None and row.expires_at <= now:
                raise Unauthenticated("the token has expired; log in again")
            must_change = must_enroll = False
            limit = limit_of(row.access_tags)
            if row.kind == "session":
                user = s.get(UserAccount, row.user_pk) if row.user_pk else None
                if user is None or user.disabled:
                    raise Unauthenticated("the account of this session is disabled")
                idle = (self.policy.admin_session_idle_minutes if row.role == Role.ADMIN.value
                        else self.policy.session_idle_minutes)
                if row.last_used_at is not None and now - row.last_used_at > timedelta(
                        minutes=idle):
                    row.revoked_at = now
                    append(s, AuditRecord("logout", f"user:{row.name}", row.role, source,
                                          detail=f"session locked after {idle} idle minutes"))
                    raise Unauthenticated(f"the session was locked after {idle} idle "
                                          "minutes; log in again")
                must_change = not user.identity_provider and (
                    user.must_change_password or (
                        user.role == Role.ADMIN.value and now - user.password_changed_at
                        > timedelta(days=self.policy.admin_password_max_age_days)))
                must_enroll = self._must_enroll(user)
                limit = limit_of(user.access_tags)  # a session has its user's tags
            if row.last_used_at is None or (now - row.last_used_at).total_seconds() > \
                    _TOUCH_SECONDS:
                row.last_used_at = now
            if row.kind == "share":
                link = s.get(ShareLink, row.share_pk) if row.share_pk else None
                if link is None or link.revoked_at is not None or link.expires_at <= now:
                    raise Unauthenticated("the share link of this session has expired or "
                                          "was revoked")
                principal = Principal(
                    "share", row.name, Role.CLINICIAN, source,
                    actions=frozenset({Action.QUERY, Action.VIEW}),
                    study_uids=frozenset(u for u in row.scope_study_uids.split("\\") if u),
                    session_id=row.id, access_tags=limit)
            else:
                kind: PrincipalKind = "user" if row.kind == "session" else "token"
                principal = Principal(kind, row.name, Role(row.role), source,
                                      must_change_password=must_change,
                                      must_enroll_totp=must_enroll, session_id=row.id,
                                      access_tags=limit)
        self._remember(digest, principal)
        return principal

    def authenticate_basic(self, username: str, password: str, *, source: str = ""
                           ) -> Principal:
        """HTTP Basic (DICOMweb tools, Weasis, OHIF): the password checked as at login,
        with lockout and audit; the verified pair cached as a keyed digest."""
        digest = hmac.new(self._cache_key, f"{username}\0{password}".encode(),
                          hashlib.sha256).hexdigest()
        cached = self._cached(digest)
        if cached is not None:
            return cached
        # Basic sends the password with every request: no session is opened.
        principal = self._login(username, password, source, open_session=False)
        assert isinstance(principal, Principal)
        self._remember(digest, principal)
        return principal

    def cached_bearer(self, token: str) -> Principal | None:
        """The principal of a bearer token verified within `_CACHE_SECONDS`, else None
        (no database access: `authenticate_bearer` does the full check)."""
        return self._cached(token_digest(token))

    def _cached(self, digest: str) -> Principal | None:
        with self._cache_lock:
            hit = self._cache.get(digest)
        if hit is None or time.monotonic() - hit[1] > _CACHE_SECONDS:
            return None
        return hit[0]

    def _remember(self, digest: str, principal: Principal) -> None:
        with self._cache_lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (principal, time.monotonic())

    def _forget_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()
