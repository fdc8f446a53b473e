"""Hanging protocols: how a study is laid out when it opens (issue #14, "Reading").

A protocol (JSON, checked by `checked_protocol`):

    {"name": "CT chest",            # shown in the viewer's menu; the key with its owner
     "modality": "CT",              # regex, matched whole against the study's modalities
     "bodyPart": "CHEST|THORAX",    # regex, searched in BodyPartExamined / StudyDescription
     "minPriors": 1,                # optional: only when the patient has that many priors
     "layout": "1x2",               # 1x1, 1x2 or 2x2
     "viewports": [                 # at most as many as the layout shows
        {"window": "lung",          # a CT preset, "default", or {"center": c, "width": w}
         "series": [                # alternatives, the first that finds a series wins
            {"study": "current",    # or "prior": the newest prior study
             "modality": "CT", "description": "lung", "bodyPart": "",
             "orientation": "axial", # axial/coronal/sagittal from ImageOrientationPatient
             "minImages": 2}, {}]}]}

Regexes are matched without case in the viewer (viewer/js/hanging.js), which chooses
the protocol: the user's own before the defaults, then the most specific. Defaults are the
shipped ones (`shipped_protocols.py`) with an administrator's edits (owner "") in their
place. Who may do what: anyone signed in reads the protocols that apply to them and keeps
their own; changing a default needs `manage-aes` (the archive's configuration, like the
AE registry). Every change is audited as configuration (action "configure") in the
transaction that makes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from minipacs.access.principal import Principal
from minipacs.access.roles import Action
from minipacs.archive import Archive
from minipacs.audit.chain import AuditRecord, append
from minipacs.errors import InvalidRequest, NotFound
from minipacs.viewer_settings.models import HangingProtocolRow
from minipacs.viewer_settings.shipped_protocols import SHIPPED

LAYOUTS = {"1x1": 1, "1x2": 2, "2x2": 4}
WINDOWS = ("default", "brain", "subdural", "lung", "mediastinum", "abdomen", "bone",
           "liver", "stroke", "temporal")  # viewer/js/lut.js CT_PRESETS
ORIENTATIONS = ("", "axial", "coronal", "sagittal")
STUDIES = ("current", "prior")
_RULE_KEYS = {"study", "modality", "description", "bodyPart", "orientation", "minImages"}
_PROTOCOL_KEYS = {"name", "modality", "bodyPart", "minPriors", "layout", "viewports"}
_MAX_NAME = 64
_MAX_REGEX = 200
_MAX_ALTERNATIVES = 8
DEFAULT_OWNER = ""


@dataclass(frozen=True)
class HangingProtocol:
    name: str
    owner: str  # "" for a default
    edited: bool  # a default an administrator changed (False: as shipped)
    body: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {**self.body, "name": self.name,
                "scope": "default" if self.owner == DEFAULT_OWNER else "own",
                "edited": self.edited}


def _regex(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{where} must be a string (a regular expression), not "
                             f"{type(value).__name__}")
    if len(value) > _MAX_REGEX:
        raise InvalidRequest(f"{where} is {len(value)} characters; at most {_MAX_REGEX}")
    try:
        re.compile(value)
    except re.error as exc:
        raise InvalidRequest(f"{where} {value!r} is not a regular expression: {exc}") from None
    return value


def _window(value: Any, where: str) -> Any:
    if isinstance(value, str):
        if value not in WINDOWS:
            raise InvalidRequest(f"{where} {value!r} is not a window preset; presets are: "
                                 f"{', '.join(WINDOWS)} (or {{\"center\": c, \"width\": w}})")
        return value
    if isinstance(value, dict) and set(value) == {"center", "width"} and all(
            isinstance(value[k], int | float) and not isinstance(value[k], bool)
            for k in value) and value["width"] >= 1:
        return {"center": value["center"], "width": value["width"]}
    raise InvalidRequest(f"{where} {value!r} must be a preset name or "
                         "{\"center\": number, \"width\": number >= 1}")


def _rule(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be an object, not {type(value).__name__}")
    unknown = set(value) - _RULE_KEYS
    if unknown:
        raise InvalidRequest(f"{where} has unknown keys {sorted(unknown)}; known: "
                             f"{sorted(_RULE_KEYS)}")
    rule: dict[str, Any] = {}
    if "study" in value:
        if value["study"] not in STUDIES:
            raise InvalidRequest(f"{where}.study {value['study']!r} must be one of "
                                 f"{', '.join(STUDIES)}")
        rule["study"] = value["study"]
    for key in ("modality", "description", "bodyPart"):
        if key in value:
            rule[key] = _regex(value[key], f"{where}.{key}")
    if "orientation" in value:
        if value["orientation"] not in ORIENTATIONS:
            raise InvalidRequest(f"{where}.orientation {value['orientation']!r} must be one"
                                 " of axial, coronal, sagittal (or empty)")
        rule["orientation"] = value["orientation"]
    if "minImages" in value:
        count = value["minImages"]
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 100_000:
            raise InvalidRequest(f"{where}.minImages {count!r} must be a whole number 0..100000")
        rule["minImages"] = count
    return rule


def checked_protocol(name: str, body: Any) -> dict[str, Any]:
    """The protocol `body` named `name`, checked; `InvalidRequest` naming what is wrong."""
    name = name.strip()
    if not name or len(name) > _MAX_NAME:
        raise InvalidRequest(f"a hanging protocol's name must be 1..{_MAX_NAME} characters,"
                             f" not {name!r}")
    if not isinstance(body, dict):
        raise InvalidRequest(f"hanging protocol {name!r} must be a JSON object")
    unknown = set(body) - _PROTOCOL_KEYS - {"scope", "edited"}
    if unknown:
        raise InvalidRequest(f"hanging protocol {name!r} has unknown keys {sorted(unknown)};"
                             f" known: {sorted(_PROTOCOL_KEYS)}")
    if body.get("name", name) != name:
        raise InvalidRequest(f"hanging protocol body names {body.get('name')!r} but the "
                             f"address names {name!r}")
    layout = body.get("layout")
    if layout not in LAYOUTS:
        raise InvalidRequest(f"hanging protocol {name!r}: layout {layout!r} must be one of "
                             f"{', '.join(LAYOUTS)}")
    protocol: dict[str, Any] = {"name": name, "layout": layout,
                                "modality": _regex(body.get("modality", ""), "modality"),
                                "bodyPart": _regex(body.get("bodyPart", ""), "bodyPart")}
    if body.get("minPriors") is not None:
        priors = body["minPriors"]
        if not isinstance(priors, int) or isinstance(priors, bool) or not 0 <= priors <= 100:
            raise InvalidRequest(f"minPriors {priors!r} must be a whole number 0..100")
        protocol["minPriors"] = priors
    viewports = body.get("viewports")
    if not isinstance(viewports, list) or not 1 <= len(viewports) <= LAYOUTS[layout]:
        raise InvalidRequest(f"hanging protocol {name!r}: viewports must be a list of 1.."
                             f"{LAYOUTS[layout]} entries for layout {layout}")
    checked = []
    for i, viewport in enumerate(viewports):
        where = f"viewports[{i}]"
        if not isinstance(viewport, dict) or set(viewport) - {"window", "series"}:
            raise InvalidRequest(f"{where} must be an object with 'window' and 'series'")
        alternatives = viewport.get("series", [{}])
        if not isinstance(alternatives, list) or not 1 <= len(alternatives) <= _MAX_ALTERNATIVES:
            raise InvalidRequest(f"{where}.series must be a list of 1..{_MAX_ALTERNATIVES} "
                                 "matching rules (the first that finds a series wins)")
        checked.append({"window": _window(viewport.get("window", "default"), f"{where}.window"),
                        "series": [_rule(r, f"{where}.series[{j}]")
                                   for j, r in enumerate(alternatives)]})
    protocol["viewports"] = checked
    return protocol


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


class HangingProtocols:
    """The protocols of one archive's index, for a principal (the door's, by default)."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def applicable(self, principal: Principal | None = None) -> list[HangingProtocol]:
        """The caller's own protocols, then the defaults (edited ones in place of shipped)."""
        owner = self.archive.who(principal).actor
        with self.archive._read() as session:
            rows = session.scalars(select(HangingProtocolRow).where(
                HangingProtocolRow.owner.in_((owner, DEFAULT_OWNER)))
                .order_by(HangingProtocolRow.name)).all()
        own = [HangingProtocol(r.name, r.owner, False, json.loads(r.body))
               for r in rows if r.owner == owner]
        edited = {r.name: r for r in rows if r.owner == DEFAULT_OWNER}
        defaults = []
        for shipped in SHIPPED:
            row = edited.pop(shipped["name"], None)
            defaults.append(HangingProtocol(shipped["name"], DEFAULT_OWNER, row is not None,
                                            json.loads(row.body) if row else dict(shipped)))
        defaults += [HangingProtocol(r.name, DEFAULT_OWNER, True, json.loads(r.body))
                     for r in edited.values()]
        return own + defaults

    def save_own(self, name: str, body: Any, principal: Principal | None = None
                 ) -> HangingProtocol:
        principal = self.archive.who(principal)
        return self._save(principal.actor, name, body, principal)

    def delete_own(self, name: str, principal: Principal | None = None) -> None:
        principal = self.archive.who(principal)
        self._delete(principal.actor, name, principal)

    def save_default(self, name: str, body: Any, principal: Principal | None = None
                     ) -> HangingProtocol:
        principal = self.archive.permit(principal, Action.MANAGE_AES)
        return self._save(DEFAULT_OWNER, name, body, principal)

    def delete_default(self, name: str, principal: Principal | None = None) -> None:
        """Drop an administrator's edit: a shipped default comes back as shipped."""
        principal = self.archive.permit(principal, Action.MANAGE_AES)
        self._delete(DEFAULT_OWNER, name, principal)

    def _save(self, owner: str, name: str, body: Any, principal: Principal
              ) -> HangingProtocol:
        protocol = checked_protocol(name, body)
        name = protocol["name"]
        text = json.dumps(protocol, ensure_ascii=False, sort_keys=True)
        with self._changing() as session:
            row = session.scalars(select(HangingProtocolRow).where(
                HangingProtocolRow.owner == owner, HangingProtocolRow.name == name)).first()
            verb = "changed" if row else "saved"
            if row is None:
                row = HangingProtocolRow(owner=owner, name=name)
                session.add(row)
            row.body, row.updated_by, row.updated_at = text, principal.actor, _now()
            _audit(session, principal, f"{_scope(owner)} hanging protocol {name!r} {verb}: "
                                       f"layout {protocol['layout']}")
        return HangingProtocol(name, owner, owner == DEFAULT_OWNER, protocol)

    def _delete(self, owner: str, name: str, principal: Principal) -> None:
        with self._changing() as session:
            result = session.execute(delete(HangingProtocolRow).where(
                HangingProtocolRow.owner == owner, HangingProtocolRow.name == name))
            if not getattr(result, "rowcount", 0):
                raise NotFound(f"{_scope(owner)} hanging protocol {name!r} is not saved"
                               + (" (a shipped default cannot be deleted, only edited)"
                                  if owner == DEFAULT_OWNER else ""))
            _audit(session, principal, f"{_scope(owner)} hanging protocol {name!r} deleted")

    @contextmanager
    def _changing(self) -> Iterator[Session]:
        # The archive's write session and lock: the rows live in the index database.
        with self.archive._write_lock, self.archive._write() as session, session.begin():
            yield session


def _scope(owner: str) -> str:
    return "default" if owner == DEFAULT_OWNER else f"{owner}'s"


def _audit(session: Session, principal: Principal, detail: str) -> None:
    append(session, AuditRecord("configure", principal.actor, principal.role.value,
                                principal.source, detail=detail))
