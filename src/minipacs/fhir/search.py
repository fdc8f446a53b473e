"""FHIR search parameters → the DICOM `Filter` C-FIND and QIDO-RS use, plus the
`RecordConditions` a Filter cannot say; errors name the parameter and the value.

Parameters listed here are exactly those the CapabilityStatement declares (it is built
from `IMAGING_STUDY_PARAMS` and `PATIENT_PARAMS`). Unknown parameters are ignored, or
refused with ``Prefer: handling=strict`` (FHIR R4 §3.1.1.5.7 / http.html#search).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from minipacs.dicom.json_model import vr_of
from minipacs.dicom.matching import Filter, Match
from minipacs.errors import QueryError
from minipacs.fhir.ids import patient_key_of, study_uid_of
from minipacs.fhir.resources import DCM, DICOM_UID_SYSTEM
from minipacs.patient_identity import IdentitySystems
from minipacs.search_pages import RecordConditions

ParamType = Literal["token", "reference", "date", "string", "number"]
PAGE_PARAMS = {"_count": "number", "_getpagesoffset": "number"}
# name → (type, documentation), as the CapabilityStatement lists them.
IMAGING_STUDY_PARAMS: dict[str, tuple[ParamType, str]] = {
    "_id": ("token", "Study Instance UID; comma-separated for any of several"),
    "_lastUpdated": ("date", "when the study's index row last changed (eq/ge/gt/le/lt)"),
    "identifier": ("token", "urn:dicom:uid|urn:oid:<StudyInstanceUID>, or the accession "
                            "number (any other system, or none)"),
    "patient": ("reference", "Patient/<id>"),
    "subject": ("reference", "Patient/<id>"),
    "patient.identifier": ("token", "an identifier of the patient (system|value or value)"),
    "subject:Patient.identifier": ("token", "the same as patient.identifier"),
    "started": ("date", "study date, day precision (eq/ge/gt/le/lt, repeatable)"),
    "modality": ("token", "modality of a series (DCM code), comma-separated for any"),
    "status": ("token", "every stored study is 'available'; other codes match nothing"),
    "basedon": ("reference", "ServiceRequest/<id>: the study performed for that order"),
}
PATIENT_PARAMS: dict[str, tuple[ParamType, str]] = {
    "_id": ("token", "the Patient id (see docs/emr-integration.md)"),
    "identifier": ("token", "system|value (hospital ID, CCCD, BHYT; the configured and "
                            "alternative system URIs) or a value of any of them"),
    "name": ("string", "accent- and case-insensitive, from the start of any name part"),
    "family": ("string", "as name"),
    "given": ("string", "as name"),
    "birthdate": ("date", "eq/ge/gt/le/lt, day precision"),
    "gender": ("token", "male, female or other"),
}
_STATUSES = {"registered", "available", "cancelled", "entered-in-error", "unknown"}
_GENDERS = {"male": "M", "female": "F", "other": "O"}
_PREFIXES = ("eq", "ge", "gt", "le", "lt")
_FORMAT_PARAMS = {"_format", "_pretty"}
# Spellings of a supported parameter with a type modifier that changes nothing here.
_ALIASES = {"subject:Patient": "subject", "basedon:ServiceRequest": "basedon"}


@dataclass(frozen=True)
class Search:
    filter: Filter
    conditions: RecordConditions
    count: int
    offset: int
    ignored: tuple[str, ...]


def _single(key: str, value: str) -> Match:
    # FHIR tokens are exact: never DICOM wildcards, even when the value holds '*' or '?'.
    return Match(key, "single", (value,), vr_of(key.split(".")[-1]))


def _day_range(raw: str, name: str) -> tuple[date, date]:
    """The days a FHIR date of year, month or day precision covers."""
    try:
        if len(raw) == 4:
            return date(int(raw), 1, 1), date(int(raw), 12, 31)
        if len(raw) == 7:
            year, month = int(raw[:4]), int(raw[5:7])
            return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            return day, day
    except ValueError:
        pass
    raise QueryError(f"{name}={raw!r}: expected a date YYYY, YYYY-MM or YYYY-MM-DD after an "
                     "optional prefix eq, ge, gt, le or lt")


def _prefixed(value: str) -> tuple[str, str]:
    if value[:2] in _PREFIXES and not value[:2].isdigit():
        return value[:2], value[2:]
    return "eq", value


def date_match(key: str, values: list[str], name: str) -> Match:
    """Repeated FHIR date parameters (all must hold) → one DICOM DA range on `key`."""
    low, high = date.min, date.max
    for value in values:
        prefix, raw = _prefixed(value)
        first, last = _day_range(raw, name)
        if prefix in ("eq", "ge"):
            low = max(low, first)
        if prefix in ("eq", "le"):
            high = min(high, last)
        if prefix == "gt":
            low = max(low, last + timedelta(days=1))
        if prefix == "lt":
            high = min(high, first - timedelta(days=1))
    low_text = "" if low == date.min else low.strftime("%Y%m%d")
    high_text = "" if high == date.max else high.strftime("%Y%m%d")
    if low_text and low_text == high_text:
        return Match(key, "single", (low_text,), "DA")
    return Match(key, "range", (low_text, high_text), "DA")


def _instant(raw: str, name: str) -> datetime:
    try:
        if len(raw) in (4, 7, 10):
            return datetime.combine(_day_range(raw, name)[0], datetime.min.time())
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"{name}={raw!r}: expected a FHIR date or dateTime after an "
                         "optional prefix eq, ge, gt, le or lt") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _last_updated(values: list[str], name: str) -> tuple[datetime | None, datetime | None]:
    """`_lastUpdated` → [from, before) in UTC; a date covers its whole day."""
    start: datetime | None = None
    before: datetime | None = None
    for value in values:
        prefix, raw = _prefixed(value)
        first = _instant(raw, name)
        end = first + (timedelta(days=1) if len(raw) == 10 else timedelta(seconds=1))
        if len(raw) in (4, 7):
            end = datetime.combine(_day_range(raw, name)[1] + timedelta(days=1),
                                   datetime.min.time())
        lo = {"eq": first, "ge": first, "gt": end}.get(prefix)
        hi = {"eq": end, "le": end, "lt": first}.get(prefix)
        if lo is not None:
            start = lo if start is None else max(start, lo)
        if hi is not None:
            before = hi if before is None else min(before, hi)
    return start, before


def _number(name: str, value: str) -> int:
    if not value.isdigit():
        raise QueryError(f"{name}={value!r} must be a whole number, 0 or more")
    return int(value)


class SearchBuilder:
    """Turns one FHIR search's parameters into a `Search`."""

    def __init__(self, systems: IdentitySystems, page_size: int, max_page: int,
                 study_of_order: Callable[[str], str | None] | None = None) -> None:
        self.systems = systems
        # ServiceRequest id → the Study Instance UID it was performed as (basedon)
        self.study_of_order = study_of_order
        self.page_size = page_size
        self.max_page = max_page
        self.matches: list[Match] = []
        self.conditions: dict[str, object] = {}
        self.nothing = False

    def identifier(self, name: str, value: str) -> None:
        """A patient identifier token: system|value, |value or value."""
        if "," in value:
            raise QueryError(f"{name}={value!r}: several identifiers (comma) are not "
                             "supported; search once per identifier")
        system_uri, sep, ident = value.rpartition("|") if "|" in value else ("", "", value)
        if not ident:
            raise QueryError(f"{name}={value!r}: give the identifier's value "
                             "(system|value or value)")
        if not sep or not system_uri:
            self._set("any_patient_id", ident, name)
            return
        system = self.systems.named_by(system_uri)
        if system is None:
            self.nothing = True  # a system we do not know identifies no patient here
        elif not system.dicom_issuer:
            self.matches.append(_single("00100020", ident))
        else:
            self.matches += [_single("00101002.00100020", ident),
                             _single("00101002.00100021", system.dicom_issuer)]

    def patient_reference(self, name: str, value: str) -> None:
        # Patient/<id>, an absolute URL ending so, or the bare id (FHIR R4 search §3.1.1.4.5)
        logical = value.rsplit("Patient/", 1)[-1]
        key = patient_key_of(logical)
        if key is None:
            self.nothing = True
        else:
            self._set("patient_key", key, name)

    def _set(self, field: str, value: object, name: str) -> None:
        if field in self.conditions and self.conditions[field] != value:
            self.nothing = True  # two different patients: no study is of both
        self.conditions[field] = value

    def build(self, items: list[tuple[str, str]], resource: Literal["ImagingStudy", "Patient"],
              *, strict: bool) -> Search:
        params = IMAGING_STUDY_PARAMS if resource == "ImagingStudy" else PATIENT_PARAMS
        grouped: dict[str, list[str]] = {}
        ignored: list[str] = []
        count, offset = self.page_size, 0
        for name, value in items:
            if name == "_count":
                count = min(_number(name, value), self.max_page)
            elif name == "_getpagesoffset":
                offset = _number(name, value)
            elif name in params or name in _ALIASES:
                grouped.setdefault(_ALIASES.get(name, name), []).append(value.strip())
            elif name in _FORMAT_PARAMS:
                if name == "_format" and value not in ("json", "application/fhir+json",
                                                       "application/json"):
                    raise QueryError(f"_format={value!r}: only JSON is served")
            elif re.split(r"[:.]", name)[0] in params:
                # FHIR R4 search §3.1.1.4: a server SHALL reject a parameter with a modifier
                # (or chain) it does not support, rather than return more than was asked.
                raise QueryError(f"search parameter {name!r}: this modifier or chain is not "
                                 f"supported on {resource} (supported: "
                                 f"{', '.join(sorted(params))})")
            elif strict:
                raise QueryError(f"search parameter {name!r} is not supported on {resource}"
                                 f" (supported: {', '.join(sorted(params))}); sent with "
                                 "Prefer: handling=strict")
            else:
                ignored.append(name)
        for name, values in grouped.items():
            if name in ("started", "birthdate", "_lastUpdated"):
                self._dates(name, values, resource)
                continue
            for value in values:
                if not value:
                    raise QueryError(f"{name}= has no value")
                self._one(name, value, resource)
        conditions = RecordConditions(**self.conditions,  # type: ignore[arg-type]
                                      matches_nothing=self.nothing)
        fuzzy = any(m.fuzzy for m in self.matches)
        return Search(Filter(tuple(self.matches), fuzzy=fuzzy), conditions, count, offset,
                      tuple(ignored))

    def _dates(self, name: str, values: list[str], resource: str) -> None:
        if name == "_lastUpdated":
            start, before = _last_updated(values, name)
            self.conditions["updated_from"], self.conditions["updated_before"] = start, before
        else:
            self.matches.append(date_match("00080020" if name == "started" else "00100030",
                                           values, name))

    def _one(self, name: str, value: str, resource: str) -> None:
        if name == "_id" and resource == "ImagingStudy":
            uids = [u for u in (study_uid_of(v.strip()) for v in value.split(",")) if u]
            if not uids:
                self.nothing = True
            else:
                self.matches.append(Match("0020000D", "list" if len(uids) > 1 else "single",
                                          tuple(uids), "UI"))
        elif name == "_id":
            self.patient_reference(name, value)
        elif name == "identifier" and resource == "ImagingStudy":
            system_uri, sep, ident = value.rpartition("|") if "|" in value else ("", "", value)
            if ident.startswith("urn:oid:") and system_uri in ("", DICOM_UID_SYSTEM):
                uid = study_uid_of(ident.removeprefix("urn:oid:"))
                if uid is None:
                    self.nothing = True
                else:
                    self.matches.append(_single("0020000D", uid))
            elif system_uri == DICOM_UID_SYSTEM:
                self.nothing = True
            else:
                self.matches.append(_single("00080050", ident))
        elif name in ("identifier", "patient.identifier", "subject:Patient.identifier"):
            self.identifier(name, value)
        elif name in ("patient", "subject"):
            self.patient_reference(name, value)
        elif name == "modality":
            codes = []
            for token in value.split(","):
                system_uri, _, code = token.rpartition("|")
                if system_uri and system_uri != DCM:
                    raise QueryError(f"modality={value!r}: modalities are DICOM codes "
                                     f"(system {DCM})")
                codes.append(code.strip())
            self.matches.append(Match("00080061", "list" if len(codes) > 1 else "single",
                                      tuple(codes), "CS"))
        elif name == "status":
            statuses = {c.strip() for c in value.split(",")}
            if not statuses <= _STATUSES:
                raise QueryError(f"status={value!r}: expected one of "
                                 f"{', '.join(sorted(_STATUSES))}")
            if "available" not in statuses:
                self.nothing = True
        elif name == "basedon":
            study = self.study_of_order(value.rsplit("ServiceRequest/", 1)[-1]) \
                if self.study_of_order is not None else None
            if study is None:
                self.nothing = True
            else:
                self.matches.append(_single("0020000D", study))
        elif name == "gender":
            sex = _GENDERS.get(value)
            if sex is None:
                raise QueryError(f"gender={value!r}: expected male, female or other "
                                 "(unknown is not searchable: DICOM leaves sex empty)")
            self.matches.append(_single("00100040", sex))
        elif name in ("name", "family", "given"):
            # PN matching with fuzzy folding: case- and accent-insensitive, from the
            # start of any name component (index/query.py).
            self.matches.append(Match("00100010", "single", (value,), "PN", fuzzy=True))
