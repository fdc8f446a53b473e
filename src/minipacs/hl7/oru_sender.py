"""Signed reports delivered as HL7 v2.5 ORU^R01 over MLLP to the configured peer
(issue #14; the message is built by `oru.py`).

Durability: signing a report with MINIPACS_HL7_REPORT_PEER set writes an `hl7_report_outbox`
row in the transaction that marks the report signed (reports/service.py), so a signed
report is never missed, across restarts and peer outages. This sender (one per index: the
node's periodic machinery, worker 0 of `serve --workers N`) sends pending rows in `id`
order, one MLLP exchange each, bounded by MINIPACS_HL7_REPORT_TIMEOUT_SECONDS:

- frame (HL7 v2 MLLP, Appendix C of the v2.5 implementation guide): 0x0B, the message in
  UTF-8 (MSH-18 `UNICODE UTF-8`), 0x1C 0x0D; the answer is read up to its 0x1C 0x0D;
- an ACK whose MSA-1 is AA or CA (original or enhanced mode, HL7 v2.5 §2.9) and whose
  MSA-2 echoes our MSH-10 marks the row sent, in the transaction that audits the
  disclosure (`report-disclosure`, actor `hl7-oru`);
- AE/AR/CE/CR, a timeout, a refused or dropped connection are logged with the reason and
  kept on the row (`attempts`, `last_error`); the row is retried after
  `retry * 2**(attempts-1)` seconds, at most `retry_max`. Rows behind it wait: the peer
  receives a report's amendment (OBR-25 C) only after the report (F).

Each attempt has its own MSH-10 (`RPT<report>-<outbox row>-<attempt>`), so a peer that did
process a message whose ACK was lost can tell the repeat.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import hl7
import pydicom
from sqlalchemy import func, select

from minipacs.access.principal import system_principal
from minipacs.access.roles import Action
from minipacs.archive import Archive
from minipacs.audit.chain import AuditRecord, append
from minipacs.config import Settings
from minipacs.hl7.oru import OruParties, PatientIdentifier, oru_r01
from minipacs.index.models import Patient, ScheduledProcedureStep, Study
from minipacs.patient_identity import IdentitySystems
from minipacs.reports.models import OruOutboxRow, ReportRow
from minipacs.reports.service import Report, report_of
from minipacs.tls import client_context

log = logging.getLogger(__name__)

ACTOR = "hl7-oru"
START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\x0d"
_ACCEPTED = ("AA", "CA")  # HL7 table 0008
_BATCH = 50
_MAX_ACK_BYTES = 1024 * 1024


class OruNotDelivered(Exception):
    """The peer did not accept the message (the reason is the text)."""


@dataclass(frozen=True)
class OruSettings:
    host: str
    port: int
    parties: OruParties
    include_pdf: bool
    timeout: float
    retry: timedelta
    retry_max: timedelta
    tls: ssl.SSLContext | None = None  # None: plain TCP

    @property
    def peer(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_settings(cls, settings: Settings) -> OruSettings | None:
        """None when no ORU^R01 is sent (MINIPACS_HL7_REPORT_PEER empty)."""
        if not settings.hl7_report_peer:
            return None
        host, _, port = settings.hl7_report_peer.rpartition(":")
        s = settings
        return cls(host.strip("[]"), int(port),
                   OruParties(s.hl7_report_sending_application,
                              s.hl7_report_sending_facility or s.facility_name,
                              s.hl7_report_receiving_application,
                              s.hl7_report_receiving_facility),
                   s.hl7_report_include_pdf, s.hl7_report_timeout_seconds,
                   timedelta(seconds=s.hl7_report_retry_seconds),
                   timedelta(seconds=s.hl7_report_retry_max_seconds),
                   _client_tls(settings) if settings.hl7_report_tls else None)


def _client_tls(settings: Settings) -> ssl.SSLContext:
    """Our side of TLS to the ORU^R01 peer: its certificate checked against
    MINIPACS_HL7_REPORT_TLS_CA (or the system's CAs), ours (HL7_TLS_CERT) shown if it
    asks."""
    try:
        return client_context(settings.hl7_report_tls_ca, settings.hl7_tls_cert,
                              settings.hl7_tls_key)
    except OSError as exc:  # ssl.SSLError is one
        raise SystemExit(f"cannot set up TLS to the ORU^R01 peer "
                         f"{settings.hl7_report_peer}: {exc}") from None


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def exchange(host: str, port: int, message: str, timeout: float,
             tls: ssl.SSLContext | None = None) -> str:
    """Send one MLLP-framed message and return the peer's answer (text, unframed),
    inside TLS when `tls` is given (the peer's name checked against `host`).
    Raises `OSError` (refused, reset, timeout, a failed TLS handshake: `ssl.SSLError`)
    or `OruNotDelivered` (no answer)."""
    deadline = datetime.now(UTC) + timedelta(seconds=timeout)
    with _connect(host, port, deadline, tls) as sock:
        sock.settimeout(_left(deadline))
        sock.sendall(START_BLOCK + message.encode("utf-8") + END_BLOCK)
        answer = b""
        while END_BLOCK not in answer:
            left = (deadline - datetime.now(UTC)).total_seconds()
            if left <= 0:
                raise TimeoutError(f"no ACK within {timeout} s")
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                raise OruNotDelivered("the peer closed the connection without an ACK")
            answer += chunk
            if len(answer) > _MAX_ACK_BYTES:
                raise OruNotDelivered(f"the ACK is over {_MAX_ACK_BYTES} bytes")
    framed = answer[:answer.index(END_BLOCK)]
    start = framed.find(START_BLOCK)
    return framed[start + 1 if start >= 0 else 0:].decode("utf-8", errors="replace")


def _left(deadline: datetime) -> float:
    return max(0.001, (deadline - datetime.now(UTC)).total_seconds())


def _connect(host: str, port: int, deadline: datetime, tls: ssl.SSLContext | None
             ) -> socket.socket:
    """Connected (and the TLS handshake done) before `deadline`, or `OSError`."""
    sock = socket.create_connection((host, port), timeout=_left(deadline))
    if tls is None:
        return sock
    try:
        sock.settimeout(_left(deadline))
        return tls.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def check_ack(answer: str, control_id: str) -> None:
    """Nothing when `answer` accepts message `control_id`; `OruNotDelivered` naming
    MSA-1, MSA-2 and the error text (MSA-3 / ERR-8) otherwise."""
    try:
        ack = hl7.parse(answer.replace("\r\n", "\r").replace("\n", "\r"))
        msa = ack.segment("MSA")
    except Exception as exc:  # noqa: BLE001 - any unparsable answer is a refusal
        raise OruNotDelivered(f"the answer is not an HL7 ACK with MSA: {answer[:200]!r}"
                              ) from exc
    code = str(msa[1]) if len(msa) > 1 else ""
    echoed = str(msa[2]) if len(msa) > 2 else ""
    if code in _ACCEPTED and echoed == control_id:
        return
    reason = str(msa[3]) if len(msa) > 3 else ""
    try:
        err = ack.segment("ERR")
        reason = reason or (str(err[8]) if len(err) > 8 else str(err))
    except KeyError:
        pass
    if code in _ACCEPTED:
        raise OruNotDelivered(f"ACK {code} names message {echoed!r}, not {control_id!r}")
    raise OruNotDelivered(f"ACK {code or '(no MSA-1)'} for {control_id}"
                          + (f": {reason}" if reason else ""))


class OruSender:
    """Sends the outbox (`run_once`, from a `PeriodicTask`)."""

    def __init__(self, archive: Archive, oru: OruSettings, identity: IdentitySystems,
                 hospital_type: str) -> None:
        self.archive = archive.acting_as(system_principal(ACTOR, "hl7"))
        self.oru = oru
        self.identity = identity
        self.hospital_type = hospital_type

    def run_once(self) -> int:
        """Send due rows in order until one fails or none is due; how many were sent."""
        sent = 0
        with self.archive._read() as session:
            rows = list(session.scalars(
                select(OruOutboxRow).where(OruOutboxRow.status == "pending")
                .order_by(OruOutboxRow.id).limit(_BATCH)))
        for row in rows:
            if row.next_attempt_at > _now():
                break  # in order: later reports wait for this one
            if not self._send(row):
                break
            sent += 1
        return sent

    def _send(self, row: OruOutboxRow) -> bool:
        attempt = row.attempts + 1
        control_id = f"RPT{row.report_id}-{row.id}-{attempt}"
        try:
            try:
                report, message = self._message(row.report_id, control_id)
            except Exception as exc:  # noqa: BLE001 - kept on the row, retried
                raise OruNotDelivered(f"the ORU^R01 of report {row.report_id} cannot be "
                                      f"built: {type(exc).__name__}: {exc}") from exc
            check_ack(exchange(self.oru.host, self.oru.port, message, self.oru.timeout,
                               self.oru.tls),
                      control_id)
        except (OSError, OruNotDelivered) as exc:
            reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else str(exc)
            # min() on the exponent too: days of outage must not overflow timedelta
            delay = min(self.oru.retry * 2 ** min(attempt - 1, 30), self.oru.retry_max)
            log.warning("ORU^R01 of report %s to %s not delivered (attempt %d): %s; "
                        "retrying in %.1f s", row.report_id, self.oru.peer, attempt,
                        reason, delay.total_seconds())
            self._update(row.id, attempts=attempt, last_error=reason[:2000],
                         last_attempt_at=_now(), next_attempt_at=_now() + delay,
                         control_id=control_id)
            return False
        self._delivered(row, report, attempt, control_id)
        return True

    def _delivered(self, row: OruOutboxRow, report: Report, attempt: int,
                   control_id: str) -> None:
        """The row marked sent and the disclosure audited, in one transaction."""
        detail = (f"report {report.id} ({report.status}) sent as HL7 ORU^R01 to the MLLP "
                  f"peer {self.oru.peer}, message control id {control_id}")
        with self.archive._write_lock, self.archive._write() as session, session.begin():
            stored = session.get(OruOutboxRow, row.id)
            if stored is not None:
                stored.status, stored.attempts, stored.last_error = "sent", attempt, ""
                stored.last_attempt_at = stored.sent_at = _now()
                stored.control_id, stored.peer = control_id, self.oru.peer
            append(session, AuditRecord("report-disclosure", ACTOR, "admin", "hl7",
                                        report.patient_id, report.study_instance_uid,
                                        detail=detail))
        log.info("report %s (%s) delivered as ORU^R01 %s to %s", report.id, report.status,
                 control_id, self.oru.peer)

    def _update(self, row_id: int, **values: object) -> None:
        with self.archive._write_lock, self.archive._write() as session, session.begin():
            row = session.get(OruOutboxRow, row_id)
            if row is not None:
                for name, value in values.items():
                    setattr(row, name, value)

    def _message(self, report_id: int, control_id: str) -> tuple[Report, str]:
        """The report and its ORU^R01: PID-3 identifiers and name
        from the index's patient, OBR order numbers from the report's order (based_on),
        the accession number of the study (else the order's), the PDF if wanted."""
        with self.archive._read() as session:
            row = session.get(ReportRow, report_id)
            if row is None:
                raise ValueError(f"report {report_id} no longer exists")
            report = report_of(row)
            patient = session.execute(
                select(Patient, Study.accession_number).join(Study, Study.patient_pk
                                                              == Patient.id)
                .where(Study.study_instance_uid == report.study_instance_uid)).first()
            step = session.scalar(select(ScheduledProcedureStep).where(
                ScheduledProcedureStep.scheduled_procedure_step_id == report.based_on)) \
                if report.based_on else None
            if step is None:  # no named order: the study's own, if it has one
                step = session.scalar(select(ScheduledProcedureStep).where(
                    (ScheduledProcedureStep.performed_study_uid == report.study_instance_uid)
                    | (ScheduledProcedureStep.study_instance_uid
                       == report.study_instance_uid)).order_by(
                    ScheduledProcedureStep.id).limit(1))
        identifiers, name, accession = [], "", ""
        if patient is not None:
            person, accession = patient
            name = person.patient_name
            identifiers = self._identifiers(person)
        else:
            identifiers = [PatientIdentifier(report.patient_id, report.issuer_of_patient_id,
                                             self.hospital_type)]
        return report, oru_r01(
            report, self.oru.parties, identifiers, name, control_id=control_id, now=_now(),
            accession_number=accession or (step.accession_number if step else ""),
            placer_order=step.placer_order_number if step else "",
            filler_order=step.scheduled_procedure_step_id if step else "",
            pdf=self._pdf(report) if self.oru.include_pdf else None)

    def _identifiers(self, person: Patient) -> list[PatientIdentifier]:
        """PID-3: the hospital ID (its issuer, the hospital type), then each other ID
        (CCCD, BHYT, ...) with its issuer and its system's type, as the HL7 door reads."""
        model = json.loads(person.sequences_json or "{}")
        model["00100020"] = {"vr": "LO", "Value": [person.patient_id]}
        model["00100021"] = {"vr": "LO", "Value": [person.issuer_of_patient_id]}
        out = []
        for found in self.identity.identifiers_of(model):
            type_code = found.system.type_code if found.system else ""
            out.append(PatientIdentifier(found.value, found.issuer, type_code))
        return out

    def _pdf(self, report: Report) -> bytes | None:
        if not report.pdf_sop_instance_uid:
            return None
        records = self.archive.instances(report.study_instance_uid,
                                         sop_instance_uid=report.pdf_sop_instance_uid)
        if not records:
            return None
        data = pydicom.dcmread(io.BytesIO(self.archive.read_instance(records[0])),
                               force=True)
        document = bytes(data.EncapsulatedDocument)
        # PS3.3 C.24.2.1: the value is padded to even length; the length says the real one
        length = int(data.get("EncapsulatedDocumentLength", len(document)))
        return document[:length]


def outbox_counts(archive: Archive) -> dict[str, Any]:
    """For admins (action manage-aes): how many rows are pending and sent, and the
    pending ones that failed, with their last error."""
    archive.permit(None, Action.MANAGE_AES)
    with archive._read() as session:
        counts = dict(session.execute(select(OruOutboxRow.status, func.count())
                                      .group_by(OruOutboxRow.status)).all())
        failing = list(session.scalars(
            select(OruOutboxRow).where(OruOutboxRow.status == "pending",
                                       OruOutboxRow.attempts > 0)
            .order_by(OruOutboxRow.id).limit(100)))
    return {"pending": counts.get("pending", 0), "sent": counts.get("sent", 0),
            "failing": [{"report": r.report_id, "attempts": r.attempts,
                         "last_error": r.last_error,
                         "next_attempt_at": r.next_attempt_at.isoformat()}
                        for r in failing]}
