"""Compile a `Filter` (PS3.4 C.2.2.2 matching) into SQL over the index tables.

One compiler serves C-FIND and QIDO-RS, so both doors return the same matches. Keys on
the items of indexed sequences are narrowed in SQL and decided in Python while the rows
stream (`index/sequences.py`); `CompiledQuery.sequence_keys` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, false, literal, or_, select, true
from sqlalchemy.orm import InstrumentedAttribute

from minipacs.dicom.item_matching import SequenceKey, check_sequence_key, sequence_keys
from minipacs.dicom.matching import Filter, Match, like_pattern
from minipacs.dicom.names import fold_text, lower_name
from minipacs.errors import QueryError
from minipacs.index import access_tags
from minipacs.index.levels import DEPTH as _DEPTH
from minipacs.index.levels import LEVELS as LEVELS  # re-exported: doors import them here
from minipacs.index.levels import Level as Level
from minipacs.index.models import Instance, Patient, Series, Study
from minipacs.index.sequences import INDEXED_SEQUENCES, ROWS_KEEPING, prefilter

AnySelect = Select[*tuple[Any, ...]]


@dataclass(frozen=True)
class Column:
    level: Level
    column: InstrumentedAttribute[Any]


# Attributes (tag as 8 hex digits) that have an index column.
COLUMNS: dict[str, Column] = {
    "00100010": Column("PATIENT", Patient.patient_name),
    "00100020": Column("PATIENT", Patient.patient_id),
    "00100021": Column("PATIENT", Patient.issuer_of_patient_id),
    "00100030": Column("PATIENT", Patient.patient_birth_date),
    "00100040": Column("PATIENT", Patient.patient_sex),
    "0020000D": Column("STUDY", Study.study_instance_uid),
    "00080020": Column("STUDY", Study.study_date),
    "00080030": Column("STUDY", Study.study_time),
    "00080050": Column("STUDY", Study.accession_number),
    "00200010": Column("STUDY", Study.study_id),
    "00081030": Column("STUDY", Study.study_description),
    "00080090": Column("STUDY", Study.referring_physician_name),
    "0020000E": Column("SERIES", Series.series_instance_uid),
    "00080060": Column("SERIES", Series.modality),
    "00200011": Column("SERIES", Series.series_number),
    "0008103E": Column("SERIES", Series.series_description),
    "00080021": Column("SERIES", Series.series_date),
    "00080031": Column("SERIES", Series.series_time),
    "00180015": Column("SERIES", Series.body_part_examined),
    "00080018": Column("IMAGE", Instance.sop_instance_uid),
    "00080016": Column("IMAGE", Instance.sop_class_uid),
    "00200013": Column("IMAGE", Instance.instance_number),
    "00280010": Column("IMAGE", Instance.rows),
    "00280011": Column("IMAGE", Instance.columns),
    "00280100": Column("IMAGE", Instance.bits_allocated),
    "00280008": Column("IMAGE", Instance.number_of_frames),
}
MODALITIES_IN_STUDY = "00080061"
SOP_CLASSES_IN_STUDY = "00080062"
OTHER_PATIENT_IDS = ("00101002.00100020", "00101000")
# Keys matched by special rules rather than one column.
SPECIAL_KEYS = {MODALITIES_IN_STUDY, SOP_CLASSES_IN_STUDY, *OTHER_PATIENT_IDS}
_INTEGER_COLUMNS = {"00200011", "00200013", "00280010", "00280011", "00280100", "00280008"}


def is_matchable(key: str) -> bool:
    return key in COLUMNS or key in SPECIAL_KEYS or key.split(".")[0] in INDEXED_SEQUENCES


def _string_condition(column: Any, match: Match) -> ColumnElement[bool]:
    if match.kind == "single":
        return column == match.values[0]  # type: ignore[no-any-return]
    if match.kind == "list":
        return column.in_(match.values)  # type: ignore[no-any-return]
    if match.kind == "wildcard":
        return column.like(like_pattern(match.values[0]), escape="\\")  # type: ignore[no-any-return]
    if match.kind == "range":
        low, high = match.values
        conditions = [column != ""]
        if low:
            conditions.append(column >= low)
        if high:
            # '~' sorts after digits and '.', so a high time "1200" still admits "120030".
            conditions.append(column <= high + "~")
        return and_(*conditions)
    return true()


def _integer_condition(column: Any, match: Match) -> ColumnElement[bool]:
    try:
        values = [int(v) for v in match.values]
    except ValueError as exc:
        raise QueryError(f"{match.keyword}: {match.values!r} is not an integer") from exc
    if match.kind == "single":
        return column == values[0]  # type: ignore[no-any-return]
    if match.kind == "list":
        return column.in_(values)  # type: ignore[no-any-return]
    raise QueryError(f"{match.keyword}: {match.kind} matching is not supported on integers")


def _person_name_condition(match: Match) -> ColumnElement[bool]:
    """PN: case-insensitive always (PS3.4 C.2.2.2.1); fuzzy also ignores diacritics and
    matches from the start of any name component ("an" finds "Nguyễn^Văn An")."""
    values = match.values if match.kind == "list" else match.values[:1]
    conditions: list[ColumnElement[bool]] = []
    for value in values:
        if match.fuzzy:
            folded = fold_text(value)
            pattern = "% " + like_pattern(folded)
            if not pattern.endswith("%"):
                pattern += "%"
            haystack = literal(" ") + Patient.patient_name_folded
            conditions.append(haystack.like(pattern, escape="\\"))
        elif "*" in value or "?" in value:
            conditions.append(
                Patient.patient_name_lower.like(like_pattern(lower_name(value)), escape="\\")
            )
        else:
            conditions.append(Patient.patient_name_lower == lower_name(value))
    return or_(*conditions) if conditions else true()


def _other_ids_condition(match: Match) -> ColumnElement[bool]:
    values = match.values if match.kind == "list" else match.values[:1]
    return or_(
        *[
            Patient.other_patient_ids.like(f"%|{like_pattern(v)}|%", escape="\\")
            for v in values
        ]
    )


def condition_for(match: Match, level: Level) -> ColumnElement[bool]:
    """SQL condition for one match, evaluated in a query at `level`."""
    if match.kind == "universal":
        return true()
    if match.key == "00100010":
        if level == "PATIENT":
            return _person_name_condition(match)
        # Below the patient level, as the set of patients whose name matches (the same
        # rows: the query joins Study.patient_pk to Patient.id). An accent-free search
        # (fuzzy: from the start of any name component) can use no index; as a join
        # condition SQLite walked every study newest first looking each one's patient up
        # (~0.1 s at 1M instances); as a set it scans the far smaller patients table
        # once, then finds their studies by ix_studies_patient_pk (bench/scale.py).
        patients = select(Patient.id).where(_person_name_condition(match)).correlate(None)
        return Study.patient_pk.in_(patients)
    if match.key in OTHER_PATIENT_IDS:
        return _other_ids_condition(match)
    if match.key == MODALITIES_IN_STUDY:
        return _below(level, "SERIES", _string_condition(Series.modality, match))
    if match.key == SOP_CLASSES_IN_STUDY:
        return _below(level, "IMAGE", _string_condition(Instance.sop_class_uid, match))
    column = COLUMNS.get(match.key)
    if column is None:
        raise QueryError(f"matching on {match.keyword} is not supported")
    if match.key in _INTEGER_COLUMNS:
        cond = _integer_condition(column.column, match)
    else:
        cond = _string_condition(column.column, match)
    if _DEPTH[column.level] > _DEPTH[level]:
        return _below(level, column.level, cond)
    return cond


def _below(level: Level, target: Level, cond: ColumnElement[bool]) -> ColumnElement[bool]:
    """A condition on a lower level becomes EXISTS(...) correlated to the query's row."""
    if _DEPTH[target] <= _DEPTH[level]:
        return cond
    if level == "PATIENT":
        sub = select(Study.id).where(Study.patient_pk == Patient.id)
        if target in ("SERIES", "IMAGE"):
            sub = sub.join(Series, Series.study_pk == Study.id)
        if target == "IMAGE":
            sub = sub.join(Instance, Instance.series_pk == Series.id)
    elif level == "STUDY":
        sub = select(Series.id).where(Series.study_pk == Study.id)
        if target == "IMAGE":
            sub = sub.join(Instance, Instance.series_pk == Series.id)
    elif level == "SERIES":
        sub = select(Instance.id).where(Instance.series_pk == Series.id)
    else:
        return false()
    return exists(sub.where(cond))


def base_select(level: Level) -> AnySelect:
    if level == "PATIENT":
        return select(Patient)
    if level == "STUDY":
        return select(Study, Patient).join(Patient, Study.patient_pk == Patient.id)
    if level == "SERIES":
        return (
            select(Series, Study, Patient)
            .join(Study, Series.study_pk == Study.id)
            .join(Patient, Study.patient_pk == Patient.id)
        )
    return (
        select(Instance, Series, Study, Patient)
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .join(Patient, Study.patient_pk == Patient.id)
    )


def _order(stmt: AnySelect, level: Level) -> AnySelect:
    if level == "PATIENT":
        return stmt.order_by(Patient.patient_name_lower, Patient.id)
    if level == "STUDY":
        return stmt.order_by(Study.study_date.desc(), Study.study_time.desc(), Study.id.desc())
    if level == "SERIES":
        return stmt.order_by(Study.id, Series.series_number, Series.id)
    return stmt.order_by(Series.id, Instance.instance_number, Instance.id)


@dataclass(frozen=True)
class CompiledQuery:
    """`statement`: the rows at a level matching every key SQL can decide, in query
    order, without limit or offset. `sequence_keys`: keys on sequence items, still to be
    checked (`index.sequences.matching_rows`) before paging."""

    statement: AnySelect
    sequence_keys: tuple[SequenceKey, ...]


@cache
def _ordered_base(level: Level) -> AnySelect:
    """`base_select` in query order, built once per level: a Select is immutable (each
    `.where` returns a new one), and building the joins per query cost a tenth of a
    QIDO request's work in the index (docs/performance.md, fourth pass)."""
    return _order(base_select(level), level)


def compile_query(level: Level, filt: Filter,
                  visible_tags: frozenset[str] | None = None) -> CompiledQuery:
    """The query for the rows at `level` that match every active match of `filt`, and
    that a principal limited to `visible_tags` may see (`index/access_tags.py`; None:
    every row).

    Raises `QueryError` naming a key that cannot be matched (PS3.4 C.4.1.2.3: an SCP
    refuses rather than ignore a matching key it does not support)."""
    stmt = _ordered_base(level)
    if visible_tags is not None:
        stmt = stmt.where(access_tags.visible(level, visible_tags))
    on_items: list[Match] = []
    active = filt.active()
    # OtherPatientIDsSequence > PatientID alone is decided on the patient's column of
    # every other ID; with more keys of the item (IssuerOfPatientID, TypeOfPatientID),
    # they must hold in one item together, which is sequence matching.
    whole_item = {
        match.key.split(".")[0]
        for match in active
        if "." in match.key and match.key not in SPECIAL_KEYS
    }
    for match in active:
        if "." in match.key and (
            match.key not in SPECIAL_KEYS or match.key.split(".")[0] in whole_item
        ):
            on_items.append(match)
        else:
            stmt = stmt.where(condition_for(match, level))
    keys = sequence_keys(on_items)
    for key in keys:
        owner = INDEXED_SEQUENCES.get(key.sequence)
        if owner is None:
            raise QueryError(f"matching on {key.matches[0].keyword} is not supported")
        check_sequence_key(key)
        column = ROWS_KEEPING[owner].sequences_json
        stmt = stmt.where(_below(level, owner, prefilter(key, column)))
    return CompiledQuery(stmt, keys)


def value_condition(column: Any, match: Match) -> ColumnElement[bool]:
    """PS3.4 C.2.2.2 matching of one text column (single, list, wildcard, range,
    universal), for other information models (e.g. the Modality Worklist) to share."""
    return _string_condition(column, match)
