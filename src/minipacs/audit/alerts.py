"""Abnormal-access alerts: rules over the audit trail that flag what a security officer
must look at.

| rule | fires when |
|---|---|
| `many-patients` | one principal viewed or downloaded more than N patients' studies in an hour |
| `bulk-download` | one principal downloaded more than N studies in an hour |
| `after-hours` | a person (account or share link) read patient data outside working hours |
| `failed-logins` | more than N failed logins from one address in 15 minutes |
| `share-many-addresses` | one share link was used from more than N addresses |
| `break-glass` | someone opened a restricted patient's study with a stated reason |

A monitor scans the events appended since its last scan (every node runs one; each
alert is raised once, the unique (rule, subject, window) row decides which node does),
stores the alert and appends a `security-alert` event in the same transaction. Alerts
are listed at `GET /admin/alerts`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine, distinct, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from minipacs.audit.chain import AuditRecord, append, utc_now
from minipacs.config import Settings
from minipacs.index.models import AuditEvent, SecurityAlert

log = logging.getLogger(__name__)

READS = ("view", "download", "query")
_PEOPLE = ("user:", "share:")


@dataclass(frozen=True)
class AlertRules:
    patients_per_hour: int = 50
    downloads_per_hour: int = 100
    failed_logins_per_15_min: int = 10
    share_addresses: int = 3
    working_hours: str = "06:00-20:00"
    time_zone: str = "Asia/Ho_Chi_Minh"

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertRules:
        return cls(settings.alert_patients_per_hour, settings.alert_downloads_per_hour,
                   settings.alert_failed_logins, settings.alert_share_addresses,
                   settings.alert_working_hours, settings.alert_timezone)

    def hours(self) -> tuple[time, time]:
        start, _, end = self.working_hours.partition("-")
        return time.fromisoformat(start.strip()), time.fromisoformat(end.strip())

    def zone(self) -> timezone | ZoneInfo:
        try:
            return ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("time zone %r unknown here; working hours are taken as UTC+7",
                        self.time_zone)
            return timezone(timedelta(hours=7))


@dataclass(frozen=True)
class Alert:
    id: int
    at: datetime
    rule: str
    subject: str
    time_window: str
    detail: str
    acknowledged_by: str

    def as_json(self) -> dict[str, object]:
        return {**self.__dict__, "at": self.at.isoformat() + "Z"}


class AlertMonitor:
    def __init__(self, engine: Engine, write_engine: Engine | None = None,
                 rules: AlertRules | None = None) -> None:
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(write_engine or engine, expire_on_commit=False)
        self.rules = rules or AlertRules()
        self._last_seq: int | None = None
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- scanning
    def scan(self) -> list[Alert]:
        """Evaluate every rule against the events appended since the last scan (on the
        first scan: the last hour's); return the alerts this call raised."""
        with self._lock, self._read() as s:
            if self._last_seq is None:
                since = utc_now() - timedelta(hours=1)
                first = s.scalar(select(func.min(AuditEvent.seq))
                                 .where(AuditEvent.at >= since))
                self._last_seq = (first or 1) - 1
            new = list(s.scalars(select(AuditEvent).where(AuditEvent.seq > self._last_seq)
                                 .order_by(AuditEvent.seq).limit(20_000)))
            if not new:
                return []
            self._last_seq = new[-1].seq or self._last_seq
            candidates = list(self._evaluate(s, new))
        raised = []
        for rule, subject, window, detail in candidates:
            alert = self._raise(rule, subject, window, detail)
            if alert is not None:
                raised.append(alert)
        return raised

    def _evaluate(self, s: Session, new: list[AuditEvent]
                  ) -> Iterable[tuple[str, str, str, str]]:
        r = self.rules
        now = utc_now()
        hour_ago, quarter_ago = now - timedelta(hours=1), now - timedelta(minutes=15)
        hour_key, quarter_key = f"{now:%Y-%m-%dT%H}", f"{now:%Y-%m-%dT%H}:{now.minute // 15}"
        readers = {e.actor for e in new if e.action in ("view", "download")
                   and e.outcome == "success"}
        for actor in readers:
            patients = s.scalar(select(func.count(distinct(AuditEvent.patient_id))).where(
                AuditEvent.actor == actor, AuditEvent.action.in_(("view", "download")),
                AuditEvent.patient_id != "", AuditEvent.at >= hour_ago)) or 0
            if patients > r.patients_per_hour:
                yield ("many-patients", actor, hour_key,
                       f"{actor} opened {patients} patients' studies within an hour "
                       f"(threshold {r.patients_per_hour})")
            downloads = s.scalar(select(func.count()).where(
                AuditEvent.actor == actor, AuditEvent.action == "download",
                AuditEvent.outcome == "success", AuditEvent.at >= hour_ago)) or 0
            if downloads > r.downloads_per_hour:
                yield ("bulk-download", actor, hour_key,
                       f"{actor} downloaded {downloads} studies within an hour "
                       f"(threshold {r.downloads_per_hour})")
        start, end = r.hours()
        zone = r.zone()
        for e in new:
            if e.action in READS and e.outcome == "success" and e.actor.startswith(_PEOPLE):
                local = e.at.replace(tzinfo=UTC).astimezone(zone)
                if not _within(local.time(), start, end):
                    yield ("after-hours", e.actor, f"{local:%Y-%m-%d}",
                           f"{e.actor} read patient data at {local:%H:%M} "
                           f"({r.time_zone}), outside working hours {r.working_hours}"
                           + (f": patient {e.patient_id}" if e.patient_id else ""))
        for source in {e.source for e in new if e.action == "login" and e.outcome == "failure"}:
            failures = s.scalar(select(func.count()).where(
                AuditEvent.action == "login", AuditEvent.outcome == "failure",
                AuditEvent.source == source, AuditEvent.at >= quarter_ago)) or 0
            if failures > r.failed_logins_per_15_min:
                yield ("failed-logins", source or "?", quarter_key,
                       f"{failures} failed logins from {source or 'an unknown address'} "
                       f"within 15 minutes (threshold {r.failed_logins_per_15_min})")
        for e in new:
            if e.action == "break-glass" and e.outcome == "success":
                # One alert per (actor, study) a day: each glass broken is looked at.
                yield ("break-glass", f"{e.actor} {e.study_instance_uid}"[:128],
                       f"{e.at:%Y-%m-%d}",
                       f"{e.actor} broke the glass on restricted patient {e.patient_id}, "
                       f"study {e.study_instance_uid}: {e.detail}")
        for link in {e.actor for e in new if e.action == "share-use"}:
            addresses = s.scalar(select(func.count(distinct(AuditEvent.source))).where(
                AuditEvent.action == "share-use", AuditEvent.actor == link)) or 0
            if addresses > r.share_addresses:
                yield ("share-many-addresses", link, "ever",
                       f"{link} was used from {addresses} addresses "
                       f"(threshold {r.share_addresses})")

    def _raise(self, rule: str, subject: str, window: str, detail: str) -> Alert | None:
        try:
            with self._write() as s, s.begin():
                row = SecurityAlert(rule=rule, subject=subject[:128], time_window=window,
                                    detail=detail, acknowledged_by="", at=utc_now())
                s.add(row)
                s.flush()
                append(s, AuditRecord("security-alert", "system:alerts", source="",
                                      outcome="alert", detail=f"{rule}: {detail}"))
        except IntegrityError:
            return None  # raised already (by this node earlier, or by another one)
        log.warning("SECURITY ALERT %s: %s", rule, detail)
        return _alert(row)

    # ----------------------------------------------------------------- reading
    def alerts(self, *, include_acknowledged: bool = False, limit: int = 200) -> list[Alert]:
        stmt = select(SecurityAlert).order_by(SecurityAlert.id.desc()).limit(limit)
        if not include_acknowledged:
            stmt = stmt.where(SecurityAlert.acknowledged_at.is_(None))
        with self._read() as s:
            return [_alert(a) for a in s.scalars(stmt)]

    def acknowledge(self, alert_id: int, actor: str) -> Alert | None:
        with self._write() as s, s.begin():
            row = s.get(SecurityAlert, alert_id)
            if row is None:
                return None
            if row.acknowledged_at is None:
                row.acknowledged_at, row.acknowledged_by = utc_now(), actor
                append(s, AuditRecord("alert-acknowledge", actor,
                                      detail=f"alert {row.id} ({row.rule}: {row.subject})"))
            return _alert(row)



def _within(moment: time, start: time, end: time) -> bool:
    """Is `moment` in [start, end)? A range past midnight (22:00-06:00) wraps."""
    return start <= moment < end if start <= end else (moment >= start or moment < end)


def _alert(row: SecurityAlert) -> Alert:
    return Alert(row.id, row.at, row.rule, row.subject, row.time_window, row.detail,
                 row.acknowledged_by)
