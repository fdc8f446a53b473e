"""Accounts, passwords, tokens and sessions: the service on a real index, then the CLI
and the HTTP door of a real server with auth on (the default)."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from conftest import ServerProcess
from minipacs.access.accounts import AccountPolicy, Accounts
from minipacs.access.roles import Role
from minipacs.archive import Archive
from minipacs.audit.chain import utc_now
from minipacs.errors import Conflict, InvalidRequest, Unauthenticated
from minipacs.index.models import ApiToken

GOOD = "Phim-Xquang-2024"


@pytest.fixture
def accounts(archive: Archive) -> Accounts:
    return Accounts(archive.engine, archive.write_engine, AccountPolicy())


def test_new_user_without_password_gets_one_time_password_that_must_be_changed(
    accounts: Accounts,
) -> None:
    user, one_time = accounts.add_user("lan", "radiologist")
    assert one_time and user.must_change_password
    result = accounts.login("lan", one_time)
    assert result.principal.must_change_password and result.principal.role is Role.RADIOLOGIST
    with pytest.raises(InvalidRequest, match="at least 10"):
        accounts.change_password("lan", one_time, "Ab1-short")
    with pytest.raises(InvalidRequest, match="breached"):
        accounts.change_password("lan", one_time, "benhvien123")
    with pytest.raises(Unauthenticated, match="current password is wrong"):
        accounts.change_password("lan", "not-it", GOOD)
    accounts.change_password("lan", one_time, GOOD)
    assert not accounts.login("lan", GOOD).principal.must_change_password
    with pytest.raises(InvalidRequest, match="differ from the last"):
        accounts.change_password("lan", GOOD, one_time)


def test_five_wrong_passwords_lock_the_account_even_for_the_right_one(
    accounts: Accounts,
) -> None:
    accounts.add_user("minh", "clinician", password=GOOD)
    for _ in range(5):
        with pytest.raises(Unauthenticated, match="wrong user name or password"):
            accounts.login("minh", "Wrong-password-1")
    with pytest.raises(Unauthenticated, match="locked until"):
        accounts.login("minh", GOOD)
    assert accounts.user("minh").locked_until is not None
    accounts.set_disabled("minh", False)  # an admin unlocks it
    assert accounts.login("minh", GOOD).principal.name == "minh"


def test_unknown_user_and_wrong_password_get_the_same_answer(accounts: Accounts) -> None:
    accounts.add_user("hoa", "clinician", password=GOOD)
    with pytest.raises(Unauthenticated) as unknown:
        accounts.login("nobody", GOOD)
    with pytest.raises(Unauthenticated) as wrong:
        accounts.login("hoa", "Wrong-password-1")
    assert str(unknown.value) == str(wrong.value)


def test_user_names_and_roles_are_checked(accounts: Accounts) -> None:
    with pytest.raises(InvalidRequest, match="user name"):
        accounts.add_user("bad name!", "clinician", password=GOOD)
    with pytest.raises(InvalidRequest, match="unknown role 'surgeon'"):
        accounts.add_user("thu", "surgeon", password=GOOD)
    with pytest.raises(InvalidRequest, match="unknown role 'dicom-node'"):
        accounts.add_user("thu", "dicom-node", password=GOOD)
    accounts.add_user("thu", "clinician", password=GOOD)
    with pytest.raises(Conflict, match="already exists"):
        accounts.add_user("THU", "clinician", password=GOOD)


def test_api_token_authenticates_until_revoked(accounts: Accounts) -> None:
    token, info = accounts.create_token("his-emr", Role.EMR, expires_days=30)
    principal = accounts.authenticate_bearer(token, source="10.0.0.9")
    assert (principal.kind, principal.name, principal.role) == ("token", "his-emr", Role.EMR)
    assert info.expires_at is not None
    assert [t.name for t in accounts.tokens()] == ["his-emr"]
    accounts.revoke_token(info.id)
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        accounts.authenticate_bearer(token)
    with pytest.raises(Unauthenticated):
        accounts.authenticate_bearer(token + "x")


def test_idle_session_is_locked_and_admins_idle_sooner(accounts: Accounts,
                                                       archive: Archive) -> None:
    accounts.add_user("tam", "radiologist", password=GOOD)
    accounts.add_user("root2", "admin", password=GOOD)
    user_session = accounts.login("tam", GOOD).token
    admin_session = accounts.login("root2", GOOD).token
    # Eight minutes pass without a request on either session.
    with archive.write_engine.begin() as connection:
        connection.execute(update(ApiToken).values(last_used_at=utc_now()
                                                   - timedelta(minutes=8)))
    fresh = Accounts(archive.engine, archive.write_engine, AccountPolicy())  # no cache
    assert fresh.authenticate_bearer(user_session).name == "tam"  # 15 min for users
    with pytest.raises(Unauthenticated, match="locked after 5 idle minutes"):
        fresh.authenticate_bearer(admin_session)


def test_first_start_creates_admin_once(accounts: Accounts) -> None:
    password = accounts.ensure_admin()
    assert password and accounts.user("admin").must_change_password
    assert accounts.ensure_admin() is None


# ---------------------------------------------------------------------- over HTTP
def test_first_start_prints_the_admin_one_time_password_and_forces_a_change(
    empty_server: ServerProcess,
) -> None:
    match = re.search(r"one-time password\s+(\S+)", empty_server.log())
    assert match, empty_server.log()
    one_time = match.group(1)
    url = empty_server.http_url
    login = httpx.post(f"{url}/auth/login", json={"username": "admin", "password": one_time})
    assert login.status_code == 200, login.text
    assert login.json()["must_change_password"] is True
    session = {"Authorization": f"Bearer {login.json()['access_token']}"}
    refused = httpx.get(f"{url}/dicom-web/studies", headers=session)
    assert refused.status_code == 403 and "change" in refused.json()["error"]
    weak = httpx.post(f"{url}/auth/password", headers=session,
                      json={"old_password": one_time, "new_password": "password"})
    assert weak.status_code == 400 and "characters" in weak.json()["error"]
    changed = httpx.post(f"{url}/auth/password", headers=session,
                         json={"old_password": one_time, "new_password": GOOD})
    assert changed.status_code == 204
    deadline = time.monotonic() + 15
    while httpx.get(f"{url}/dicom-web/studies", headers=session).status_code != 200:
        assert time.monotonic() < deadline, "the session still must change its password"


def test_anonymous_callers_get_401_with_a_challenge_but_health_is_public(
    server: ServerProcess,
) -> None:
    response = httpx.get(f"{server.dicomweb_url}/studies")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "log in" in response.json()["error"]
    assert httpx.get(f"{server.http_url}/healthz").status_code == 200
    assert httpx.get(f"{server.http_url}/viewer/").status_code == 200
    assert httpx.get(f"{server.http_url}/openapi.json").status_code == 200
    bogus = httpx.get(f"{server.dicomweb_url}/studies",
                      headers={"Authorization": "Bearer mp_not-a-token"})
    assert bogus.status_code == 401


def test_cli_user_logs_in_with_basic_and_session_cookie_and_logs_out(
    server: ServerProcess,
) -> None:
    server.add_user("bs.huong", "clinician", GOOD)
    basic = base64.b64encode(f"bs.huong:{GOOD}".encode()).decode()
    assert httpx.get(f"{server.dicomweb_url}/studies",
                     headers={"Authorization": f"Basic {basic}"}).status_code == 200
    wrong = base64.b64encode(b"bs.huong:Wrong-password-1").decode()
    assert httpx.get(f"{server.dicomweb_url}/studies",
                     headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    with httpx.Client(base_url=server.http_url) as browser:
        login = browser.post("/auth/login", json={"username": "bs.huong", "password": GOOD})
        assert login.status_code == 200
        assert "httponly" in login.headers["set-cookie"].lower()
        assert "samesite=strict" in login.headers["set-cookie"].lower()
        me = browser.get("/auth/me").json()
        assert (me["name"], me["role"]) == ("bs.huong", "clinician")
        assert "download" not in me["actions"] and "view" in me["actions"]
        assert browser.get("/dicom-web/studies").status_code == 200
        assert browser.post("/auth/logout").status_code == 204
        assert browser.get("/dicom-web/studies").status_code == 401


def test_token_created_with_cli_works_and_stops_working_once_revoked(
    server: ServerProcess,
) -> None:
    token = server.create_token("ris-script", "technologist")
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{server.dicomweb_url}/studies", headers=headers).status_code == 200
    listed = server.cli("token", "list")
    token_id = next(line.split()[0] for line in listed.stdout.splitlines()
                    if "ris-script" in line)
    assert server.cli("token", "revoke", token_id).returncode == 0
    # Nodes cache a verified token for a few seconds (accounts.py): poll, bounded.
    deadline = time.monotonic() + 20
    while httpx.get(f"{server.dicomweb_url}/studies", headers=headers).status_code != 401:
        assert time.monotonic() < deadline, "a revoked token still works after 20 s"


def test_admin_api_creates_users_and_tokens_and_lists_them(server: ServerProcess) -> None:
    created = server.http.post("/admin/users", json={"username": "ktv.nam",
                                                     "role": "technologist"})
    assert created.status_code == 201, created.text
    assert created.json()["one_time_password"]
    users = {u["username"]: u for u in server.http.get("/admin/users").json()}
    assert users["ktv.nam"]["must_change_password"] is True
    token = server.http.post("/admin/tokens", json={"name": "pacs-bridge", "role": "emr",
                                                    "expires_days": 7})
    assert token.status_code == 201 and token.json()["token"].startswith("mp_")
    assert server.http.post("/admin/tokens", json={"name": "x", "role": "dicom-node"}
                            ).status_code == 400
    revoked = server.http.delete(f"/admin/tokens/{token.json()['id']}")
    assert revoked.json()["revoked"] is True
    assert "token" not in server.http.get("/admin/tokens").json()[0]


def test_a_command_run_away_from_the_data_folder_says_so_and_makes_no_archive(
        tmp_path: Path) -> None:
    """From another folder, the default ./minipacs-data is not the server's archive: a
    token made there would be refused by the server. The command stops and says why
    (exit 2) instead of making a new, empty archive there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPACS_")}
    done = subprocess.run(
        [sys.executable, "-m", "minipacs", "token", "create", "scripts", "--role",
         "radiologist"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"no data folder at {tmp_path / 'minipacs-data'}" in done.stderr
    assert "--data-dir" in done.stderr and done.stdout == ""
    assert not (tmp_path / "minipacs-data").exists()
    # A folder named on purpose is used, even if new (settings' names ignore case).
    chosen = subprocess.run(
        [sys.executable, "-m", "minipacs", "token", "create", "scripts", "--role",
         "radiologist"], cwd=tmp_path, env={**env, "minipacs_data_dir": "chosen"},
        capture_output=True, text=True, timeout=120)
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    assert (tmp_path / "chosen").is_dir() and not (tmp_path / "minipacs-data").exists()
