"""Writing one instance into the index: the patient, study, series and instance rows
it belongs to, created or updated in the caller's transaction (`upsert_instance`), and
the `InstanceRecord` the rest of the archive reads rows as.

Every instance overwrites its patient's, study's and series' columns (the newest
instance wins), except the patient's other IDs and accumulated sequences, which gather
over all instances (`index.sequences.accumulate`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    CursorResult,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.orm import Session

from minipacs.dicom.header import InstanceAttributes, ParsedInstance
from minipacs.dicom.json_model import dumps, instance_json
from minipacs.dicom.patient_header import overlay_json
from minipacs.index.models import (
    Base,
    Instance,
    Patient,
    PatientAlias,
    Series,
    Study,
    StudyAccessTag,
)
from minipacs.index.sequences import EntitySequences, accumulate, entity_sequences


@dataclass(frozen=True)
class InstanceRecord:
    """One stored instance as the archive's doors see it: what it is and where its blob is."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    transfer_syntax_uid: str
    blob_key: str
    size: int
    sha256: str
    number_of_frames: int | None
    instance_number: int | None
    # Reconciliation: patient attributes (keyword, value) the blob is served with, when
    # its stored ones differ from the index's (dicom/patient_header.py); () otherwise.
    patient_patch: tuple[tuple[str, str], ...] = ()


IndexedAs = Literal["new", "identical", "other"]


@dataclass(frozen=True)
class IndexedRows:
    """What the index holds for an arriving instance, read in one statement
    (`indexed_rows`): the instance with its SOP Instance UID (sha256, blob key), its
    patient's row and whether its patient key was merged away, its study's and its
    series' rows (column name -> value; None: no such row)."""

    instance: tuple[str, str] | None
    patient: dict[str, Any] | None
    aliased: bool
    study: dict[str, Any] | None
    series: dict[str, Any] | None
    also: tuple[Any, ...] = ()  # the values of `lookup_statement`'s `also` columns

    def indexed_as(self, sha256: str, key: str) -> IndexedAs:
        """Not indexed yet ("new"), indexed with these very bytes at `key`
        ("identical"), or otherwise."""
        if self.instance is None:
            return "new"
        return "identical" if self.instance == (sha256, key) else "other"


def indexed_rows(session: Session, a: InstanceAttributes,
                 statement: Select[Any] | None = None) -> IndexedRows:
    """The rows an arriving instance meets, in the caller's transaction: one statement
    of unique-key lookups instead of one each (on PostgreSQL, one round trip instead of
    five). `statement`: a `lookup_statement` with more columns, which may use the bound
    parameters "study" (Study Instance UID) and "accession" (Accession Number)."""
    row = _core(session).execute(_LOOKUP if statement is None else statement, {
        "uid": a.sop_instance_uid, "patient_id": a.patient_id,
        "issuer": a.issuer_of_patient_id, "study": a.study_instance_uid,
        "series": a.series_instance_uid, "accession": a.accession_number}).one()
    return IndexedRows(
        instance=None if row[0] is None else (row[0], row[1]),
        aliased=row[2] is not None,
        patient=_columns(row, _PATIENT_SLICE),
        study=_columns(row, _STUDY_SLICE),
        series=_columns(row, _SERIES_SLICE),
        also=tuple(row[_ALSO_START:]),
    )


def lookup_statement(*also: ColumnElement[Any]) -> Select[Any]:
    """The statement `indexed_rows` runs, with `also` computed in it (a caller's
    question about the same instance, answered without another round trip)."""
    return _LOOKUP.add_columns(*also) if also else _LOOKUP


def _columns(row: Any, part: tuple[int, tuple[str, ...]]) -> dict[str, Any] | None:
    """One table's columns of the lookup's row, by name; None for no row (a NULL id)."""
    start, names = part
    if row[start] is None:
        return None
    return dict(zip(names, row[start:start + len(names)], strict=True))


def _core(session: Session) -> Connection:
    """The session's connection for the hot path's Core statements, after writing out
    what the ORM holds (the ORM's own statements would autoflush it first): a
    replacement filed through the ORM earlier in the same group transaction is then
    seen by the next instance's reads."""
    session.flush()
    return session.connection()


def insert_new_instance(session: Session, parsed: ParsedInstance, key: str, derived: Derived,
                        received_from: str, rows: IndexedRows,
                        created: list[str] | None = None) -> bool:
    """`upsert_instance` for an instance not indexed yet, given what `indexed_rows`
    read in the same transaction, with SQLAlchemy Core statements: the hot path of
    ingest, without the ORM's unit of work. Rows already there are updated only in the
    columns whose value changes, as the ORM would (so `updated_at` moves only then).
    `created` receives "study" and "series" for the rows it made (change feed).

    Returns False, having written nothing, for a patient reconciliation owns (a reconciled
    patient, or a key merged away): `upsert_instance` files and serves those."""
    a = parsed.attributes
    connection = _core(session)
    current = rows.patient
    if current is not None and current["reconciled"]:
        return False
    if current is None and rows.aliased:
        return False
    patient_pk = _upsert_row(connection, _PATIENTS, current, {
        "patient_id": a.patient_id, "issuer_of_patient_id": a.issuer_of_patient_id,
        "patient_name": a.patient_name, "patient_name_lower": a.patient_name_lower,
        "patient_name_folded": a.patient_name_folded,
        "patient_birth_date": a.patient_birth_date, "patient_sex": a.patient_sex,
        "other_patient_ids": _merged_ids(current["other_patient_ids"] if current else "",
                                         a.other_patient_ids),
        "sequences_json": accumulate(current["sequences_json"] if current else None,
                                     derived.sequences.patient),
    })
    if rows.study is None and created is not None:
        created.append("study")
    study_pk = _upsert_row(connection, _STUDIES, rows.study, {
        "study_instance_uid": a.study_instance_uid, "patient_pk": patient_pk,
        "study_date": a.study_date, "study_time": a.study_time,
        "accession_number": a.accession_number, "study_id": a.study_id,
        "study_description": a.study_description,
        "referring_physician_name": a.referring_physician_name,
        "sequences_json": derived.sequences.study,
    })
    if rows.series is None and created is not None:
        created.append("series")
    series_pk = _upsert_row(connection, _SERIES_TABLE, rows.series, {
        "series_instance_uid": a.series_instance_uid, "study_pk": study_pk,
        "modality": a.modality, "series_number": a.series_number,
        "series_description": a.series_description, "series_date": a.series_date,
        "series_time": a.series_time, "body_part_examined": a.body_part_examined,
        "sequences_json": derived.sequences.series,
    })
    connection.execute(_INSERTS[_INSTANCES], {
        "sop_instance_uid": a.sop_instance_uid, "series_pk": series_pk,
        "sop_class_uid": a.sop_class_uid, "instance_number": a.instance_number,
        "transfer_syntax_uid": a.transfer_syntax_uid, "rows": a.rows, "columns": a.columns,
        "bits_allocated": a.bits_allocated, "number_of_frames": a.number_of_frames,
        "blob_key": key, "size": parsed.size, "sha256": parsed.sha256,
        "metadata_json": derived.metadata, "received_from": received_from[:128]})
    return True


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


# The hot path's statements, built once with bound parameters: built per call, their
# construction (SQLAlchemy's argument coercions) cost about as much as running them
# (docs/performance.md, "Seventh pass").
_PATIENTS, _STUDIES = _table(Patient), _table(Study)
_SERIES_TABLE, _INSTANCES = _table(Series), _table(Instance)
_ALIASES = _table(PatientAlias)
# The lookup: from one row, an outer join on each unique key an arriving instance has,
# so that every table's row, or NULLs, comes back in one statement.
_ONE = select(literal_column("1").label("one")).subquery("one")


def _id_first(table: Table) -> list[Any]:
    return [table.c.id, *(column for column in table.c if column.name != "id")]


_LOOKUP = select(
    _INSTANCES.c.sha256, _INSTANCES.c.blob_key, _ALIASES.c.id,
    *_id_first(_PATIENTS), *_id_first(_STUDIES), *_id_first(_SERIES_TABLE),
).select_from(
    _ONE.outerjoin(_INSTANCES, _INSTANCES.c.sop_instance_uid == bindparam("uid"))
    .outerjoin(_ALIASES, and_(_ALIASES.c.patient_id == bindparam("patient_id"),
                              _ALIASES.c.issuer == bindparam("issuer")))
    .outerjoin(_PATIENTS, and_(_PATIENTS.c.patient_id == bindparam("patient_id"),
                               _PATIENTS.c.issuer_of_patient_id == bindparam("issuer")))
    .outerjoin(_STUDIES, _STUDIES.c.study_instance_uid == bindparam("study"))
    .outerjoin(_SERIES_TABLE, _SERIES_TABLE.c.series_instance_uid == bindparam("series"))
)
# Where each table's columns start in the lookup's row (its id column first), and their names.
_PATIENT_SLICE = (3, tuple(c.name for c in _id_first(_PATIENTS)))
_STUDY_SLICE = (3 + len(_PATIENTS.c), tuple(c.name for c in _id_first(_STUDIES)))
_SERIES_SLICE = (3 + len(_PATIENTS.c) + len(_STUDIES.c),
                 tuple(c.name for c in _id_first(_SERIES_TABLE)))
_ALSO_START = 3 + len(_PATIENTS.c) + len(_STUDIES.c) + len(_SERIES_TABLE.c)
_INSERTS = {table: insert(table) for table in (_PATIENTS, _STUDIES, _SERIES_TABLE, _INSTANCES)}


def _upsert_row(connection: Connection, table: Table, current: Any,
                values: dict[str, Any]) -> int:
    """Insert `values` as a row of `table` (no `current` row), or update the columns of
    `current` that differ. Returns the row's primary key."""
    if current is None:
        result = cast(CursorResult[Any], connection.execute(_INSERTS[table], values))
        assert result.inserted_primary_key is not None
        return int(result.inserted_primary_key[0])
    changed = {name: value for name, value in values.items() if current[name] != value}
    if changed:
        connection.execute(update(table).where(table.c.id == current["id"]).values(**changed))
    return int(current["id"])


def _merged_ids(known_text: str, new: tuple[str, ...]) -> str:
    """The patient's other IDs, "|"-delimited, old ones first, each once."""
    known = [x for x in (known_text or "").split("|") if x]
    merged = list(dict.fromkeys([*known, *new]))
    return ("|" + "|".join(merged) + "|") if merged else ""


def upsert_instance(
    session: Session, parsed: ParsedInstance, key: str, derived: Derived, received_from: str,
    created: list[str] | None = None,
) -> InstanceRecord | None:
    """Patient → study → series → instance rows for one parsed instance, in the caller's
    transaction. Returns the record of the instance it replaced, if any; `created`, when
    given, receives "study" and "series" for the rows this instance made (change feed)."""
    a = parsed.attributes
    # A key merged away (emr/reconciliation.py) files the instance under the target.
    alias_pk = session.scalar(select(PatientAlias.patient_pk).where(
        PatientAlias.patient_id == a.patient_id,
        PatientAlias.issuer == a.issuer_of_patient_id))
    patient = session.get(Patient, alias_pk) if alias_pk is not None else session.scalars(
        select(Patient).where(
            Patient.patient_id == a.patient_id,
            Patient.issuer_of_patient_id == a.issuer_of_patient_id,
        )
    ).one_or_none()
    if patient is None:
        patient = Patient(patient_id=a.patient_id, issuer_of_patient_id=a.issuer_of_patient_id)
        session.add(patient)
    stored_patient: str | None = None
    metadata = derived.metadata
    if alias_pk is not None or patient.reconciled:
        # Reconciled values win over what arrives; the instance is served corrected.
        patient.other_patient_ids = _merged_ids(patient.other_patient_ids, a.other_patient_ids)
        stored, current = attribute_values(a), patient_values(patient)
        if stored != current:
            stored_patient = json.dumps(stored, ensure_ascii=False)
            metadata = dumps(overlay_json(json.loads(metadata), current))
    else:
        _update_patient(patient, a)
    patient.sequences_json = accumulate(patient.sequences_json, derived.sequences.patient)
    session.flush()

    study = session.scalars(
        select(Study).where(Study.study_instance_uid == a.study_instance_uid)
    ).one_or_none()
    if study is None:
        study = Study(study_instance_uid=a.study_instance_uid, patient_pk=patient.id)
        session.add(study)
        if created is not None:
            created.append("study")
    _update_study(study, a, patient.id)
    study.sequences_json = derived.sequences.study
    session.flush()

    series = session.scalars(
        select(Series).where(Series.series_instance_uid == a.series_instance_uid)
    ).one_or_none()
    if series is None:
        series = Series(series_instance_uid=a.series_instance_uid, study_pk=study.id)
        session.add(series)
        if created is not None:
            created.append("series")
    _update_series(series, a, study.id)
    series.sequences_json = derived.sequences.series
    session.flush()

    instance = session.scalars(
        select(Instance).where(Instance.sop_instance_uid == a.sop_instance_uid)
    ).one_or_none()
    replaced = None
    if instance is None:
        instance = Instance(sop_instance_uid=a.sop_instance_uid)
        session.add(instance)
    else:
        old_series = session.get(Series, instance.series_pk)
        assert old_series is not None  # foreign key
        old_study = session.get(Study, old_series.study_pk)
        assert old_study is not None
        old_patient = session.get(Patient, old_study.patient_pk)
        assert old_patient is not None
        replaced = record_of(instance, old_series, old_study, old_patient)
    instance.series_pk = series.id
    instance.sop_class_uid = a.sop_class_uid
    instance.instance_number = a.instance_number
    instance.transfer_syntax_uid = a.transfer_syntax_uid
    instance.rows = a.rows
    instance.columns = a.columns
    instance.bits_allocated = a.bits_allocated
    instance.number_of_frames = a.number_of_frames
    instance.blob_key = key
    instance.size = parsed.size
    instance.sha256 = parsed.sha256
    instance.metadata_json = metadata
    instance.stored_patient = stored_patient
    instance.received_from = received_from[:128]
    if replaced is not None:
        session.flush()
        drop_if_empty(session, replaced.series_instance_uid)
    return replaced


@dataclass(frozen=True)
class Derived:
    """What ingest computes once from the header: the instance's DICOM JSON text and
    the sequences its patient, study and series rows keep."""

    metadata: str
    sequences: EntitySequences


def derive(parsed: ParsedInstance) -> Derived:
    model = instance_json(parsed.dataset, parsed.attributes, parsed.model)
    return Derived(dumps(model), entity_sequences(model))


def _update_patient(patient: Patient, a: InstanceAttributes) -> None:
    patient.patient_name = a.patient_name
    patient.patient_name_lower = a.patient_name_lower
    patient.patient_name_folded = a.patient_name_folded
    patient.patient_birth_date = a.patient_birth_date
    patient.patient_sex = a.patient_sex
    patient.other_patient_ids = _merged_ids(patient.other_patient_ids, a.other_patient_ids)


def _update_study(study: Study, a: InstanceAttributes, patient_pk: int) -> None:
    study.patient_pk = patient_pk
    study.study_date = a.study_date
    study.study_time = a.study_time
    study.accession_number = a.accession_number
    study.study_id = a.study_id
    study.study_description = a.study_description
    study.referring_physician_name = a.referring_physician_name


def _update_series(series: Series, a: InstanceAttributes, study_pk: int) -> None:
    series.study_pk = study_pk
    series.modality = a.modality
    series.series_number = a.series_number
    series.series_description = a.series_description
    series.series_date = a.series_date
    series.series_time = a.series_time
    series.body_part_examined = a.body_part_examined


def drop_if_empty(session: Session, series_instance_uid: str) -> None:
    """After a replace moved an instance elsewhere, remove its old series/study if empty."""
    series = session.scalars(
        select(Series).where(Series.series_instance_uid == series_instance_uid)
    ).one_or_none()
    if series is None or session.scalar(
        select(Instance.id).where(Instance.series_pk == series.id).limit(1)
    ) is not None:
        return
    study_pk = series.study_pk
    session.delete(series)
    session.flush()
    if session.scalar(select(Series.id).where(Series.study_pk == study_pk).limit(1)) is None:
        study_uid = session.scalar(select(Study.study_instance_uid).where(Study.id == study_pk))
        session.execute(delete(Study).where(Study.id == study_pk))
        session.execute(delete(StudyAccessTag).where(
            StudyAccessTag.study_instance_uid == study_uid))


def patient_values(patient: Patient) -> dict[str, str]:
    """The patient row's attributes by keyword (what instances are served with)."""
    return {
        "PatientName": patient.patient_name,
        "PatientID": patient.patient_id,
        "IssuerOfPatientID": patient.issuer_of_patient_id,
        "PatientBirthDate": patient.patient_birth_date,
        "PatientSex": patient.patient_sex,
    }


def attribute_values(a: InstanceAttributes) -> dict[str, str]:
    """An arriving instance's patient attributes by keyword (as its blob holds them)."""
    return {
        "PatientName": a.patient_name,
        "PatientID": a.patient_id,
        "IssuerOfPatientID": a.issuer_of_patient_id,
        "PatientBirthDate": a.patient_birth_date,
        "PatientSex": a.patient_sex,
    }


def record_of(instance: Instance, series: Series, study: Study, patient: Patient) -> InstanceRecord:
    patch = (tuple(patient_values(patient).items())
             if instance.stored_patient is not None else ())
    return InstanceRecord(
        sop_instance_uid=instance.sop_instance_uid,
        sop_class_uid=instance.sop_class_uid,
        series_instance_uid=series.series_instance_uid,
        study_instance_uid=study.study_instance_uid,
        patient_id=patient.patient_id,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        blob_key=instance.blob_key,
        size=instance.size,
        sha256=instance.sha256,
        number_of_frames=instance.number_of_frames,
        instance_number=instance.instance_number,
        patient_patch=patch,
    )
