# ruff: noqa: E501  -- JavaScript snippets for the page are kept on one line each
"""What the viewer tests share, in Chromium (Playwright) and Firefox (firefox_bidi): the
server's own DICOMweb answers to compare with, and scripts that read the viewer's state.

A `page` here is anything with Playwright's `evaluate` and `wait_for_function`.
"""

from __future__ import annotations

import json
import unicodedata
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

H = "window.minipacsViewer"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "viewer"


def dicomweb_json(server: Any, path: str, **query: str) -> list[dict[str, Any]]:
    url = f"{server.http_url}/dicom-web/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    request = urllib.request.Request(url, headers={"Accept": "application/dicom+json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body.strip() else []


def value(dataset: dict[str, Any], tag: str) -> Any:
    values = dataset.get(tag, {}).get("Value", [])
    return values[0] if values else None


def study_with_modality(server: Any, modality: str) -> dict[str, Any]:
    studies = dicomweb_json(server, "studies", ModalitiesInStudy=modality, includefield="all")
    assert studies, f"no sample study with modality {modality}"
    return studies[0]


def first_series_metadata(
    server: Any, study_uid: str, *, multiframe: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The largest image series of a study (or its first multi-frame one) and its metadata."""
    candidates = []
    for series in dicomweb_json(server, f"studies/{study_uid}/series", includefield="all"):
        series_uid = value(series, "0020000E")
        metadata = dicomweb_json(server, f"studies/{study_uid}/series/{series_uid}/metadata")
        frames = sum(int(value(m, "00280008") or 1) for m in metadata)
        if multiframe and not any(int(value(m, "00280008") or 1) > 1 for m in metadata):
            continue
        candidates.append((frames, value(series, "00200011") or 0, series, metadata))
    assert candidates, f"study {study_uid} has no {'multi-frame ' if multiframe else ''}series"
    candidates.sort(key=lambda c: (-c[0], c[1]))
    return candidates[0][2], candidates[0][3]


def wait_for_rows_of_patient(page: Any, patient_id: str, count: int) -> None:
    """Wait for the search's own answer (the list shown before it holds every study)."""
    page.wait_for_function(
        """([pid, count]) => {
            const cells = [...document.querySelectorAll('[data-testid=study-row] [data-column=patient-id]')];
            return cells.length === count && cells.every(c => c.textContent.trim() === pid);
        }""",
        arg=[patient_id, count],
    )


def fold(text: str) -> str:
    """What a user types without Vietnamese diacritics: 'Nguyễn^Văn An' → 'nguyen van an'."""
    text = text.replace("đ", "d").replace("Đ", "D").replace("^", " ")
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn").lower().strip()


def state(page: Any, name: str) -> Any:
    return page.evaluate(f"{H}.{name}")


def wait_for_first_image(page: Any) -> None:
    page.wait_for_function(
        f"{H}.page === 'viewer' && {H}.activeViewport.currentImageKind === 'pixels'"
    )


def wait_for_render(page: Any) -> None:
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def canvas_pixels(page: Any) -> list[int]:
    """Red channel of a 9×9 grid over the active viewport's canvas."""
    return page.evaluate(
        """() => {
          const c = document.querySelector('.viewport.active [data-testid=viewport-canvas]');
          const ctx = c.getContext('2d');
          const out = [];
          for (let i = 1; i < 10; i++) for (let j = 1; j < 10; j++) {
            out.push(ctx.getImageData(Math.floor(c.width * i / 10), Math.floor(c.height * j / 10), 1, 1).data[0]);
          }
          return out;
        }"""
    )


def viewport_centre(page: Any) -> tuple[float, float]:
    box = page.evaluate(
        "() => { const r = document.querySelector('.viewport.active [data-testid=viewport-canvas]').getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }"
    )
    return box[0], box[1]
