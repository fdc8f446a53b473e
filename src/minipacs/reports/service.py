"""The report service: create, change, sign and amend reports for a principal.

States (issue #14): draft -> preliminary -> final (signed) -> amended, where an amendment
is a NEW row (`amends` = the version it corrects; that one stays readable, status final or
amended). Writing and signing need action `report` (roles radiologist and admin); reading
needs `view` on the study. Every change is permitted by `Archive.permit` and audited in
its own transaction. Signing renders the PDF and the SR (`documents.py`) and stores both
through `Archive.ingest` (indexed, audited, in the change feed) BEFORE the report row
becomes final, so a final report always has its objects in the study; the audit event
of the signature records the PDF's SHA-256.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session

from minipacs.access.principal import Principal
from minipacs.access.roles import Action
from minipacs.archive import Archive
from minipacs.audit.chain import AuditRecord, append
from minipacs.errors import Conflict, InvalidRequest, NotFound, PreconditionFailed
from minipacs.index.models import UserAccount
from minipacs.reports.documents import SignedReport, encapsulated_pdf, render_pdf, text_sr
from minipacs.reports.models import OruOutboxRow, ReportRow
from minipacs.reports.signing import ReportSigner

log = logging.getLogger(__name__)
DRAFT, PRELIMINARY, FINAL, AMENDED = "draft", "preliminary", "final", "amended"
STATUSES = (DRAFT, PRELIMINARY, FINAL, AMENDED)
_EDITABLE = (DRAFT, PRELIMINARY)
_MAX_TEXT = 100_000


@dataclass(frozen=True)
class Report:
    id: int
    study_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str
    status: str
    findings: str
    conclusion: str
    based_on: str
    key_images: tuple[str, ...]
    author: str
    signer: str
    amends: int | None
    version: int
    created_at: datetime
    updated_at: datetime
    signed_at: datetime | None
    pdf_sha256: str
    pdf_sop_instance_uid: str
    sr_sop_instance_uid: str
    # The signer's practising-certificate code as it was at signing (claims' MA_BS_DOC_KQ)
    signer_certificate: str = ""


@dataclass(frozen=True)
class ReportDraft:
    """What a writer sends: the text, the order, the key images, the wanted status."""

    study_instance_uid: str
    status: str
    findings: str = ""
    conclusion: str = ""
    based_on: str = ""
    key_images: tuple[str, ...] = ()


def report_of(row: ReportRow) -> Report:
    return Report(row.id, row.study_instance_uid, row.patient_id, row.issuer_of_patient_id,
                  row.status, row.findings, row.conclusion, row.based_on,
                  tuple(row.key_images.split()), row.author, row.signer, row.amends,
                  row.version, row.created_at, row.updated_at, row.signed_at,
                  row.pdf_sha256, row.pdf_sop_instance_uid, row.sr_sop_instance_uid,
                  row.signer_certificate)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _certificate_of(session: Session, principal: Principal) -> str:
    """The signing person's practising-certificate code (accounts), kept with the
    signature so a claim names the code the doctor had when signing; "" for others."""
    if principal.kind != "user":
        return ""
    code = session.scalar(select(UserAccount.practising_certificate).where(
        UserAccount.username == principal.name))
    return code or ""


def _checked(draft: ReportDraft) -> ReportDraft:
    if draft.status not in STATUSES:
        raise InvalidRequest(f"report status {draft.status!r} must be one of "
                             f"{', '.join(STATUSES)}")
    for name in ("findings", "conclusion"):
        if len(getattr(draft, name)) > _MAX_TEXT:
            raise InvalidRequest(f"report {name} is {len(getattr(draft, name))} characters;"
                                 f" at most {_MAX_TEXT}")
    if draft.status in (FINAL, AMENDED) and not draft.conclusion.strip():
        raise InvalidRequest("a report cannot be signed without a conclusion")
    return draft


class Reports:
    def __init__(self, archive: Archive, hospital: str = "minipacs",
                 signer: ReportSigner | None = None, *, oru_outbox: bool = False) -> None:
        self.archive = archive
        self.hospital = hospital
        self.signer = signer  # PAdES (reports/signing.py) when a certificate is set
        self.oru_outbox = oru_outbox  # queue signed reports as ORU^R01 (hl7/oru_sender.py)

    # ------------------------------------------------------------------ changes
    def create(self, draft: ReportDraft, *, principal: Principal | None = None) -> Report:
        """A new report on a stored study; status draft, preliminary or final (then
        signed at once). Raises `NotFound` when the study is not stored (or not visible)."""
        principal = self.archive.permit(principal, Action.REPORT, draft.study_instance_uid)
        draft = _checked(draft)
        if draft.status == AMENDED:
            raise InvalidRequest("a report is amended by updating a final one with status"
                                 " 'amended', not created amended")
        header, classes = self._study(draft, principal)
        now = _now()
        row = ReportRow(study_instance_uid=draft.study_instance_uid,
                        patient_id=str(header.get("PatientID", "")),
                        issuer_of_patient_id=str(header.get("IssuerOfPatientID", "")),
                        status=DRAFT, findings=draft.findings, conclusion=draft.conclusion,
                        based_on=draft.based_on, key_images=" ".join(draft.key_images),
                        author=principal.name, signer="", signer_certificate="",
                        amends=None, version=1, created_at=now, updated_at=now,
                        pdf_sha256="", pdf_sop_instance_uid="", sr_sop_instance_uid="")
        if draft.status in _EDITABLE:
            row.status = draft.status
            with self._changing() as session:
                session.add(row)
                session.flush()
                self._audit(session, principal, row, "report-create",
                            f"report {row.id} created {row.status}")
                return report_of(row)
        with self._changing() as session:  # final at once: the row first, then signed
            session.add(row)
            session.flush()
            self._audit(session, principal, row, "report-create", f"report {row.id} created")
            report_id = row.id
        return self._sign(report_id, FINAL, header, classes, principal, None)

    def update(self, report_id: int, draft: ReportDraft, *, if_version: int | None = None,
               principal: Principal | None = None) -> Report:
        """Change a draft/preliminary report (to draft, preliminary or final = sign), or
        amend a final one (status 'amended': a new version; returns the new one)."""
        current = self.get(report_id, principal=principal)
        principal = self.archive.permit(principal, Action.REPORT, current.study_instance_uid)
        draft = _checked(draft)
        if draft.study_instance_uid and draft.study_instance_uid != current.study_instance_uid:
            raise InvalidRequest(f"report {report_id} is on study "
                                 f"{current.study_instance_uid}, not "
                                 f"{draft.study_instance_uid}: a report cannot move")
        if if_version is not None and if_version != current.version:
            raise PreconditionFailed(f"report {report_id} is at version {current.version}, "
                                     f"not {if_version}: read it again, then retry")
        draft = ReportDraft(current.study_instance_uid, draft.status, draft.findings,
                            draft.conclusion, draft.based_on or current.based_on,
                            draft.key_images)
        if current.status in (FINAL, AMENDED):
            if draft.status != AMENDED:
                raise Conflict(f"report {report_id} is {current.status} (signed): it can only"
                               " be amended (status 'amended'), which makes a new version")
            return self._amend(current, draft, principal)
        if draft.status == AMENDED:
            raise Conflict(f"report {report_id} is {current.status}: only a signed report "
                           "can be amended")
        header, classes = self._study(draft, principal)
        with self._changing() as session:
            row = self._row(session, report_id)
            before = row.status
            row.findings, row.conclusion = draft.findings, draft.conclusion
            row.based_on, row.key_images = draft.based_on, " ".join(draft.key_images)
            row.status = draft.status if draft.status in _EDITABLE else before
            row.version += 1
            row.updated_at = _now()
            self._audit(session, principal, row, "report-update",
                        f"report {report_id} version {row.version}: {before} -> {row.status}")
            if draft.status in _EDITABLE:
                return report_of(row)
        return self._sign(report_id, FINAL, header, classes, principal, None)

    def _amend(self, current: Report, draft: ReportDraft, principal: Principal) -> Report:
        header, classes = self._study(draft, principal)
        now = _now()
        with self._changing() as session:
            previous = self._row(session, current.id)
            for later in session.scalars(select(ReportRow.id).where(
                    ReportRow.amends == current.id)):
                raise Conflict(f"report {current.id} was already amended by report {later}:"
                               " amend that one")
            row = ReportRow(study_instance_uid=previous.study_instance_uid,
                            patient_id=previous.patient_id,
                            issuer_of_patient_id=previous.issuer_of_patient_id,
                            status=DRAFT, findings=draft.findings,
                            conclusion=draft.conclusion, based_on=draft.based_on,
                            key_images=" ".join(draft.key_images), author=principal.name,
                            signer="", signer_certificate="", amends=previous.id, version=1,
                            created_at=now, updated_at=now, pdf_sha256="",
                            pdf_sop_instance_uid="", sr_sop_instance_uid="")
            session.add(row)
            session.flush()
            self._audit(session, principal, row, "report-create",
                        f"report {row.id} created to amend report {previous.id}")
            new_id = row.id
        return self._sign(new_id, AMENDED, header, classes, principal, current.id)

    def _sign(self, report_id: int, status: str, header: pydicom.Dataset,
              classes: dict[str, tuple[str, str]], principal: Principal,
              amends: int | None) -> Report:
        """Render and store the PDF and SR, then mark the row signed (audit: PDF hash)."""
        with self.reading() as session:
            row = self._row(session, report_id)
            current = report_of(row)
        signed_at = _now()
        missing = [uid for uid in current.key_images if uid not in classes]
        if missing:
            raise InvalidRequest(f"key image {missing[0]} is not an instance of study "
                                 f"{current.study_instance_uid}")
        signed = SignedReport(report_id, status, current.findings, current.conclusion,
                              principal.name, signed_at,
                              tuple((classes[u][0], u) for u in current.key_images),
                              {u: classes[u][1] for u in current.key_images})
        pdf = render_pdf(signed, header, self.hospital)
        if self.signer is not None:  # the stored and audited PDF is the signed one
            pdf = self.signer.sign(pdf, signer_name=principal.name,
                                   reason=f"report {report_id} signed {status}")
        digest = hashlib.sha256(pdf).hexdigest()
        pdf_uid, pdf_bytes = encapsulated_pdf(signed, header, pdf)
        sr_uid, sr_bytes = text_sr(signed, header)
        for data in (pdf_bytes, sr_bytes):
            self.archive.ingest(data, received_from=f"report {report_id}",
                                principal=principal)
        with self._changing() as session:
            row = self._row(session, report_id)
            row.status, row.signer, row.signed_at = status, principal.name, signed_at
            row.pdf_sha256, row.pdf_sop_instance_uid = digest, pdf_uid
            row.sr_sop_instance_uid = sr_uid
            row.signer_certificate = _certificate_of(session, principal)
            row.version += 1
            row.updated_at = signed_at
            self._audit(session, principal, row, "report-sign",
                        f"report {report_id} signed {status}"
                        + (f" (amends report {amends})" if amends else "")
                        + f"; PDF sha256 {digest}; Encapsulated PDF {pdf_uid}; SR {sr_uid}")
            if self.oru_outbox:  # with the signature, so no signed report goes unsent
                session.add(OruOutboxRow(report_id=report_id, status="pending",
                                         created_at=signed_at, next_attempt_at=signed_at,
                                         attempts=0, last_error="", control_id="", peer=""))
            return report_of(row)

    # ------------------------------------------------------------------ reads
    def get(self, report_id: int, *, principal: Principal | None = None) -> Report:
        with self.reading() as session:
            row = session.get(ReportRow, report_id)
            report = report_of(row) if row is not None else None
        if report is None:
            self.archive.permit(principal, Action.VIEW)
            raise NotFound(f"report {report_id} does not exist")
        principal = self.archive.permit(principal, Action.VIEW, report.study_instance_uid)
        self.archive.audit("report-read", principal.actor, report.patient_id,
                           report.study_instance_uid, detail=f"report {report_id}",
                           role=principal.role.value, source=principal.source)
        return report

    def search(self, *, patient_ids: tuple[str, ...] | None = None,
               study_uids: tuple[str, ...] | None = None, statuses: tuple[str, ...] = (),
               limit: int = 100, principal: Principal | None = None) -> list[Report]:
        """Reports matching every given criterion (None: any), newest first, of the
        studies the principal may view."""
        principal = self.archive.permit(principal, Action.QUERY)
        stmt = select(ReportRow).order_by(ReportRow.id.desc()).limit(max(1, min(limit, 1000)))
        if patient_ids is not None:
            stmt = stmt.where(ReportRow.patient_id.in_(patient_ids))
        if study_uids is not None:
            stmt = stmt.where(ReportRow.study_instance_uid.in_(study_uids))
        if statuses:
            stmt = stmt.where(ReportRow.status.in_(statuses))
        with self.reading() as session:
            found = [report_of(r) for r in session.scalars(stmt)]
        visible = []
        for report in found:
            try:
                self.archive.permit(principal, Action.VIEW, report.study_instance_uid)
            except Exception:  # noqa: BLE001 - not visible to this caller: left out
                continue
            visible.append(report)
        patients = {r.patient_id for r in visible}
        self.archive.audit("query", principal.actor,
                           next(iter(patients)) if len(patients) == 1 else "",
                           detail=f"reports: {len(visible)} matches",
                           role=principal.role.value, source=principal.source)
        return visible

    # ------------------------------------------------------------------ internals
    def _study(self, draft: ReportDraft, principal: Principal
               ) -> tuple[pydicom.Dataset, dict[str, tuple[str, str]]]:
        """The study's patient/study header (from its first instance) and, per SOP
        Instance UID, its (SOP Class UID, Series Instance UID)."""
        records = self.archive.instances(draft.study_instance_uid, principal=principal)
        classes = {r.sop_instance_uid: (r.sop_class_uid, r.series_instance_uid)
                   for r in records}
        missing = [uid for uid in draft.key_images if uid not in classes]
        if missing:
            raise InvalidRequest(f"key image {missing[0]} is not an instance of study "
                                 f"{draft.study_instance_uid}")
        data = self.archive.read_instance(records[0])
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        return header, classes

    @contextmanager
    def _changing(self) -> Iterator[Session]:
        # The archive's write session and lock: report rows live in the index database.
        with self.archive._write_lock, self.archive._write() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self.archive._read() as session:
            yield session

    @staticmethod
    def _row(session: Session, report_id: int) -> ReportRow:
        row = session.get(ReportRow, report_id)
        if row is None:
            raise NotFound(f"report {report_id} does not exist")
        return row

    @staticmethod
    def _audit(session: Session, principal: Principal, row: ReportRow, action: str,
               detail: str) -> None:
        append(session, AuditRecord(action, principal.actor, principal.role.value,
                                    principal.source, row.patient_id,
                                    row.study_instance_uid, detail=detail))
        log.info("%s by %s: %s", action, principal.actor, detail)
