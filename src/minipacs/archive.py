"""The archive service: the one place that decides.

Every door (DIMSE, DICOMweb, FHIR, CLI) calls `Archive`; none opens a database session
or touches a blob itself. Durability rule: a blob is written (atomically, durably)
before its index rows are committed, and only a committed index row makes an instance
visible, so an acknowledged instance is always complete and an unacknowledged one is at
worst an orphan blob that `minipacs verify` sweeps.
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from minipacs.access import control, restricted
from minipacs.access.principal import Principal
from minipacs.access.restricted import RestrictedStudies, require_reason
from minipacs.access.roles import Action
from minipacs.access.tags import AccessTagRule, parse_tags, tags_by_rules
from minipacs.audit.chain import AuditEntry, AuditRecord, append, utc_now
from minipacs.audit.chain import prune as prune_audit
from minipacs.audit.chain import search as search_audit
from minipacs.audit.reads import ReadCoalescer
from minipacs.deidentify.models import DeidentificationExport, ExportedStudy
from minipacs.dicom.completeness import check_complete
from minipacs.dicom.header import ParsedInstance, parse_instance
from minipacs.dicom.item_matching import keep_matching_items
from minipacs.dicom.matching import Filter
from minipacs.dicom.patient_header import patched_header
from minipacs.emr import reconciliation
from minipacs.emr.changes import ChangeEvent, ChangePage, deletion_changes, ingest_changes
from minipacs.emr.changes import read_changes as read_change_feed
from minipacs.emr.changes import record as record_changes
from minipacs.emr.order_links import link_arriving_instance, order_pending
from minipacs.emr.reconciliation import Correction, Reconciliation
from minipacs.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    MinipacsError,
    NotFound,
    QueryError,
    StorageError,
    Unauthenticated,
)
from minipacs.index import access_tags
from minipacs.index.database import create_schema, is_sqlite, session_factory
from minipacs.index.durability import commit_durability_problems
from minipacs.index.group_commit import GroupCommitter
from minipacs.index.models import Instance, Patient, Series, Study
from minipacs.index.query import Level, compile_query
from minipacs.index.sequences import matching_rows, refresh_sequences
from minipacs.index.upsert import (
    Derived,
    derive,
    drop_if_empty,
    indexed_rows,
    insert_new_instance,
    lookup_statement,
    record_of,
    upsert_instance,
)
from minipacs.index.upsert import InstanceRecord as InstanceRecord  # the doors' record type
from minipacs.query_results import (
    Include,
    instance_matches,
    patient_matches,
    series_matches,
    study_matches,
)
from minipacs.search_pages import PageLevel, RecordConditions, SearchPage, search_page
from minipacs.storage import BlobStore, instance_key

log = logging.getLogger(__name__)

STUDY_INSTANCE_UID = "0020000D"

IngestStatus = Literal["stored", "duplicate", "replaced"]
_INDEX_ATTEMPTS = 5
# Arriving files up to this size are read into memory once (`Archive.ingest`).
_READ_WHOLE = 4 * 1024 * 1024
# Ingest's lookup (`indexed_rows`) with the order question asked in it, by whether the
# instance has an Accession Number.
_LOOKUP_WITH_ORDERS = {by_accession: lookup_statement(order_pending(by_accession))
                       for by_accession in (False, True)}

@dataclass(frozen=True)
class IngestResult:
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    status: IngestStatus
    size: int
    sha256: str
    transfer_syntax_uid: str


@dataclass(frozen=True)
class ServedInstance:
    """An instance as a door sends it: `length` bytes, in `chunks`."""

    length: int
    chunks: Iterator[bytes]


@dataclass(frozen=True)
class QueryResult:
    """Matches as DICOM JSON objects; `truncated` when more matched than were returned."""

    matches: list[dict[str, Any]]
    truncated: bool




class Archive:
    """Ingest, find, retrieve and delete instances; the index and blob store behind it.

    Thread-safe: DIMSE association threads and HTTP worker threads share one instance.
    """

    def __init__(
        self,
        store: BlobStore,
        engine: Engine,
        *,
        write_engine: Engine | None = None,
        duplicate_policy: Literal["replace", "reject"] = "replace",
        max_query_results: int = 1000,
        access_tag_rules: Sequence[AccessTagRule] = (),
    ) -> None:
        self.store = store
        self.engine = engine
        self.write_engine = write_engine or engine
        self.duplicate_policy = duplicate_policy
        self.max_query_results = max_query_results
        self._reads = ReadCoalescer()
        self.principal: Principal | None = None  # see acting_as
        self._read: sessionmaker[Session] = session_factory(engine)
        self._write: sessionmaker[Session] = session_factory(self.write_engine)
        self._restricted = RestrictedStudies(self._read)
        # Access tags (`access/tags.py`): the rules, parsed once, and the tags this node
        # knows a study has (so a series of 500 instances writes its tags once).
        self.access_tag_rules = tuple(access_tag_rules)
        self._tagged = access_tags.RecentStudyTags()
        # SQLite has one writer at a time anyway; queueing threads here keeps them off
        # its busy-wait. PostgreSQL needs no such lock (and nodes share nothing in-process).
        self._write_lock: AbstractContextManager[Any] = (
            threading.Lock() if is_sqlite(str(self.write_engine.url)) else nullcontext()
        )
        # Index writes of concurrent ingests share transactions (index/group_commit.py).
        self._committer = GroupCommitter(self._write, self._write_lock)
        create_schema(self.write_engine)

    # ------------------------------------------------------------------ ingest
    def ingest(self, source: bytes | Path, *, received_from: str = "",
               principal: Principal | None = None, take: bool = False) -> IngestResult:
        """Store one instance (Part-10 bytes or a file) and index it; durable on return.
        The `store` audit event commits with the index rows. `take`: `source` is a
        spool file its caller never writes again, which the store may make the blob
        itself (`BlobStore.put`).

        Raises `Forbidden` unless the principal may store, `InvalidInstance` (not DICOM,
        missing/bad UIDs; `IncompleteInstance` when the bytes cannot be read back whole),
        `Conflict` (same SOP Instance UID, other bytes, with duplicate_policy='reject') or
        `StorageError`.
        """
        principal = self.permit(principal, Action.STORE)
        # A file small enough is read once, here, for the checks, the header and the
        # hash below (each opened and read it again: ~0.1 ms a CT image); a large one
        # is walked and hashed from the file, never held in memory.
        header: bytes | Path = source
        if isinstance(source, Path) and source.stat().st_size <= _READ_WHOLE:
            header = source.read_bytes()
        # First, before anything is written: every element's declared length must fit
        # in what was received (a walk of element headers, pixels skipped, not decoded).
        check_complete(header)
        parsed = parse_instance(header)
        attrs = parsed.attributes
        if self.duplicate_policy == "reject":
            # Only this policy needs to know before the blob is written: writing would
            # overwrite the stored instance's blob with the refused bytes.
            existing = self._existing(attrs.sop_instance_uid)
            if existing is not None and existing.sha256 != parsed.sha256:
                raise Conflict(
                    f"SOP Instance UID {attrs.sop_instance_uid} is already stored with "
                    "other content; the duplicate policy is 'reject'"
                )
        key = instance_key(
            attrs.study_instance_uid, attrs.series_instance_uid, attrs.sop_instance_uid
        )
        # One durable blob write, then the rows. An identical duplicate rewrites the same
        # bytes under the same key (harmless, and rare) instead of costing every
        # instance a lookup before the write; the transaction below tells them apart.
        if parsed.part10 is not None:
            self.store.put(key, parsed.part10)
        else:  # the file handed over, or the bytes read (and hashed) above
            self.store.put(key, source if take else header, take=take)
        outcome = self._index_instance(parsed, key, derive(parsed), received_from,
                                       principal=principal)
        if outcome == "duplicate":
            log.info("instance %s already stored, identical bytes: nothing to do",
                     attrs.sop_instance_uid)
            return self._result(parsed, "duplicate")
        replaced = outcome
        if replaced is not None and replaced.blob_key != key:
            self.store.delete(replaced.blob_key)
        status: IngestStatus = "stored"
        if replaced is not None and replaced.sha256 != parsed.sha256:
            status = "replaced"
        log.info("%s %s (%s, %d bytes) from %s", status, attrs.sop_instance_uid,
                 attrs.modality or "?", parsed.size, received_from or "?")
        return self._result(parsed, status)

    def _result(self, parsed: ParsedInstance, status: IngestStatus) -> IngestResult:
        a = parsed.attributes
        return IngestResult(
            a.sop_instance_uid, a.sop_class_uid, a.study_instance_uid, a.series_instance_uid,
            status, parsed.size, parsed.sha256, a.transfer_syntax_uid,
        )

    def _existing(self, sop_instance_uid: str) -> InstanceRecord | None:
        records = self._instances(sop_instance_uid=sop_instance_uid, missing_ok=True)
        return records[0] if records else None

    def _index_instance(
        self, parsed: ParsedInstance, key: str, derived: Derived, received_from: str,
        *, principal: Principal | None = None, rewrite_identical: bool = False,
    ) -> InstanceRecord | None | Literal["duplicate"]:
        """Commit `_record_instance` through the group committer (one transaction and
        one fsync shared with the instances other threads are storing meanwhile);
        returns once it is durable.

        Retries on unique-key races (another node or thread inserting the same patient,
        study or series at the same moment) and failed commits."""
        tags = self._tags_to_add(parsed, principal)
        last_error: Exception | None = None
        for attempt in range(_INDEX_ATTEMPTS):
            try:
                done = self._committer.run(
                    lambda session: self._record_instance(session, parsed, key, derived,
                                                          received_from, principal,
                                                          rewrite_identical, tags))
                # Only once committed: the study's later instances skip the tags' INSERT.
                self._tagged.remember(parsed.attributes.study_instance_uid, tags)
                return done
            except (IntegrityError, OperationalError) as exc:
                last_error = exc
                log.debug("index attempt %d for %s failed: %s", attempt + 1,
                          parsed.attributes.sop_instance_uid, exc)
        raise StorageError(
            f"could not index {parsed.attributes.sop_instance_uid} after "
            f"{_INDEX_ATTEMPTS} attempts: {last_error}"
        )

    def _record_instance(
        self, session: Session, parsed: ParsedInstance, key: str, derived: Derived,
        received_from: str, principal: Principal | None, rewrite_identical: bool = False,
        tags: frozenset[str] = frozenset(),
    ) -> InstanceRecord | None | Literal["duplicate"]:
        """Everything one arriving instance writes to the index, in the caller's
        transaction: the patient → study → series → instance rows and the principal's
        `store` (or `replace`) audit event. A step every stored instance needs is one
        more line here. Returns the record it replaced, if any, or "duplicate" (same
        bytes already indexed under this key: nothing written, unless
        `rewrite_identical`)."""
        a = parsed.attributes
        replaced = None
        # One statement reads what the instance meets: its own row if indexed, its
        # patient's, study's and series' rows, and whether an order waits for its study.
        rows = indexed_rows(session, a, _LOOKUP_WITH_ORDERS[bool(a.accession_number)])
        status = rows.indexed_as(parsed.sha256, key)
        if status == "identical" and not rewrite_identical:
            return "duplicate"
        created: list[str] = []  # "study", "series": the rows this instance made
        if status != "new" or not insert_new_instance(session, parsed, key, derived,
                                                      received_from, rows, created):
            # Replacements and reconciled patients take the ORM's path. Rows written with
            # Core earlier in this group transaction are not in the session's identity
            # map as they are now: have the ORM read them afresh.
            session.expire_all()
            replaced = upsert_instance(session, parsed, key, derived, received_from,
                                       created)
        # Orders: arriving images complete theirs (emr/order_links.py).
        link_arriving_instance(
            session, a, actor=principal.actor if principal else "system",
            role=principal.role.value if principal else "",
            source=principal.source if principal else received_from,
            pending=bool(rows.also[0]))
        if tags:
            access_tags.add_tags(session, a.study_instance_uid, tags)
        if principal is not None:
            changed = replaced is not None and replaced.sha256 != parsed.sha256
            detail = (f"SOP Instance {a.sop_instance_uid} replaced: sha256 "
                      f"{replaced.sha256} -> {parsed.sha256}"
                      if changed and replaced is not None else
                      f"SOP Instance {a.sop_instance_uid} ({a.modality or '?'}, "
                      f"{parsed.size} bytes) from {received_from or '?'}")
            append(session, AuditRecord(
                "replace" if changed else "store", principal.actor,
                principal.role.value, principal.source, a.patient_id,
                a.study_instance_uid, detail=detail))
        # Last before the commit (emr/changes.py: writers queue from here).
        record_changes(session, ingest_changes(
            a.study_instance_uid, a.series_instance_uid, a.sop_instance_uid,
            a.patient_id, a.issuer_of_patient_id, created, replaced is not None))
        return replaced

    # ------------------------------------------------------------------ query
    def find(
        self,
        level: Level,
        filt: Filter,
        *,
        principal: Principal | None = None,
        action: Action = Action.QUERY,
        include: Include = (),
        limit: int | None = None,
        offset: int = 0,
    ) -> QueryResult:
        """Matches at `level` as DICOM JSON, newest study first.

        `include` names extra attributes (tags as 8 hex digits) to return besides the
        level's own, or "all". At most `limit` (capped by max_query_results) are returned.
        Raises `Forbidden` unless `principal` may query (or do `action`, for which the
        query selects studies, e.g. a de-identified export); audited with the patients found.
        """
        principal = self.permit(principal, action)
        if principal.study_uids is not None:  # a share link sees its studies only
            filt = filt.within(STUDY_INSTANCE_UID, principal.study_uids)
        result = self._find(level, filt, include=include, limit=limit, offset=offset,
                            visible_tags=principal.access_tags)
        patients = sorted({_text(m.get("00100020")) for m in result.matches} - {""})
        self.audit(action.value, principal.actor, patients[0] if len(patients) == 1 else "",
                   detail=f"{level} {filt.describe()}: {len(result.matches)} matches"
                   + (f", patients {' '.join(patients[:50])}" if patients else ""),
                   role=principal.role.value, source=principal.source)
        return result

    def study_uids_of_patient(self, patient_id: str, issuer_of_patient_id: str = "",
                              visible_tags: frozenset[str] | None = None) -> list[str]:
        """Study Instance UIDs of one patient (for share links; the caller audits): those
        `visible_tags` (else the tags of the principal this archive acts as) let it see."""
        if visible_tags is None and self.principal is not None:
            visible_tags = self.principal.access_tags
        stmt = (select(Study.study_instance_uid).join(Patient, Study.patient_pk == Patient.id)
                .where(Patient.patient_id == patient_id,
                       access_tags.visible("STUDY", visible_tags)))
        if issuer_of_patient_id:
            stmt = stmt.where(Patient.issuer_of_patient_id == issuer_of_patient_id)
        with self._read() as session:
            return list(session.scalars(stmt.limit(self.max_query_results)))

    def _find(self, level: Level, filt: Filter, *, include: Include = (),
              limit: int | None = None, offset: int = 0,
              visible_tags: frozenset[str] | None = None) -> QueryResult:
        cap = min(limit or self.max_query_results, self.max_query_results)
        query = compile_query(level, filt, visible_tags)
        with self._read() as session:
            if query.sequence_keys:
                rows: Sequence[Any] = matching_rows(session, query.statement, level,
                                                    query.sequence_keys, limit=cap + 1,
                                                    offset=max(offset, 0))
            else:
                rows = session.execute(
                    query.statement.limit(cap + 1).offset(max(offset, 0))).all()
            truncated = len(rows) > cap
            rows = rows[:cap]
            if level == "PATIENT":
                matches = patient_matches(session, [r[0] for r in rows], include,
                                          visible_tags)
            elif level == "STUDY":
                matches = study_matches(session, rows, include)
            elif level == "SERIES":
                matches = series_matches(session, rows, include)
            else:
                matches = instance_matches(rows, include)
        for model in matches:
            keep_matching_items(model, query.sequence_keys)
        return QueryResult(matches, truncated)

    def search_page(
        self,
        level: PageLevel,
        filt: Filter,
        conditions: RecordConditions | None = None,
        *,
        principal: Principal | None = None,
        action: Action = Action.QUERY,
        study_uid: str | None = None,
        limit: int,
        offset: int = 0,
    ) -> SearchPage:
        """One page of patients or studies (with their series and instances) and how many
        matched in all (`search_pages.search_page`), for doors that page by offset.

        Like `find`: permitted for `principal` to `action` (query, or view for a read
        by id, with its `study_uid`: a share link may read its study), audited with the
        patients found; `limit` is capped by max_query_results."""
        principal = self.permit(principal, action, study_uid)
        limit = max(0, min(limit, self.max_query_results))
        conditions = conditions or RecordConditions()
        with self._read() as session:
            page = search_page(session, level, filt, conditions, limit=limit,
                               offset=max(offset, 0), visible_tags=principal.access_tags)
        patients = sorted({_text(m.get("00100020")) for m in page.matches} - {""})
        self.audit(action.value, principal.actor, patients[0] if len(patients) == 1 else "",
                   detail=f"{level} {filt.describe()} {conditions.describe()}: {page.total} matches"
                   + (f", patients {' '.join(patients[:50])}" if patients else ""),
                   role=principal.role.value, source=principal.source)
        return page

    # ------------------------------------------------------------------ change feed
    def changes(self, since: int, limit: int, *, principal: Principal | None = None
                ) -> ChangePage:
        """The change feed after sequence number `since` (`emr/changes.py`), for
        `principal` to query; audited as a query naming the patients in the page."""
        principal = self.permit(principal, Action.QUERY)
        if not 0 <= since < 2**63:  # a BIGINT column
            raise InvalidRequest(f"since={since}: a sequence number is 0 or more "
                                 "(0: from the beginning), below 2**63")
        with self._read() as session:
            page = read_change_feed(session, since, limit, principal.study_uids,
                                    principal.access_tags)
        patients = sorted({c.patient_id for c in page.changes} - {""})
        self.audit(Action.QUERY.value, principal.actor,
                   patients[0] if len(patients) == 1 else "",
                   detail=f"changes since {since}: {len(page.changes)} changes"
                   + (f", patients {' '.join(patients[:50])}" if patients else ""),
                   role=principal.role.value, source=principal.source)
        return page

    # ------------------------------------------------------------------ retrieve
    def instances(
        self,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
        *,
        principal: Principal | None = None,
        action: Action = Action.VIEW,
    ) -> list[InstanceRecord]:
        """Stored instances of a study, series or one instance, in series/instance order,
        for `principal` to `action` (view: what a viewer shows; download: files).

        Raises `NotFound` naming what was asked for when nothing matches, `Forbidden`
        when the principal may not; audited once per study and window (`audit/reads.py`).
        """
        principal = self.permit(principal, action, study_instance_uid)
        records = self._instances(study_instance_uid, series_instance_uid, sop_instance_uid,
                                  visible_tags=principal.access_tags)
        self._break_glass(principal, action, {r.study_instance_uid for r in records})
        self._audit_read(principal, action, records)
        if study_instance_uid is None and principal.study_uids is not None:
            for record in records:
                self.permit(principal, action, record.study_instance_uid)
        return records

    def _instances(
        self,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
        *,
        missing_ok: bool = False,
        visible_tags: frozenset[str] | None = None,
    ) -> list[InstanceRecord]:
        """A study outside `visible_tags` is "not in the archive": existence not revealed."""
        stmt = (
            select(Instance, Series, Study, Patient)
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
            .join(Patient, Study.patient_pk == Patient.id)
            .where(access_tags.visible("IMAGE", visible_tags))
        )
        if study_instance_uid is not None:
            stmt = stmt.where(Study.study_instance_uid == study_instance_uid)
        if series_instance_uid is not None:
            stmt = stmt.where(Series.series_instance_uid == series_instance_uid)
        if sop_instance_uid is not None:
            stmt = stmt.where(Instance.sop_instance_uid == sop_instance_uid)
        stmt = stmt.order_by(Series.series_number, Series.id, Instance.instance_number,
                             Instance.id)
        with self._read() as session:
            records = [record_of(*row) for row in session.execute(stmt)]
        if not records and not missing_ok:
            raise NotFound(_describe(study_instance_uid, series_instance_uid, sop_instance_uid)
                           + " is not in the archive")
        return records

    def metadata(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
        *,
        principal: Principal | None = None,
    ) -> list[str]:
        """Stored DICOM JSON texts (one per instance) with BulkDataURI placeholders.

        A view of the study by `principal`: permitted and audited as `instances` is."""
        principal = self.permit(principal, Action.VIEW, study_instance_uid)
        self._break_glass(principal, Action.VIEW, {study_instance_uid})
        stmt = (
            select(Instance.metadata_json)
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
            .where(Study.study_instance_uid == study_instance_uid,
                   access_tags.visible("STUDY", principal.access_tags))
        )
        if series_instance_uid is not None:
            stmt = stmt.where(Series.series_instance_uid == series_instance_uid)
        if sop_instance_uid is not None:
            stmt = stmt.where(Instance.sop_instance_uid == sop_instance_uid)
        stmt = stmt.order_by(Series.series_number, Series.id, Instance.instance_number,
                             Instance.id)
        with self._read() as session:
            texts = list(session.scalars(stmt))
            patient_id = session.scalar(
                select(Patient.patient_id).join(Study, Study.patient_pk == Patient.id)
                .where(Study.study_instance_uid == study_instance_uid)) if texts else None
        if not texts:
            raise NotFound(_describe(study_instance_uid, series_instance_uid, sop_instance_uid)
                           + " is not in the archive")
        if self._reads.first_in_window(principal.actor, Action.VIEW, study_instance_uid):
            self.audit("view", principal.actor, patient_id or "", study_instance_uid,
                       detail="metadata", role=principal.role.value, source=principal.source)
        return texts

    # Every door's retrieve goes through these three: an instance whose patient was
    # reconciled (`record.patient_patch`) is served with its header patched, the blob
    # untouched (emr/reconciliation.py); otherwise the stored bytes as they are.
    def read_instance(self, record: InstanceRecord) -> bytes:
        if not record.patient_patch:
            return self.store.read(record.blob_key)
        with self.store.open(record.blob_key) as fh:
            header, offset = patched_header(_seekable(fh), dict(record.patient_patch))
            fh.seek(offset)
            return header + fh.read()

    def stream_instance(self, record: InstanceRecord, chunk_size: int = 1024 * 1024
                        ) -> Iterator[bytes]:
        return self.serve_instance(record, chunk_size).chunks

    def serve_instance(self, record: InstanceRecord, chunk_size: int = 1024 * 1024
                       ) -> ServedInstance:
        """The instance as served (its length first, for Content-Length), streamed."""
        if not record.patient_patch:
            return ServedInstance(record.size,
                                  self.store.iter_chunks(record.blob_key, chunk_size))
        fh = _seekable(self.store.open(record.blob_key))
        try:
            header, offset = patched_header(fh, dict(record.patient_patch))
        except BaseException:
            fh.close()
            raise

        def chunks() -> Iterator[bytes]:
            with fh:
                yield header
                fh.seek(offset)
                while chunk := fh.read(chunk_size):
                    yield chunk

        return ServedInstance(len(header) + record.size - offset, chunks())

    # ------------------------------------------------------------------ housekeeping
    def counts(self) -> dict[str, int]:
        with self._read() as session:
            return {
                "patients": session.scalar(select(func.count(Patient.id))) or 0,
                "studies": session.scalar(select(func.count(Study.id))) or 0,
                "series": session.scalar(select(func.count(Series.id))) or 0,
                "instances": session.scalar(select(func.count(Instance.id))) or 0,
            }

    def is_empty(self) -> bool:
        with self._read() as session:
            return session.scalar(select(Instance.id).limit(1)) is None

    def durability_problems(self) -> list[str]:
        """What in the index database's settings lets a power cut lose rows already
        committed, and so instances already acknowledged; empty when nothing does
        (`index/durability.py`)."""
        return commit_durability_problems(self.write_engine)

    def delete_study(self, study_instance_uid: str, *, principal: Principal | None = None
                     ) -> int:
        """Remove a study's rows, then its blobs. Returns the number of instances deleted.

        Rows go first: once they are gone no one can be served a blob we are deleting;
        a crash before the blobs are removed leaves orphans that `verify` sweeps.
        """
        principal = self.permit(principal, Action.DELETE, study_instance_uid)
        actor = principal.actor
        records = self._instances(study_instance_uid, visible_tags=principal.access_tags)
        with self._write_lock, self._write() as session, session.begin():
            study = session.scalars(
                select(Study).where(Study.study_instance_uid == study_instance_uid)
            ).one()
            series_ids = list(session.scalars(select(Series.id).where(Series.study_pk == study.id)))
            session.execute(delete(Instance).where(Instance.series_pk.in_(series_ids)))
            session.execute(delete(Series).where(Series.id.in_(series_ids)))
            session.delete(study)
            access_tags.forget_study(session, study_instance_uid)
            append(session, AuditRecord("delete", actor, principal.role.value,
                                        principal.source, records[0].patient_id,
                                        study_instance_uid,
                                        detail=f"{len(records)} instances deleted"))
            record_changes(session, deletion_changes(records))
        for record in records:
            self.store.delete(record.blob_key)
        self.delete_derived(study_instance_uid)
        self._tagged.forget(study_instance_uid)
        log.info("deleted study %s (%d instances) by %s", study_instance_uid, len(records),
                 actor or "?")
        return len(records)

    def audit(self, action: str, actor: str, patient_id: str = "", study_instance_uid: str = "",
              detail: str = "", *, role: str = "", source: str = "",
              outcome: str = "success") -> None:
        """Record who did what to which patient's data (its own transaction: for reads
        and refusals; a change records itself inside the change's transaction)."""
        self.record_audit(AuditRecord(action, actor, role, source, patient_id,
                                      study_instance_uid, outcome, detail))

    def record_audit(self, record: AuditRecord) -> None:
        # A connection, not an ORM session: one event alone needs no unit of work, and
        # every query and view records one before its answer leaves.
        with self._write_lock, self.write_engine.begin() as connection:
            append(connection, record)

    # ------------------------------------------------------------------ access and audit
    def acting_as(self, principal: Principal) -> Archive:
        """This archive, for calls made on behalf of `principal`.

        A shallow copy sharing every engine, store, lock and cache: doors make one per
        request or DIMSE message, so core calls carry their principal without each door
        passing it around. The archive a node builds has none: core calls on it without an
        explicit principal are refused (`Unauthenticated`), so a door cannot forget one."""
        bound = copy.copy(self)
        bound.principal = principal
        return bound

    def who(self, principal: Principal | None) -> Principal:
        """The principal of a call: the one given, else the one this archive acts as."""
        chosen = principal or self.principal
        if chosen is None:
            raise Unauthenticated("no principal for this call: the door must authenticate "
                                  "the caller first")
        return chosen

    def permit(self, principal: Principal | None, action: Action,
               study_uid: str | None = None) -> Principal:
        """The one permission check (`access.control`); a refusal is audited, then raised.
        Returns the principal the call acts for."""
        principal = self.who(principal)
        try:
            control.require(principal, action, study_uid)
        except Forbidden as exc:
            self.audit(action.value, principal.actor, study_instance_uid=study_uid or "",
                       detail=str(exc), role=principal.role.value, source=principal.source,
                       outcome="refused")
            raise
        return principal

    def _break_glass(self, principal: Principal, action: Action,
                     study_uids: set[str]) -> None:
        """Restricted patients (`access/restricted.py`): a read of their studies needs a
        break-the-glass reason, refused (audited) without one, audited with it. No query:
        the restricted studies are cached per node."""
        for study_uid in sorted(study_uids):
            key = self._restricted.patient_of(study_uid)
            if key is None:
                continue
            try:
                reason = require_reason(principal, key, study_uid)
            except Forbidden as exc:
                self.audit(action.value, principal.actor, key.patient_id, study_uid,
                           detail=str(exc), role=principal.role.value,
                           source=principal.source, outcome="refused")
                raise
            if reason is not None and self._reads.first_in_window(
                    principal.actor, f"break-glass {reason}", study_uid):
                self.audit("break-glass", principal.actor, key.patient_id, study_uid,
                           detail=f"{action.value}, reason: {reason}",
                           role=principal.role.value, source=principal.source)

    def _audit_read(self, principal: Principal, action: Action,
                    records: Sequence[InstanceRecord]) -> None:
        """One event per study read, per principal and window (`audit/reads.py`)."""
        by_study: dict[str, InstanceRecord] = {}
        for record in records:
            by_study.setdefault(record.study_instance_uid, record)
        for study_uid, record in by_study.items():
            if self._reads.first_in_window(principal.actor, action, study_uid):
                count = sum(1 for r in records if r.study_instance_uid == study_uid)
                self.audit(action.value, principal.actor, record.patient_id, study_uid,
                           detail=f"{count} instances", role=principal.role.value,
                           source=principal.source)

    def prune_audit(self, older_than_days: int, *, principal: Principal | None = None
                    ) -> int:
        """Retention: delete audit events older than `older_than_days` (the chain stays
        verifiable from the last pruned event; the pruning is an event). Returns the count."""
        principal = self.permit(principal, Action.MANAGE_USERS)
        if older_than_days < 1:
            raise InvalidRequest("keep at least one day of audit events")
        before = utc_now() - timedelta(days=older_than_days)
        with self._write_lock, self._write() as session, session.begin():
            return prune_audit(session, before, principal.actor)

    # ------------------------------------------------------------------ access tags
    def _tags_to_add(self, parsed: ParsedInstance, principal: Principal | None
                     ) -> frozenset[str]:
        """Tags this instance gives its study (the storing AE's, the rules'), minus those
        this node wrote for the study lately: usually nothing after the first instance."""
        tags = tags_by_rules(self.access_tag_rules, parsed.dataset) \
            if self.access_tag_rules else frozenset()
        if principal is not None:
            tags |= principal.store_tags
        return self._tagged.missing(parsed.attributes.study_instance_uid, tags)

    def study_access_tags(self, study_instance_uid: str, *,
                          principal: Principal | None = None) -> list[str]:
        """The access tags a study carries (admins); `NotFound` when no such study."""
        self.permit(principal, Action.MANAGE_USERS, study_instance_uid)
        with self._read() as session:
            if session.scalar(select(Study.id).where(
                    Study.study_instance_uid == study_instance_uid)) is None:
                raise NotFound(f"study {study_instance_uid} is not in the archive")
            return sorted(access_tags.tags_of(session, study_instance_uid))

    def change_study_access_tags(self, study_instance_uid: str, *, add: Sequence[str] = (),
                                 remove: Sequence[str] = (),
                                 principal: Principal | None = None) -> list[str]:
        """Add and remove access tags of a study (admins), audited in the same transaction.
        Returns the tags it carries afterwards; `NotFound` when no such study."""
        principal = self.permit(principal, Action.MANAGE_USERS, study_instance_uid)
        added, removed = parse_tags(add), parse_tags(remove)
        with self._write_lock, self._write() as session, session.begin():
            patient_id = session.scalar(
                select(Patient.patient_id).join(Study, Study.patient_pk == Patient.id)
                .where(Study.study_instance_uid == study_instance_uid))
            if patient_id is None:
                raise NotFound(f"study {study_instance_uid} is not in the archive")
            access_tags.add_tags(session, study_instance_uid, added - removed)
            access_tags.remove_tags(session, study_instance_uid, removed)
            now = sorted(access_tags.tags_of(session, study_instance_uid))
            append(session, AuditRecord(
                "study-tags", principal.actor, principal.role.value, principal.source,
                patient_id, study_instance_uid,
                detail=f"added {','.join(sorted(added - removed)) or '-'}, removed "
                f"{','.join(sorted(removed)) or '-'}: now {','.join(now) or '(none)'}"))
        self._tagged.forget(study_instance_uid)
        return now

    def restrict_patient(self, patient_id: str, issuer: str = "", reason: str = "", *,
                         principal: Principal | None = None) -> bool:
        """Flag a patient restricted (VIP, staff, sensitive): reading their studies then
        needs a break-the-glass reason. False when already restricted (reason updated)."""
        principal = self.permit(principal, Action.MANAGE_USERS)
        with self._write_lock, self._write() as session, session.begin():
            created = restricted.restrict(session, patient_id, issuer, reason, principal.actor)
        self._restricted.invalidate()
        return created

    def unrestrict_patient(self, patient_id: str, issuer: str = "", *,
                           principal: Principal | None = None) -> bool:
        principal = self.permit(principal, Action.MANAGE_USERS)
        with self._write_lock, self._write() as session, session.begin():
            lifted = restricted.unrestrict(session, patient_id, issuer, principal.actor)
        self._restricted.invalidate()
        return lifted

    def restricted_patients(self, principal: Principal | None = None
                            ) -> list[restricted.Restriction]:
        self.permit(principal, Action.MANAGE_USERS)
        with self._read() as session:
            return restricted.restrictions(session)

    def audit_events(self, principal: Principal | None = None, *, source: str = "",
                     **criteria: Any) -> list[AuditEntry]:
        """Search the audit trail (`audit.chain.search` criteria); reading it is audited."""
        principal = self.permit(principal, Action.READ_AUDIT)
        with self._read() as session:
            entries = search_audit(session, **criteria)
        self.audit("read-audit", principal.actor, criteria.get("patient_id") or "",
                   detail=" ".join(f"{k}={v}" for k, v in criteria.items() if v is not None),
                   role=principal.role.value, source=source or principal.source)
        return entries

    def record_deidentified_export(self, studies: Sequence[ExportedStudy]) -> None:
        """Keep a de-identified export's re-identification mapping (one row per study) in
        the index, in one transaction. PS3.15 E.1.1 allows the de-identifier to keep it;
        it never goes into the export."""
        with self._write_lock, self._write() as session, session.begin():
            session.add_all(DeidentificationExport(**vars(study)) for study in studies)

    # ------------------------------------------------------------------ reconciliation
    def update_patient(self, key: tuple[str, str], changes: dict[str, str], *, reason: str,
                       principal: Principal | None = None) -> Reconciliation:
        """Correct a patient's PatientName, PatientBirthDate or PatientSex (`key`:
        PatientID, IssuerOfPatientID or ""); every door then shows the new values, the
        stored bytes untouched (emr/reconciliation.py). Raises `Forbidden` without the
        reconcile permission, `NotFound`, `InvalidRequest` (bad keyword or value)."""
        principal = self.permit(principal, Action.RECONCILE)

        def work(session: Session) -> Reconciliation:
            done = reconciliation.update_patient(session, key, changes, reason,
                                                 principal.actor)
            changed = {k: f"{done.before[k]!r} -> {done.after[k]!r}"
                       for k in done.after if done.before[k] != done.after[k]}
            append(session, AuditRecord(
                "patient-update", principal.actor, principal.role.value, principal.source,
                key[0], detail=f"{reconciliation.describe(key)}: "
                + (", ".join(f"{k} {v}" for k, v in changed.items()) or "no change")
                + f"; {len(done.study_uids)} studies; reason: {reason}"))
            record_changes(session, [ChangeEvent("updated", "study", uid, patient_id=key[0],
                                                 issuer_of_patient_id=key[1])
                                     for uid in done.study_uids])
            return done

        return self._retried(work, f"updating {reconciliation.describe(key)}")

    def merge_patients(self, source: tuple[str, str], target: tuple[str, str], *,
                       reason: str, principal: Principal | None = None) -> Reconciliation:
        """Make every study of `source` the `target` patient's; `source` becomes an alias
        (later instances with it are filed under `target`). Audited under both patients.
        Raises `Forbidden`, `NotFound` (either unknown), `InvalidRequest` (into itself)."""
        principal = self.permit(principal, Action.RECONCILE)

        def work(session: Session) -> Reconciliation:
            done = reconciliation.merge_patients(session, source, target, reason,
                                                 principal.actor)
            detail = (f"{reconciliation.describe(source)} merged into "
                      f"{reconciliation.describe(target)}: {len(done.study_uids)} studies "
                      f"({' '.join(done.study_uids[:20])}); reason: {reason}")
            for patient_id in dict.fromkeys((source[0], target[0])):
                append(session, AuditRecord("patient-merge", principal.actor,
                                            principal.role.value, principal.source,
                                            patient_id, detail=detail))
            # The EMR polling the feed hears that these studies now belong to `target`.
            record_changes(session, [ChangeEvent("updated", "study", uid,
                                                 patient_id=target[0],
                                                 issuer_of_patient_id=target[1])
                                     for uid in done.study_uids])
            return done

        done = self._retried(work, f"merging {reconciliation.describe(source)}")
        self._restricted.invalidate()  # the studies moved to another patient key
        return done

    def _retried(self, work: Callable[[Session], Reconciliation], what: str
                 ) -> Reconciliation:
        """`work` in one write transaction, again when a concurrent writer (an instance
        of the same patient arriving on another node) made it fail on a key."""
        last_error: Exception | None = None
        for _attempt in range(_INDEX_ATTEMPTS):
            try:
                with self._write_lock, self._write() as session, session.begin():
                    return work(session)
            except (IntegrityError, OperationalError) as exc:
                last_error = exc
        raise StorageError(f"{what} failed after {_INDEX_ATTEMPTS} attempts: {last_error}")

    def patient_history(self, key: tuple[str, str], *, principal: Principal | None = None
                        ) -> list[Correction]:
        """The patient's corrections and merges, values before and after (audited)."""
        principal = self.permit(principal, Action.RECONCILE)
        with self._read() as session:
            entries = reconciliation.history(session, key)
            if not entries:
                reconciliation.find_patient(session, key)  # NotFound for an unknown one
        self.audit("patient-history", principal.actor, key[0],
                   detail=f"{reconciliation.describe(key)}: {len(entries)} corrections",
                   role=principal.role.value, source=principal.source)
        return entries

    # ------------------------------------------------------------------ derived objects
    # Rendered images and thumbnails, cached as blobs next to (not inside) the instances.
    # A name is a digest of what was derived (instance SHA-256 included) plus a suffix, so
    # a replaced instance never serves a stale image and no client text becomes a key.
    _DERIVED_NAME = re.compile(r"[0-9a-f]{16,64}\.[a-z0-9]{1,8}")

    def _derived_key(self, record: InstanceRecord, name: str) -> str:
        if not self._DERIVED_NAME.fullmatch(name):
            raise ValueError(f"derived object name {name!r} must be a hex digest and a suffix")
        return (f"derived/{record.study_instance_uid}/{record.series_instance_uid}/"
                f"{record.sop_instance_uid}/{name}")

    def read_derived(self, record: InstanceRecord, name: str) -> bytes | None:
        """A cached derived object of `record`, or None when not cached."""
        try:
            return self.store.read(self._derived_key(record, name))
        except NotFound:
            return None

    def write_derived(self, record: InstanceRecord, name: str, data: bytes, *,
                      durable: bool = True) -> None:
        """Cache a derived object; a failing store is logged, never fatal (it is a cache).
        `durable=False` skips the fsyncs, for a caller that recognises a torn cache file
        after a crash (`Imaging.rendered`): the durability rule is for stored instances."""
        try:
            self.store.put(self._derived_key(record, name), data, durable=durable)
        except StorageError as exc:
            log.warning("could not cache %s for %s: %s", name, record.sop_instance_uid, exc)

    def open_instance(self, record: InstanceRecord, *, as_stored: bool = False) -> BinaryIO:
        """The Part-10 file as served, open for reading (seekable); the caller closes it.
        Patched (reconciled patient): a temporary copy, header patched, pixels copied;
        `as_stored` for readers of pixels only (frames), which need no copy."""
        fh = _seekable(self.store.open(record.blob_key))
        if not record.patient_patch or as_stored:
            return fh
        with fh:
            header, offset = patched_header(fh, dict(record.patient_patch))
            copy = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)
            copy.write(header)
            fh.seek(offset)
            shutil.copyfileobj(fh, copy, 1024 * 1024)
        copy.seek(0)
        return cast(BinaryIO, copy)

    def delete_derived(self, study_instance_uid: str) -> None:
        """Drop every cached derived object of a study (after the study is deleted)."""
        for key in list(self.store.keys(f"derived/{study_instance_uid}/")):
            self.store.delete(key)

    # ------------------------------------------------------------------ retrieve sets
    def instances_matching(
        self,
        *,
        principal: Principal | None = None,
        patient_ids: Sequence[str] = (),
        study_uids: Sequence[str] = (),
        series_uids: Sequence[str] = (),
        sop_uids: Sequence[str] = (),
    ) -> list[InstanceRecord]:
        """Instances a C-MOVE/C-GET identifier selects (PS3.4 C.4.2.2.1: unique keys, each
        a single value or a UID list); every non-empty argument must match. Empty when
        nothing matches; raises `QueryError` when no key at all was given, `Forbidden`
        unless `principal` may download. Audited once per study."""
        principal = self.permit(principal, Action.DOWNLOAD)
        records = self._instances_matching(patient_ids=patient_ids, study_uids=study_uids,
                                           series_uids=series_uids, sop_uids=sop_uids,
                                           visible_tags=principal.access_tags)
        self._break_glass(principal, Action.DOWNLOAD, {r.study_instance_uid for r in records})
        self._audit_read(principal, Action.DOWNLOAD, records)
        return records

    def _instances_matching(
        self,
        *,
        patient_ids: Sequence[str] = (),
        study_uids: Sequence[str] = (),
        series_uids: Sequence[str] = (),
        sop_uids: Sequence[str] = (),
        visible_tags: frozenset[str] | None = None,
    ) -> list[InstanceRecord]:
        if not (patient_ids or study_uids or series_uids or sop_uids):
            raise QueryError("a retrieve needs at least one unique key (PatientID, "
                             "StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID)")
        stmt = (
            select(Instance, Series, Study, Patient)
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
            .join(Patient, Study.patient_pk == Patient.id)
            .where(access_tags.visible("IMAGE", visible_tags))
        )
        if patient_ids:
            stmt = stmt.where(Patient.patient_id.in_(list(patient_ids)))
        if study_uids:
            stmt = stmt.where(Study.study_instance_uid.in_(list(study_uids)))
        if series_uids:
            stmt = stmt.where(Series.series_instance_uid.in_(list(series_uids)))
        if sop_uids:
            stmt = stmt.where(Instance.sop_instance_uid.in_(list(sop_uids)))
        stmt = stmt.order_by(Study.id, Series.series_number, Series.id,
                             Instance.instance_number, Instance.id)
        with self._read() as session:
            return [record_of(*row) for row in session.execute(stmt)]

    def verify_instance(self, sop_instance_uid: str) -> tuple[InstanceRecord | None, str]:
        """Is this instance really stored? (record, "") when its blob is present and
        hashes to the SHA-256 recorded at ingest; otherwise (record or None, reason).
        Used for Storage Commitment (PS3.4 J.3.2.2), where a yes is a promise."""
        record = self._existing(sop_instance_uid)
        if record is None:
            return None, "not in the archive"
        digest = hashlib.sha256()
        try:
            for chunk in self.store.iter_chunks(record.blob_key):  # as stored
                digest.update(chunk)
        except (MinipacsError, OSError) as exc:
            return record, f"blob unreadable: {exc}"
        if digest.hexdigest() != record.sha256:
            log.error("instance %s: blob %s has sha256 %s, index says %s", sop_instance_uid,
                      record.blob_key, digest.hexdigest(), record.sha256)
            return record, "stored bytes do not match their recorded SHA-256"
        return record, ""

    def close(self) -> None:
        """Release database connections (the archive is unusable afterwards)."""
        self._committer.close()
        self.engine.dispose()
        self.write_engine.dispose()
        close = getattr(self.store, "close", None)  # stores with background work
        if close is not None:
            close()

    # ------------------------------------------------------------------ integrity
    def iter_instance_records(self, batch: int = 1000) -> Iterator[InstanceRecord]:
        """Every indexed instance, in insertion order, `batch` rows per query."""
        last = 0
        while True:
            stmt = (
                select(Instance, Series, Study, Patient)
                .join(Series, Instance.series_pk == Series.id)
                .join(Study, Series.study_pk == Study.id)
                .join(Patient, Study.patient_pk == Patient.id)
                .where(Instance.id > last)
                .order_by(Instance.id)
                .limit(batch)
            )
            with self._read() as session:
                rows = session.execute(stmt).all()
                records = [(row[0].id, record_of(*row)) for row in rows]
            if not records:
                return
            last = records[-1][0]
            yield from (record for _pk, record in records)

    def index_blob(self, key: str, *, actor: str = "") -> IngestResult:
        """Index an instance from a blob already in the store (`verify --rebuild-index`).

        The blob is the source of truth: its header fills the rows, its hash the sha256.
        Raises `InvalidInstance` when the blob is not a DICOM instance, or not whole.
        """
        blob = self.store.read(key)
        check_complete(blob)
        parsed = parse_instance(blob)
        replaced = self._index_instance(parsed, key, derive(parsed), actor or "verify",
                                        rewrite_identical=True)
        assert replaced != "duplicate"  # rewrite_identical: the blob's rows are rewritten
        a = parsed.attributes
        self.audit("reindex", actor, a.patient_id, a.study_instance_uid,
                   f"SOP Instance {a.sop_instance_uid} indexed from blob {key}")
        return self._result(parsed, "stored" if replaced is None else "replaced")

    def refresh_sequences(self, *, only_missing: bool = False) -> int:
        """Re-derive the sequences patients, studies and series keep for sequence
        matching from their instances' stored metadata (`verify --rebuild-index`; rows
        restored from an older backup). Returns the number of rows that changed."""
        with self._write_lock, self._write() as session, session.begin():
            changed = refresh_sequences(session, only_missing=only_missing)
        if changed:
            log.info("kept sequences of %d patient/study/series rows re-derived", changed)
        return changed

    def forget_instance(self, sop_instance_uid: str, *, actor: str = "", reason: str = ""
                        ) -> None:
        """Remove an instance's row (not its blob), and its series and study when emptied.

        For rows whose blob is gone: an index row must never point at a missing blob.
        """
        record = self._instances(sop_instance_uid=sop_instance_uid)[0]
        with self._write_lock, self._write() as session, session.begin():
            session.execute(delete(Instance).where(Instance.sop_instance_uid == sop_instance_uid))
            session.flush()
            drop_if_empty(session, record.series_instance_uid)
            append(session, AuditRecord(
                "forget", actor, patient_id=record.patient_id,
                study_instance_uid=record.study_instance_uid,
                detail=f"SOP Instance {sop_instance_uid} removed from the index: {reason}"))
            record_changes(session, [ChangeEvent(
                "deleted", "instance", record.study_instance_uid,
                record.series_instance_uid, sop_instance_uid, record.patient_id)])

    def pending_uploads(self) -> int:
        """Blobs acknowledged from the local spool but not yet in object storage."""
        pending = getattr(self.store, "pending", None)
        return int(pending()) if pending is not None else 0

    def wait_uploaded(self, timeout: float) -> bool:
        """Wait (at most `timeout` s) for spooled blobs to reach object storage."""
        wait = getattr(self.store, "wait_uploaded", None)
        return bool(wait(timeout)) if wait is not None else True


# ---------------------------------------------------------------------- helpers


def _seekable(fh: BinaryIO) -> BinaryIO:
    if fh.seekable():
        return fh
    with fh:
        return io.BytesIO(fh.read())


def _text(element: Any) -> str:
    """The first value of a DICOM JSON element as text ("" when absent)."""
    values = (element or {}).get("Value") or [""]
    return str(values[0])


def _describe(study: str | None, series: str | None, sop: str | None) -> str:
    if sop:
        return f"instance {sop}"
    if series:
        return f"series {series}"
    return f"study {study}"
