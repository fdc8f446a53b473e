"""Sequences the index keeps per patient, study and series, for sequence matching
(PS3.4 C.2.2.2.6) and for returning them.

`INDEXED_SEQUENCES` names them, each at the level whose module holds it. At ingest,
`entity_sequences` takes them from the instance's DICOM JSON and the upsert stores them
as DICOM JSON text in `sequences_json` of the patient, study and series rows,
overwritten by every instance like the other columns of those rows, except the
`ACCUMULATED_SEQUENCES`, which keep every distinct item any instance brought
(`accumulate`). NULL means the row was indexed before this was kept
(`refresh_sequences`, run by `verify --rebuild-index`, derives it from the stored
metadata); ``{}`` means the instances had none of them.

Matching is done in Python (`dicom.item_matching`) on the rows the SQL has already
narrowed (every other key, plus `prefilter`, a LIKE on the JSON text that every real
match satisfies), while the rows stream in query order, before offset and limit are
applied: so paging, limits and truncation stay exact on SQLite and PostgreSQL alike,
without their different JSON functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, func, or_, select, update
from sqlalchemy.orm import Session

from minipacs.dicom.item_matching import SequenceKey, dataset_matches
from minipacs.dicom.json_model import dumps, tag_key
from minipacs.dicom.matching import Match
from minipacs.index.levels import DEPTH, Level
from minipacs.index.models import Instance, Patient, Series, Study

# Sequence (tag) → the level whose row keeps it (PS3.4 Tables C.6-1 to C.6-3).
INDEXED_SEQUENCES: dict[str, Level] = {
    tag_key("OtherPatientIDsSequence"): "PATIENT",
    tag_key("ReferencedPatientSequence"): "PATIENT",
    tag_key("ReferencedStudySequence"): "STUDY",
    tag_key("ProcedureCodeSequence"): "STUDY",
    tag_key("RequestAttributesSequence"): "SERIES",
}
# Items gathered over every instance rather than taken from the newest: a patient's other
# identifiers (national ID/CCCD, insurance number) often arrive each on a different study,
# and the patient keeps them all, as `Patient.other_patient_ids` does.
ACCUMULATED_SEQUENCES = (tag_key("OtherPatientIDsSequence"),)
SequenceRow = type[Patient] | type[Study] | type[Series]
ROWS_KEEPING: dict[str, SequenceRow] = {"PATIENT": Patient, "STUDY": Study, "SERIES": Series}
# VRs whose values the prefilter can look for literally in the JSON text.
_LITERAL_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UI", "UC", "UR", "LT", "ST"}
_BATCH = 200


@dataclass(frozen=True)
class EntitySequences:
    """DICOM JSON text of the indexed sequences of one instance, per level."""

    patient: str
    study: str
    series: str


def entity_sequences(model: dict[str, Any]) -> EntitySequences:
    """Split an instance's DICOM JSON into the indexed sequences of each level."""
    kept: dict[Level, dict[str, Any]] = {"PATIENT": {}, "STUDY": {}, "SERIES": {}}
    for tag, level in INDEXED_SEQUENCES.items():
        if tag in model:
            kept[level][tag] = model[tag]
    return EntitySequences(dumps(kept["PATIENT"]), dumps(kept["STUDY"]), dumps(kept["SERIES"]))


def accumulate(current: str | None, new: str) -> str:
    """A row's kept sequences after one more instance (`new`, from `entity_sequences`):
    the instance's, except that each accumulated sequence also keeps the distinct items
    `current` had, those first."""
    if current is None or not any(tag in current for tag in ACCUMULATED_SEQUENCES):
        return new
    before, model = json.loads(current), json.loads(new)
    for tag in ACCUMULATED_SEQUENCES:
        items = [
            *(before.get(tag) or {}).get("Value", []),
            *(model.get(tag) or {}).get("Value", []),
        ]
        distinct = list({dumps(item): item for item in items}.values())
        if distinct:
            model[tag] = {"vr": "SQ", "Value": distinct}
    return dumps(model)


def stored(text: str | None) -> dict[str, Any] | None:
    """A row's kept sequences (None when the row predates them)."""
    return None if text is None else json.loads(text)


def prefilter(key: SequenceKey, column: Any) -> ColumnElement[bool]:
    """A SQL condition every row matching `key` satisfies (never the reverse): the
    sequence is present, and each exactly-matched text value appears as a JSON string."""
    conditions = [column.like(f'%"{key.sequence}"%')]
    for match in key.matches:
        literals = _literals(match)
        if literals:
            conditions.append(
                or_(*[column.like(f'%"{_escape_like(v)}"%', escape="\\") for v in literals])
            )
    return and_(*conditions)


def _literals(match: Match) -> tuple[str, ...]:
    """Values a matching item holds verbatim, when JSON writes them unchanged."""
    if match.kind not in ("single", "list") or match.vr not in _LITERAL_VRS:
        return ()
    if any(c in v for v in match.values for c in '"\\') or any(
        ord(c) < 0x20 for v in match.values for c in v
    ):
        return ()
    return match.values


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def matching_rows(
    session: Session,
    statement: Any,
    level: Level,
    keys: Sequence[SequenceKey],
    *,
    limit: int,
    offset: int,
) -> list[Row[Any]]:
    """Rows of `statement` (ordered, no limit) whose sequences match every key: the
    `offset` first such rows skipped, at most `limit` returned. Rows stream in batches;
    reading stops once `limit` rows are found."""
    kept: list[Row[Any]] = []
    skipped = 0
    result = session.execute(statement.execution_options(yield_per=_BATCH))
    try:
        for batch in result.partitions():
            for row in _rows_matching(session, level, batch, keys):
                if skipped < offset:
                    skipped += 1
                    continue
                kept.append(row)
                if len(kept) >= limit:
                    return kept
    finally:
        result.close()
    return kept


def _rows_matching(
    session: Session, level: Level, batch: Sequence[Row[Any]], keys: Sequence[SequenceKey]
) -> Iterator[Row[Any]]:
    """Rows of one batch whose sequences match; a key on a lower level than the query
    (relational, e.g. RequestAttributesSequence at STUDY level) matches when one of the
    row's series (studies) matches it."""
    below = {
        key.sequence: _lower_sequences(session, level, key, [row[0].id for row in batch])
        for key in keys
        if DEPTH[INDEXED_SEQUENCES[key.sequence]] > DEPTH[level]
    }
    for row in batch:
        if all(_row_matches(row, level, key, below) for key in keys):
            yield row


def _row_matches(
    row: Row[Any],
    level: Level,
    key: SequenceKey,
    below: dict[str, dict[int, list[dict[str, Any]]]],
) -> bool:
    owner = INDEXED_SEQUENCES[key.sequence]
    if key.sequence in below:
        models = below[key.sequence].get(row[0].id, [])
    else:
        # base_select's rows hold the query level's row first, then its parents.
        model = stored(row[DEPTH[level] - DEPTH[owner]].sequences_json)
        models = [model] if model is not None else []
    return any(dataset_matches(model, key) for model in models)


def _lower_sequences(
    session: Session, level: Level, key: SequenceKey, ids: list[int]
) -> dict[int, list[dict[str, Any]]]:
    """Kept sequences of the lower-level rows (that pass the prefilter) under each id."""
    owner = ROWS_KEEPING[INDEXED_SEQUENCES[key.sequence]]
    if level == "STUDY":
        stmt = select(Series.study_pk, Series.sequences_json).where(Series.study_pk.in_(ids))
    elif owner is Study:
        stmt = select(Study.patient_pk, Study.sequences_json).where(Study.patient_pk.in_(ids))
    else:
        stmt = (
            select(Study.patient_pk, Series.sequences_json)
            .join(Study, Series.study_pk == Study.id)
            .where(Study.patient_pk.in_(ids))
        )
    stmt = stmt.where(prefilter(key, owner.sequences_json))
    out: dict[int, list[dict[str, Any]]] = {}
    for parent, text in session.execute(stmt):
        model = stored(text)
        if model is not None:
            out.setdefault(parent, []).append(model)
    return out


def refresh_sequences(session: Session, *, only_missing: bool = False) -> int:
    """Derive every patient's, study's and series' kept sequences (or only those still
    NULL) from the stored DICOM JSON of its newest instance, and a patient's accumulated
    ones from all its instances, as ingest would have. No blob is read. Returns how many
    rows changed."""
    changed = 0
    for level in ("SERIES", "STUDY", "PATIENT"):
        table = ROWS_KEEPING[level]
        newest = (
            select(table.id, func.max(Instance.id))
            .select_from(Instance)
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
            .join(Patient, Study.patient_pk == Patient.id)
            .group_by(table.id)
        )
        if only_missing:
            newest = newest.where(table.sequences_json.is_(None))
        pairs = session.execute(newest).all()
        for start in range(0, len(pairs), 500):
            owner_of = {instance_pk: pk for pk, instance_pk in pairs[start : start + 500]}
            gathered = (
                _accumulated(session, list(owner_of.values())) if level == "PATIENT" else {}
            )
            rows = session.execute(
                select(Instance.id, Instance.metadata_json, table.sequences_json)
                .join(Series, Instance.series_pk == Series.id)
                .join(Study, Series.study_pk == Study.id)
                .join(Patient, Study.patient_pk == Patient.id)
                .where(Instance.id.in_(list(owner_of)))
            )
            for instance_pk, metadata, current in rows:
                sequences = entity_sequences(json.loads(metadata))
                derived = getattr(sequences, level.lower())
                text = accumulate(gathered.get(owner_of[instance_pk]), derived)
                if text != current:
                    session.execute(
                        update(table)
                        .where(table.id == owner_of[instance_pk])
                        .values(sequences_json=text)
                    )
                    changed += 1
    return changed


def _accumulated(session: Session, patient_ids: list[int]) -> dict[int, str]:
    """Per patient, the accumulated sequences of all its instances, oldest first (only
    instances whose metadata holds one of them are read)."""
    holds = or_(*[Instance.metadata_json.like(f'%"{tag}"%') for tag in ACCUMULATED_SEQUENCES])
    rows = session.execute(
        select(Study.patient_pk, Instance.metadata_json)
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .where(Study.patient_pk.in_(patient_ids), holds)
        .order_by(Instance.id)
    )
    gathered: dict[int, str] = {}
    for patient_pk, metadata in rows:
        model = json.loads(metadata)
        only = {tag: model[tag] for tag in ACCUMULATED_SEQUENCES if tag in model}
        gathered[patient_pk] = accumulate(gathered.get(patient_pk), dumps(only))
    return gathered
