"""Single sign-on with an OpenID Provider (Keycloak, ...): its discovery document and keys,
the authorization code flow with PKCE, and the validation of the tokens it issues.

Two ways in, both validated here and mapped to a user name and a minipacs role:
- the viewer's "Sign in with ..." button: the authorization code flow (OpenID Connect
  Core 1.0 §3.1) with `state`, `nonce` and PKCE S256 (RFC 7636); the ID token's
  signature, issuer, audience, expiry and nonce are checked (Core §3.1.3.7);
- an API caller's `Authorization: Bearer <access token>`: a JWT access token (RFC 9068,
  or Keycloak's own), checked against the provider's keys for issuer, audience and expiry.

JOSE (signatures, keys, claims) is joserfc's; nothing here verifies a signature itself.
Which role a token carries comes from one claim (`oidc_roles_claim`) through the role map
(`oidc_role_map`); a token with no mapped role is refused, never given a default role.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from minipacs.access.accounts import check_username
from minipacs.access.roles import Role, parse_role
from minipacs.config import Settings
from minipacs.errors import IdentityProviderError, InvalidRequest, Unauthenticated

# Asymmetric algorithms only: a token signed with HS256 and the (public) client secret,
# or with "none", is refused (RFC 8725 §3.1, §3.2).
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
              "ES256", "ES384", "ES512", "EdDSA")
_KEYS_REFRESH_SECONDS = 60.0  # an unknown 'kid' refetches the keys at most this often
_HTTP_TIMEOUT = 10.0


def parse_role_map(text: str) -> list[tuple[str, Role]]:
    """'pacs-admin=admin,pacs-radiologist=radiologist' → ordered pairs; `ValueError`
    naming the bad pair otherwise."""
    pairs: list[tuple[str, Role]] = []
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, role = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"OIDC_ROLE_MAP item {item.strip()!r} is not NAME=ROLE, e.g. "
                             "pacs-radiologist=radiologist")
        pairs.append((name.strip(), parse_role(role)))
    return pairs


@dataclass(frozen=True)
class SignInStart:
    """Where to send the browser, and what the callback must find again (kept in a
    short-lived cookie of the browser that started, never on the server)."""

    url: str
    state: str
    nonce: str
    code_verifier: str


@dataclass(frozen=True)
class Identity:
    """Who the provider says the caller is, mapped to minipacs."""

    username: str
    role: Role
    subject: str
    issuer: str
    is_user: bool  # False: a client acting for itself (client_credentials), no person
    expires_at: float  # the token's 'exp' (Unix time)


def code_challenge(verifier: str) -> str:
    """PKCE S256 (RFC 7636 §4.2): BASE64URL(SHA256(verifier)), unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """The claim at a dotted path ('realm_access.roles'); None when absent."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


class OpenIdProvider:
    """One configured provider; thread-safe, one per node. Discovery and keys are fetched
    at first use and cached (a cache: every node fetches its own, nothing is shared)."""

    def __init__(self, settings: Settings) -> None:
        if not (settings.oidc_issuer and settings.oidc_client_id):
            raise ValueError("OIDC_ISSUER and OIDC_CLIENT_ID are both needed for single "
                             "sign-on")
        if "openid" not in settings.oidc_scopes.split():
            raise ValueError(f"OIDC_SCOPES {settings.oidc_scopes!r} must include 'openid'")
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.client_id = settings.oidc_client_id
        self.client_secret = settings.oidc_client_secret
        self.scopes = settings.oidc_scopes
        self.audience = settings.oidc_audience or settings.oidc_client_id
        self.username_claim = settings.oidc_username_claim
        self.roles_claim = settings.oidc_roles_claim
        self.role_map = parse_role_map(settings.oidc_role_map)
        self.name = settings.oidc_provider_name
        self.leeway = settings.oidc_clock_skew_seconds
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._keys_fetched = 0.0

    # ------------------------------------------------------------- provider documents
    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = httpx.get(url, timeout=_HTTP_TIMEOUT, headers={"Accept":
                                                                       "application/json"})
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise IdentityProviderError(f"the OpenID Provider's {what} at {url} could not "
                                        f"be read: {exc}") from None
        if not isinstance(body, dict):
            raise IdentityProviderError(f"the OpenID Provider's {what} at {url} is no "
                                        "JSON object")
        return body

    def metadata(self) -> dict[str, Any]:
        """The discovery document (OpenID Connect Discovery 1.0 §4), checked to be this
        issuer's (§4.3)."""
        with self._lock:
            if self._metadata is not None:
                return self._metadata
        url = self.issuer + "/.well-known/openid-configuration"
        document = self._get_json(url, "discovery document")
        if str(document.get("issuer", "")).rstrip("/") != self.issuer:
            raise IdentityProviderError(f"the discovery document at {url} names issuer "
                                        f"{document.get('issuer')!r}, not {self.issuer!r} "
                                        "(OIDC_ISSUER must be exactly the provider's)")
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(document.get(name), str):
                raise IdentityProviderError(f"the discovery document at {url} has no "
                                            f"{name}")
        with self._lock:
            self._metadata = document
        return document

    def _key_set(self, refresh: bool = False) -> KeySet:
        with self._lock:
            keys, fetched = self._keys, self._keys_fetched
        if keys is not None and not (refresh and time.monotonic() - fetched
                                     > _KEYS_REFRESH_SECONDS):
            return keys
        uri = self.metadata()["jwks_uri"]
        try:
            keys = KeySet.import_key_set(self._get_json(uri, "key set"))  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError) as exc:
            raise IdentityProviderError(f"the key set at {uri} is not a JWK Set: "
                                        f"{exc}") from None
        with self._lock:
            self._keys, self._keys_fetched = keys, time.monotonic()
        return keys

    # ------------------------------------------------------------- code flow
    def start_sign_in(self, redirect_uri: str) -> SignInStart:
        """The authorization request (Core §3.1.2.1) with state, nonce and PKCE."""
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)  # 64 characters: RFC 7636 §4.1 wants 43-128
        query = urlencode({
            "response_type": "code", "client_id": self.client_id,
            "redirect_uri": redirect_uri, "scope": self.scopes, "state": state,
            "nonce": nonce, "code_challenge": code_challenge(verifier),
            "code_challenge_method": "S256",
        })
        endpoint = self.metadata()["authorization_endpoint"]
        separator = "&" if "?" in endpoint else "?"
        return SignInStart(f"{endpoint}{separator}{query}", state, nonce, verifier)

    def finish_sign_in(self, code: str, code_verifier: str, nonce: str,
                       redirect_uri: str) -> Identity:
        """Trade the authorization code for tokens (Core §3.1.3) and validate the ID token;
        `Unauthenticated` naming what was wrong."""
        data = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": redirect_uri, "code_verifier": code_verifier}
        auth: tuple[str, str] | None = None
        if self.client_secret:
            auth = (self.client_id, self.client_secret)  # client_secret_basic
        else:
            data["client_id"] = self.client_id
        endpoint = self.metadata()["token_endpoint"]
        try:
            response = httpx.post(endpoint, data=data, auth=auth, timeout=_HTTP_TIMEOUT,
                                  headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise IdentityProviderError(f"the token endpoint {endpoint} did not answer: "
                                        f"{exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error_description") or body.get("error") if isinstance(
                body, dict) else None
            raise Unauthenticated(f"the OpenID Provider refused the authorization code "
                                  f"(HTTP {response.status_code}: {error or 'no reason'})")
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise Unauthenticated("the OpenID Provider's token response has no id_token "
                                  "(is 'openid' among OIDC_SCOPES?)")
        claims = self._validated(id_token, "ID token", audience=self.client_id)
        if claims.get("nonce") != nonce:
            raise Unauthenticated("the ID token's nonce is not the one this sign-in sent "
                                  "(a replayed or mixed-up response)")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.client_id:
            # Core §3.1.3.7 (4)/(5): several audiences need azp naming us.
            raise Unauthenticated(f"the ID token is for several audiences and its azp "
                                  f"{claims.get('azp')!r} is not {self.client_id!r}")
        return self.identity(claims)

    # ------------------------------------------------------------- bearer tokens
    def verify_access_token(self, token: str) -> Identity:
        """An API caller's JWT access token, for our audience; `Unauthenticated` otherwise."""
        return self.identity(self._validated(token, "access token", audience=self.audience))

    def _validated(self, token: str, what: str, *, audience: str) -> dict[str, Any]:
        """Signature by one of the provider's keys, then iss, aud, exp (iat, nbf)."""
        try:
            decoded = self._decode(token)
        except JoseError as exc:
            raise Unauthenticated(f"the {what} is not a JWT signed by the OpenID Provider "
                                  f"{self.issuer}: {exc.description or exc.error}") from None
        registry = jwt.JWTClaimsRegistry(
            leeway=self.leeway,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True}, sub={"essential": True},
        )
        claims: dict[str, Any] = dict(decoded.claims)
        try:
            registry.validate(claims)
        except JoseError as exc:
            detail = exc.description or exc.error
            if exc.error == "expired_token":
                expired = time.strftime("%H:%M:%S", time.gmtime(claims["exp"]))
                detail = f"it expired at {expired} UTC"
            elif exc.error == "invalid_claim" and "aud" in str(exc.description):
                detail = f"its audience {claims.get('aud')!r} is not {audience!r}"
            elif exc.error == "invalid_claim" and "iss" in str(exc.description):
                detail = f"its issuer {claims.get('iss')!r} is not {self.issuer!r}"
            raise Unauthenticated(f"the {what} is refused: {detail}") from None
        return claims

    def _decode(self, token: str) -> jwt.Token:
        try:
            return jwt.decode(token, self._key_set(), algorithms=list(ALGORITHMS))
        except JoseError as exc:
            if exc.error not in ("bad_signature", "invalid_key_id", "missing_key"):
                raise
        # The provider may have rotated its keys: look again (rate-limited), once.
        return jwt.decode(token, self._key_set(refresh=True), algorithms=list(ALGORITHMS))

    # ------------------------------------------------------------- mapping
    def identity(self, claims: dict[str, Any]) -> Identity:
        """User name and role from validated claims; `Unauthenticated` when no role maps."""
        raw_name = claims.get(self.username_claim)
        is_user = isinstance(raw_name, str) and bool(raw_name)
        name_text = raw_name if is_user else str(claims.get("client_id") or claims["sub"])
        try:
            username = check_username(str(name_text))
        except InvalidRequest as exc:
            raise Unauthenticated(f"the token's {self.username_claim} cannot be a minipacs "
                                  f"user name: {exc}") from None
        value = claim_at(claims, self.roles_claim)
        carried = {value} if isinstance(value, str) else \
            {str(v) for v in value} if isinstance(value, list) else set()
        for name, role in self.role_map:
            if name in carried:
                return Identity(username, role, str(claims["sub"]), self.issuer, is_user,
                                float(claims["exp"]))
        shown = ", ".join(sorted(carried)[:10]) or "none"
        raise Unauthenticated(f"{username} has no minipacs role: the token's "
                              f"{self.roles_claim} ({shown}) matches no name in "
                              "OIDC_ROLE_MAP")
