"""The viewer's static files are consistent: every module is preloaded, none is missing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.door_only  # the viewer's static files

VIEWER = Path(__file__).resolve().parent.parent / "viewer"


def test_index_preloads_exactly_the_modules_that_exist() -> None:
    html = (VIEWER / "index.html").read_text()
    preloaded = re.findall(r'rel="modulepreload" href="js/([^"]+)"', html)
    scripts = re.findall(r'<script type="module"(?: async)? src="js/([^"]+)"', html)
    assert scripts == ["early.js", "main.js"]
    assert len(preloaded) == len(set(preloaded))
    # Other pages' own entry modules (audit.html's audit.js) are not the viewer's.
    other_pages = {name for page in VIEWER.glob("*.html") if page.name != "index.html"
                   for name in re.findall(r'<script type="module" src="js/([^"]+)"',
                                          page.read_text())}
    modules = {p.name for p in (VIEWER / "js").glob("*.js")} - other_pages
    assert set(preloaded) | set(scripts) == modules
    assert not set(preloaded) & set(scripts)


def test_every_relative_import_points_at_a_module() -> None:
    for module in (VIEWER / "js").glob("*.js"):
        for target in re.findall(r"""from\s+['"](\./[^'"]+)['"]""", module.read_text()):
            assert (module.parent / target).resolve().is_file(), f"{module.name} → {target}"


def test_viewer_files_are_revalidated_and_unchanged_ones_cost_a_304(server: Any) -> None:
    url = f"{server.http_url}/viewer/js/main.js"
    first = httpx.get(url, headers=server.auth)
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-cache"
    assert first.text == (VIEWER / "js" / "main.js").read_text()
    again = httpx.get(url, headers={**server.auth, "If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
