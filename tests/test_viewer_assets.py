"""The viewer's static files are consistent: every module is preloaded, none is missing."""

from __future__ import annotations

import re
from pathlib import Path

VIEWER = Path(__file__).resolve().parent.parent / "viewer"


def test_index_preloads_exactly_the_modules_that_exist() -> None:
    html = (VIEWER / "index.html").read_text()
    preloaded = set(re.findall(r'rel="modulepreload" href="js/([^"]+)"', html))
    modules = {p.name for p in (VIEWER / "js").glob("*.js")} - {"main.js"}
    assert preloaded == modules


def test_every_relative_import_points_at_a_module() -> None:
    for module in (VIEWER / "js").glob("*.js"):
        for target in re.findall(r"""from\s+['"](\./[^'"]+)['"]""", module.read_text()):
            assert (module.parent / target).resolve().is_file(), f"{module.name} → {target}"
