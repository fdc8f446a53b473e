"""Report templates: skeleton findings and conclusion per modality and body part.

The viewer's report panel offers the template that fits the study (its Modality and
BodyPartExamined) and lists the others. Anyone who may write reports (action `report`)
reads them; only administrators change them (action `manage-aes`: the archive's
configuration, like the AE registry), and every change is an audit event
(`report-template-create|update|delete`) written in the change's transaction. The
defaults, in Vietnamese, ship with the migration that makes the table (0020).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from minipacs.access.principal import Principal
from minipacs.access.roles import Action
from minipacs.archive import Archive
from minipacs.audit.chain import AuditRecord, append
from minipacs.errors import InvalidRequest, NotFound
from minipacs.reports.models import ReportTemplateRow

# Modality (PS3.3 C.7.3.1.1.1) and BodyPartExamined (PS3.3 C.7.3.1, CID 4031) are CS:
# upper case, digits, space and underscore, at most 16 characters each.
_CODE = re.compile(r"^[A-Z0-9_]{1,16}$")
_MAX_TEXT = 20_000
_MAX_CODES = 16


@dataclass(frozen=True)
class ReportTemplate:
    id: int
    name: str
    modalities: tuple[str, ...]  # empty: any modality
    body_parts: tuple[str, ...]  # empty: any body part
    findings: str
    conclusion: str
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True)
class TemplateDraft:
    name: str
    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    findings: str = ""
    conclusion: str = ""


def _template_of(row: ReportTemplateRow) -> ReportTemplate:
    return ReportTemplate(row.id, row.name, tuple(row.modalities.split()),
                          tuple(row.body_parts.split()), row.findings, row.conclusion,
                          row.updated_by, row.updated_at)


def check_code(kind: str, value: str) -> str:
    """`value` if it is a DICOM code string as Modality and BodyPartExamined hold;
    `InvalidRequest` naming it otherwise."""
    if not _CODE.fullmatch(value):
        raise InvalidRequest(f"{kind} value {value[:40]!r} is not a DICOM code string "
                             "(upper-case letters, digits, _; at most 16)")
    return value


def _codes(kind: str, values: tuple[str, ...]) -> str:
    if len(values) > _MAX_CODES:
        raise InvalidRequest(f"template {kind}: {len(values)} values; at most {_MAX_CODES}")
    return " ".join(check_code(f"template {kind}", value) for value in values)


def _checked(draft: TemplateDraft) -> TemplateDraft:
    name = draft.name.strip()
    if not name or len(name) > 128:
        raise InvalidRequest(f"template name {draft.name[:40]!r} must have 1 to 128 "
                             "characters")
    for field in ("findings", "conclusion"):
        text = getattr(draft, field)
        if len(text) > _MAX_TEXT:
            raise InvalidRequest(f"template {field} is {len(text)} characters; at most "
                                 f"{_MAX_TEXT}")
        if "\0" in text:
            raise InvalidRequest(f"template {field} contains a NUL character")
    modalities = tuple(v.strip().upper() for v in draft.modalities if v.strip())
    parts = tuple(v.strip().upper() for v in draft.body_parts if v.strip())
    _codes("modalities", modalities)
    _codes("body_parts", parts)
    return TemplateDraft(name, modalities, parts, draft.findings, draft.conclusion)


def best_template(templates: list[ReportTemplate], modality: str, body_part: str
                  ) -> ReportTemplate | None:
    """The template for a study: same modality and body part first, then the same
    modality for any body part, then one for any modality; None when nothing fits."""
    modality, body_part = modality.upper(), body_part.upper()

    def score(t: ReportTemplate) -> int:
        if t.modalities and modality not in t.modalities:
            return 0
        if t.body_parts and body_part not in t.body_parts:
            return 0
        return (2 if t.modalities else 0) + (1 if t.body_parts else 0) + 1

    ranked = sorted(templates, key=lambda t: (-score(t), t.id))
    return ranked[0] if ranked and score(ranked[0]) > 0 else None


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


class ReportTemplates:
    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def list(self, *, principal: Principal | None = None) -> list[ReportTemplate]:
        """Every template, by name (no patient data: not audited)."""
        self.archive.permit(principal, Action.REPORT)
        with self.archive._read() as session:
            rows = session.scalars(select(ReportTemplateRow).order_by(
                ReportTemplateRow.name, ReportTemplateRow.id))
            return [_template_of(r) for r in rows]

    def get(self, template_id: int, *, principal: Principal | None = None) -> ReportTemplate:
        self.archive.permit(principal, Action.REPORT)
        with self.archive._read() as session:
            row = session.get(ReportTemplateRow, template_id)
            if row is None:
                raise NotFound(f"report template {template_id} does not exist")
            return _template_of(row)

    def create(self, draft: TemplateDraft, *, principal: Principal | None = None
               ) -> ReportTemplate:
        who = self.archive.permit(principal, Action.MANAGE_AES)
        draft = _checked(draft)
        with self._changing() as session:
            row = ReportTemplateRow(name=draft.name, modalities=" ".join(draft.modalities),
                                    body_parts=" ".join(draft.body_parts),
                                    findings=draft.findings, conclusion=draft.conclusion,
                                    updated_by=who.name, updated_at=_now())
            session.add(row)
            session.flush()
            self._audit(session, who, "report-template-create",
                        f"report template {row.id} {row.name!r} created")
            return _template_of(row)

    def update(self, template_id: int, draft: TemplateDraft, *,
               principal: Principal | None = None) -> ReportTemplate:
        who = self.archive.permit(principal, Action.MANAGE_AES)
        draft = _checked(draft)
        with self._changing() as session:
            row = self._row(session, template_id)
            row.name, row.findings, row.conclusion = draft.name, draft.findings, \
                draft.conclusion
            row.modalities, row.body_parts = " ".join(draft.modalities), \
                " ".join(draft.body_parts)
            row.updated_by, row.updated_at = who.name, _now()
            self._audit(session, who, "report-template-update",
                        f"report template {row.id} {row.name!r} changed")
            return _template_of(row)

    def delete(self, template_id: int, *, principal: Principal | None = None) -> None:
        who = self.archive.permit(principal, Action.MANAGE_AES)
        with self._changing() as session:
            row = self._row(session, template_id)
            self._audit(session, who, "report-template-delete",
                        f"report template {row.id} {row.name!r} deleted")
            session.delete(row)

    @contextmanager
    def _changing(self) -> Iterator[Session]:
        # Templates live in the index database, written under the archive's write lock.
        with self.archive._write_lock, self.archive._write() as session, session.begin():
            yield session

    @staticmethod
    def _row(session: Session, template_id: int) -> ReportTemplateRow:
        row = session.get(ReportTemplateRow, template_id)
        if row is None:
            raise NotFound(f"report template {template_id} does not exist")
        return row

    @staticmethod
    def _audit(session: Session, principal: Principal, action: str, detail: str) -> None:
        append(session, AuditRecord(action, principal.actor, principal.role.value,
                                    principal.source, "", "", detail=detail))
