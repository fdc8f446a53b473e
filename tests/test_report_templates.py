"""Report templates over HTTP on a real server (issue #14): the Vietnamese defaults ship,
the one fitting a study is suggested, administrators change them (audited), radiologists
only read them, and a bad template is refused naming the value."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from conftest import ServerProcess

DEFAULT_NAMES = {"CT sọ não", "CT ngực", "CT bụng", "MR sọ não", "X-quang ngực thẳng",
                 "Siêu âm bụng"}


@pytest.fixture(scope="module")
def radiologist(server: ServerProcess) -> dict[str, str]:
    token = server.create_token(f"tpl-rad-{uuid.uuid4().hex[:8]}", "radiologist")
    return {"Authorization": f"Bearer {token}"}


def _templates(server: ServerProcess, headers: dict[str, str], **params: str
               ) -> dict[str, Any]:
    answer = httpx.get(f"{server.http_url}/report-templates", headers=headers,
                       params=params, timeout=30)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _named(listing: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in listing["templates"] if t["name"] == name)


def test_vietnamese_defaults_ship_and_the_fitting_one_is_suggested(
    server: ServerProcess, radiologist: dict[str, str]
) -> None:
    listing = _templates(server, radiologist)
    assert DEFAULT_NAMES <= {t["name"] for t in listing["templates"]}
    head = _named(listing, "CT sọ não")
    assert head["modalities"] == ["CT"] and "HEAD" in head["body_parts"]
    assert "Nhu mô não" in head["findings"]
    assert head["conclusion"].startswith("Hiện tại chưa phát hiện bất thường")
    for name in DEFAULT_NAMES:
        template = _named(listing, name)
        assert template["findings"].strip() and template["conclusion"].strip(), name
    cases = {("CT", "HEAD"): "CT sọ não", ("CT", "CHEST"): "CT ngực",
             ("CT", "ABDOMEN"): "CT bụng", ("MR", "BRAIN"): "MR sọ não",
             ("DX", "CHEST"): "X-quang ngực thẳng", ("CR", "CHEST"): "X-quang ngực thẳng",
             ("US", "ABDOMEN"): "Siêu âm bụng"}
    for (modality, part), name in cases.items():
        found = _templates(server, radiologist, modality=modality, body_part=part)
        assert found["suggested"] == _named(found, name)["id"], (modality, part)
    # Nothing fits a mammogram: nothing is suggested, the picker still lists them all.
    assert _templates(server, radiologist, modality="MG", body_part="BREAST")["suggested"] \
        is None


def test_admin_adds_changes_and_removes_a_template_and_each_change_is_audited(
    server: ServerProcess
) -> None:
    name = f"CT cột sống cổ {uuid.uuid4().hex[:6]}"
    body = {"name": name, "modalities": ["ct"], "body_parts": ["CSPINE"],
            "findings": "Thân đốt sống cổ: chiều cao bình thường.",
            "conclusion": "Chưa phát hiện bất thường cột sống cổ."}
    made = server.http.post("/report-templates", json=body)
    assert made.status_code == 201, made.text
    template = made.json()
    assert template["modalities"] == ["CT"] and template["updated_by"] == "tests-admin"
    suggested = _templates(server, server.auth, modality="CT", body_part="CSPINE")
    assert suggested["suggested"] == template["id"]
    changed = server.http.put(f"/report-templates/{template['id']}", json={
        **body, "conclusion": "Thoái hóa nhẹ cột sống cổ."})
    assert changed.status_code == 200, changed.text
    assert _named(_templates(server, server.auth), name)["conclusion"] == \
        "Thoái hóa nhẹ cột sống cổ."
    removed = server.http.delete(f"/report-templates/{template['id']}")
    assert removed.status_code == 204, removed.text
    assert name not in {t["name"] for t in _templates(server, server.auth)["templates"]}
    assert server.http.delete(f"/report-templates/{template['id']}").status_code == 404
    events = server.http.get("/admin/audit", params={"limit": 1000}).json()
    mine = [e["action"] for e in events if f"report template {template['id']} " in e["detail"]]
    assert sorted(mine) == ["report-template-create", "report-template-delete",
                            "report-template-update"]


def test_a_radiologist_reads_templates_but_cannot_change_them(
    server: ServerProcess, radiologist: dict[str, str]
) -> None:
    listing = _templates(server, radiologist)
    first = listing["templates"][0]
    with httpx.Client(base_url=server.http_url, headers=radiologist, timeout=30) as client:
        body = {"name": "Của tôi", "findings": "x", "conclusion": "y"}
        assert client.post("/report-templates", json=body).status_code == 403
        assert client.put(f"/report-templates/{first['id']}", json=body).status_code == 403
        assert client.delete(f"/report-templates/{first['id']}").status_code == 403
    assert _named(_templates(server, radiologist), first["name"]) == first
    # Without the report action there is nothing to read either.
    clinician = server.create_token(f"tpl-clin-{uuid.uuid4().hex[:8]}", "clinician")
    refused = httpx.get(f"{server.http_url}/report-templates", timeout=30,
                        headers={"Authorization": f"Bearer {clinician}"})
    assert refused.status_code == 403


def test_a_bad_template_is_refused_naming_the_value_and_nothing_changes(
    server: ServerProcess
) -> None:
    before = _templates(server, server.auth)
    bad_modality = server.http.post("/report-templates", json={
        "name": "Sai", "modalities": ["C T!"], "findings": "", "conclusion": ""})
    assert bad_modality.status_code == 400 and "C T!" in bad_modality.text
    no_name = server.http.post("/report-templates", json={"name": "  "})
    assert no_name.status_code == 400 and "name" in no_name.text
    assert _templates(server, server.auth) == before
