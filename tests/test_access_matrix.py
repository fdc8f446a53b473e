"""Every HTTP route has an access rule, and every role gets exactly what the permission
matrix gives it, on a real server with real tokens made by `minipacs token create`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from conftest import ServerProcess
from minipacs.access.roles import ACCOUNT_ROLES, PERMISSIONS, Action, Role
from minipacs.ae_registry import AERegistry
from minipacs.archive import Archive
from minipacs.config import Settings
from minipacs.web.app import create_app
from minipacs.web.route_rules import PUBLIC, RULES, SIGNED_IN
from minipacs.worklist import Worklist

UID = "1.2.826.0.1.3680043.8.498.1"  # well-formed, never stored
PARAMS = {"study": UID, "series": UID, "instance": UID, "frames": "1", "tag": "7FE00010",
          "ae_title": "NOBODY", "step_id": "NOSTEP", "username": "nobody", "token_id": "999999",
          "link_id": "999999", "alert_id": "999999",
          "patient_id": "NOBODY", "endpoint_id": "dicom-wado-rs", "resource_type": "Nothing",
          "logical_id": "none",
          "template_id": "999999", "protocol": "none",
          "plane_name": "axial", "frame": "1"}  # MPR (web/mpr.py)


def _api_routes(archive: Archive, settings: Settings) -> list[tuple[str, str]]:
    app = create_app(archive, settings, registry=AERegistry(archive.engine),
                     worklist=Worklist(archive.engine), accounts=None)  # type: ignore[arg-type]
    return sorted((method, route.path) for route in _walk(app.routes)
                  for method in route.methods)


def _walk(routes: list[Any]) -> Iterator[APIRoute]:
    """Every API route, also inside included routers (FastAPI wraps those)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _walk(included.routes)


def test_every_route_of_the_app_has_a_rule_and_every_rule_a_route(
    archive: Archive, settings: Settings
) -> None:
    routes = set(_api_routes(archive, settings))
    assert sorted(routes - set(RULES)) == [], "routes without a rule in web/route_rules.py"
    assert sorted(set(RULES) - routes) == [], "rules for routes that no longer exist"


def test_the_matrix_is_rendered_into_the_security_document() -> None:
    text = (Path(__file__).parents[1] / "docs" / "security.md").read_text()
    for role in ACCOUNT_ROLES:
        row = re.search(rf"^\| `{role.value}` \|(.*)$", text, re.M)
        assert row, f"docs/security.md has no matrix row for {role.value}"
        cells = [c.strip() for c in row.group(1).split("|")[: len(Action)]]
        expected = ["yes" if a in PERMISSIONS[role] else "" for a in Action]
        assert cells == expected, f"docs/security.md row for {role.value} differs from code"


@pytest.fixture(scope="module")
def role_tokens(server: ServerProcess) -> dict[Role, str]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        tokens = pool.map(lambda r: server.create_token(f"matrix-{r.value}", r.value),
                          ACCOUNT_ROLES)
        return dict(zip(ACCOUNT_ROLES, tokens, strict=True))


def _call(client: httpx.Client, method: str, path: str, headers: dict[str, str]
          ) -> httpx.Response:
    url = path.format(**PARAMS)
    # Bodies that every route refuses as malformed: no route changes anything here.
    return client.request(method, url, headers=headers, content=b"{not json",
                          timeout=60)


def test_each_role_and_anonymous_get_what_the_matrix_says_on_every_route(
    server: ServerProcess, role_tokens: dict[Role, str], archive: Archive, settings: Settings
) -> None:
    before = httpx.get(f"{server.http_url}/healthz").json()
    wrong: list[str] = []
    with httpx.Client(base_url=server.http_url) as client:
        for method, path in _api_routes(archive, settings):
            rule = RULES[(method, path)]
            anonymous = _call(client, method, path, {}).status_code
            if rule == PUBLIC:
                if anonymous in (401, 403):
                    wrong.append(f"{method} {path} public, anonymous got {anonymous}")
                continue
            if anonymous != 401:
                wrong.append(f"{method} {path} anonymous got {anonymous}, not 401")
            for role, token in role_tokens.items():
                status = _call(client, method, path,
                               {"Authorization": f"Bearer {token}"}).status_code
                allowed = rule == SIGNED_IN or rule in PERMISSIONS[role]
                if allowed and status in (401, 403):
                    wrong.append(f"{method} {path} {role.value} allowed, got {status}")
                if not allowed and status != 403:
                    wrong.append(f"{method} {path} {role.value} refused, got {status}")
    assert wrong == []
    after = httpx.get(f"{server.http_url}/healthz").json()
    assert after == before  # nothing was changed along the way
