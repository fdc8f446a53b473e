"""Single sign-on with OpenID Connect, against a real OpenID Provider (panva's
oidc-provider, tests/oidc_support.py): API callers with the provider's JWT access tokens,
and the viewer's "Sign in with ..." through the authorization code flow in Chromium.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey
from playwright.sync_api import Browser, Page

from backends import Backends
from conftest import ServerProcess
from minipacs.access.oidc import claim_at, parse_role_map
from minipacs.access.roles import Role
from oidc_support import AUDIENCE, KEY_ID, RunningProvider, start_provider
from viewer_support import H, wait_for_first_image

CLIENT_ID, CLIENT_SECRET = "minipacs", "minipacs-client-secret-for-tests"
PERSON, PERSON_PASSWORD = "lan.nguyen", "Idp-Password-2026"
ROLE_MAP = "pacs-admin=admin,pacs-radiologist=radiologist,pacs-auditor=auditor"

CLIENTS: list[dict[str, Any]] = [
    # The viewer's client. A native client's loopback redirect URI matches any port
    # (RFC 8252 §7.3): the server's port is known only once it runs.
    {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "application_type": "native",
     "redirect_uris": ["http://127.0.0.1/auth/oidc/callback"],
     "grant_types": ["authorization_code"], "response_types": ["code"],
     "token_endpoint_auth_method": "client_secret_basic"},
    # Systems calling the API with their own tokens (client credentials), with roles.
    {"client_id": "emr-reader", "client_secret": "emr-reader-secret",
     "grant_types": ["client_credentials"], "response_types": [], "redirect_uris": [],
     "roles": ["pacs-radiologist"]},
    {"client_id": "audit-bot", "client_secret": "audit-bot-secret",
     "grant_types": ["client_credentials"], "response_types": [], "redirect_uris": [],
     "roles": ["pacs-auditor"]},
    {"client_id": "visitor-bot", "client_secret": "visitor-bot-secret",
     "grant_types": ["client_credentials"], "response_types": [], "redirect_uris": [],
     "roles": ["visitor"]},
]
ACCOUNTS = {PERSON: {"password": PERSON_PASSWORD, "name": "Nguyễn Thị Lan",
                     "roles": ["staff", "pacs-radiologist"]}}


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProvider]:
    running = start_provider(tmp_path_factory.mktemp("oidc-provider"), CLIENTS, ACCOUNTS)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backends: Backends,
           provider: RunningProvider) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("oidc-server"), [
        "--auth", "on", *backends.server_args(),
        "--oidc-issuer", provider.issuer, "--oidc-client-id", CLIENT_ID,
        "--oidc-client-secret", CLIENT_SECRET, "--oidc-scopes", "openid profile roles",
        "--oidc-audience", AUDIENCE, "--oidc-role-map", ROLE_MAP,
        "--oidc-provider-name", "Test IdP"]).start()
    yield proc
    proc.stop()


def client_token(provider: RunningProvider, client_id: str) -> str:
    """An access token from the provider's token endpoint (client credentials grant)."""
    response = httpx.post(f"{provider.issuer}/token", auth=(client_id, f"{client_id}-secret"),
                          data={"grant_type": "client_credentials", "scope": "pacs"},
                          timeout=30)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def qido(server: ServerProcess, token: str, path: str = "/dicom-web/studies"
         ) -> httpx.Response:
    return httpx.get(server.http_url + path, timeout=30,
                     headers={"Authorization": f"Bearer {token}",
                              "Accept": "application/dicom+json"})


def logins(server: ServerProcess, actor: str) -> list[dict[str, Any]]:
    response = server.http.get("/admin/audit", params={"action": "login", "actor": actor})
    assert response.status_code == 200, response.text
    return list(response.json())


# ---- settings -----------------------------------------------------------------------


def test_role_map_is_ordered_and_roles_claim_may_be_a_dotted_path() -> None:
    pairs = parse_role_map("pacs-admin=admin, pacs-radiologist = radiologist,")
    assert pairs == [("pacs-admin", Role.ADMIN), ("pacs-radiologist", Role.RADIOLOGIST)]
    keycloak = {"realm_access": {"roles": ["offline_access", "pacs-radiologist"]}}
    assert claim_at(keycloak, "realm_access.roles") == ["offline_access", "pacs-radiologist"]
    assert claim_at(keycloak, "resource_access.minipacs.roles") is None
    with pytest.raises(ValueError, match="'pacs-admin' is not NAME=ROLE"):
        parse_role_map("pacs-admin")
    with pytest.raises(ValueError, match="unknown role 'superuser'"):
        parse_role_map("pacs-admin=superuser")


# ---- API callers: the provider's JWT access tokens ------------------------------------


def test_access_token_of_a_radiologist_client_queries_and_is_audited(
    server: ServerProcess, provider: RunningProvider
) -> None:
    token = client_token(provider, "emr-reader")
    answer = qido(server, token)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()) > 0  # the sample studies
    assert qido(server, token).status_code == 200  # cached: audited once
    events = logins(server, "token:emr-reader")
    assert [(e["outcome"], e["role"]) for e in events] == [("success", "radiologist")]
    assert events[0]["detail"] == f"OpenID Connect access token ({provider.issuer})"
    # The query itself is in the trail under the same actor.
    queries = server.http.get("/admin/audit", params={"actor": "token:emr-reader",
                                                      "action": "query"}).json()
    assert queries, "the QIDO of the provider's token is not audited"
    # A radiologist may not manage accounts.
    refused = httpx.get(server.http_url + "/admin/users", timeout=30,
                        headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403
    assert "token:emr-reader (role radiologist) may not manage-users" in refused.text


def test_access_token_whose_role_lacks_query_is_refused_with_403(
    server: ServerProcess, provider: RunningProvider
) -> None:
    token = client_token(provider, "audit-bot")
    refused = qido(server, token)
    assert refused.status_code == 403, refused.text
    assert "(role auditor) may not query" in refused.json()["error"]
    allowed = httpx.get(server.http_url + "/admin/audit", timeout=30,
                        headers={"Authorization": f"Bearer {token}"})
    assert allowed.status_code == 200


def test_access_token_with_no_mapped_role_is_refused_with_401(
    server: ServerProcess, provider: RunningProvider
) -> None:
    refused = qido(server, client_token(provider, "visitor-bot"))
    assert refused.status_code == 401
    assert refused.json()["error"] == (
        "visitor-bot has no minipacs role: the token's roles (visitor) matches no name in "
        "OIDC_ROLE_MAP")
    assert [e["outcome"] for e in logins(server, "user:(openid-connect)")
            if "visitor-bot" in e["detail"]] == ["failure"]


@pytest.mark.parametrize(("case", "expected"), [
    ("expired", "the access token is refused: it expired at"),
    ("forged", "the access token is not a JWT signed by the OpenID Provider"),
    ("other-audience", "the access token is refused: its audience 'account' is not "
                       "'urn:minipacs'"),
    ("other-issuer", "the access token is refused: its issuer 'http://127.0.0.1:1' is not"),
])
def test_expired_forged_or_misdirected_token_is_refused_with_401(
    server: ServerProcess, provider: RunningProvider, case: str, expected: str
) -> None:
    now = int(time.time())
    if case == "expired":
        # Signed with the provider's own key, an hour past its expiry.
        token = provider.sign(provider.access_claims(iat=now - 4000, exp=now - 3600))
    elif case == "forged":
        # Another key, claiming the provider's key id.
        token = provider.sign(provider.access_claims(),
                              key=RSAKey.generate_key(2048, private=True), kid=KEY_ID)
    elif case == "other-audience":
        token = provider.sign(provider.access_claims(aud="account"))
    else:
        token = provider.sign(provider.access_claims(iss="http://127.0.0.1:1"))
    refused = qido(server, token)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"].startswith(expected), refused.json()["error"]
    assert refused.headers["www-authenticate"].startswith("Bearer")
    failures = [e for e in logins(server, "user:(openid-connect)")
                if e["detail"].startswith("OpenID Connect: " + expected)]
    assert failures and all(e["outcome"] == "failure" for e in failures)


def test_callback_without_the_browsers_state_is_refused_and_audited(
    server: ServerProcess,
) -> None:
    answer = httpx.get(server.http_url + "/auth/oidc/callback",
                       params={"code": "stolen-code", "state": "guessed"}, timeout=30)
    assert answer.status_code == 401
    assert "started no sign-in here" in answer.json()["error"]
    assert any("started no sign-in here" in e["detail"]
               for e in logins(server, "user:(openid-connect)"))


def test_status_says_single_sign_on_is_on_and_its_name(server: ServerProcess) -> None:
    assert httpx.get(server.http_url + "/auth/oidc", timeout=30).json() == {
        "enabled": True, "name": "Test IdP", "login_url": "/auth/oidc/login"}


# ---- the viewer: authorization code flow in Chromium ------------------------------------


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.set_default_timeout(20_000)
    yield tab
    context.close()
    assert not errors, f"JavaScript errors in the viewer: {errors}"


def test_viewer_signs_in_with_the_provider_and_the_account_has_no_password(
    server: ServerProcess, provider: RunningProvider, page: Page
) -> None:
    study = server.http.get("/dicom-web/studies", params={"ModalitiesInStudy": "CT"},
                            headers={"Accept": "application/dicom+json"}).json()[0]
    accession = study["00080050"]["Value"][0]
    start = f"{server.http_url}/viewer/?requestType=STUDY&accessionNumber={accession}"
    page.goto(start)
    page.wait_for_selector("[data-testid=login-sso]:not([hidden])")
    assert page.inner_text("[data-testid=login-sso]") == "Đăng nhập bằng Test IdP"
    page.click("[data-testid=login-sso]")
    # The provider's own sign-in page.
    page.wait_for_selector("#idp-user")
    assert page.url.startswith(provider.issuer + "/interaction/")
    page.fill("#idp-user", PERSON)
    page.fill("#idp-password", PERSON_PASSWORD)
    page.click("#idp-submit")
    # Back at the same viewer address (the EMR link's study), signed in as the
    # provider's user.
    page.wait_for_function(f"() => {H} && {H}.user && {H}.user.name === '{PERSON}'")
    wait_for_first_image(page)
    assert page.evaluate(f"{H}.studyInstanceUID") == study["0020000D"]["Value"][0]
    assert page.url == start
    assert page.evaluate(f"{H}.user.role") == "radiologist"
    page.wait_for_function("() => document.querySelector('[data-testid=user-name]')"
                           f".textContent === '{PERSON}'")
    status = page.evaluate("fetch('../dicom-web/studies', {credentials: 'same-origin'})"
                           ".then(r => r.status)")
    assert status == 200
    ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "viewer"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "oidc-signed-in.png"))

    events = logins(server, f"user:{PERSON}")
    assert [(e["outcome"], e["role"], e["detail"]) for e in events] == [
        ("success", "radiologist", f"OpenID Connect session ({provider.issuer})")]
    listed = {u["username"]: u for u in server.http.get("/admin/users").json()}
    assert listed[PERSON]["role"] == "radiologist"
    # The local record of a provider's user takes no password.
    refused = httpx.post(server.http_url + "/auth/login", timeout=30,
                         json={"username": PERSON, "password": PERSON_PASSWORD})
    assert refused.status_code == 401
    assert refused.json()["error"] == (f"account {PERSON} signs in with its OpenID Provider "
                                       f"({provider.issuer}), not with a password")
