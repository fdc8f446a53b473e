"""Writing one instance into the index: the patient, study, series and instance rows
it belongs to, created or updated in the caller's transaction (`upsert_instance`), and
the `InstanceRecord` the rest of the archive reads rows as.

Every instance overwrites its patient's, study's and series' columns (the newest
instance wins), except the patient's other IDs and accumulated sequences, which gather
over all instances (`index.sequences.accumulate`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from minipacs.dicom.header import InstanceAttributes, ParsedInstance
from minipacs.dicom.json_model import dumps, instance_json
from minipacs.index.models import Instance, Patient, Series, Study
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


def is_identical_duplicate(session: Session, sop_instance_uid: str, sha256: str,
                           key: str) -> bool:
    """Whether this SOP Instance is already indexed with these very bytes at `key`
    (one primary-key-sized read inside the ingest transaction)."""
    row = session.execute(
        select(Instance.sha256, Instance.blob_key)
        .where(Instance.sop_instance_uid == sop_instance_uid)
    ).first()
    return row is not None and row.sha256 == sha256 and row.blob_key == key


def upsert_instance(
    session: Session, parsed: ParsedInstance, key: str, derived: Derived, received_from: str
) -> InstanceRecord | None:
    """Patient → study → series → instance rows for one parsed instance, in the caller's
    transaction. Returns the record of the instance it replaced, if any."""
    a = parsed.attributes
    patient = session.scalars(
        select(Patient).where(
            Patient.patient_id == a.patient_id,
            Patient.issuer_of_patient_id == a.issuer_of_patient_id,
        )
    ).one_or_none()
    if patient is None:
        patient = Patient(patient_id=a.patient_id, issuer_of_patient_id=a.issuer_of_patient_id)
        session.add(patient)
    _update_patient(patient, a)
    patient.sequences_json = accumulate(patient.sequences_json, derived.sequences.patient)
    session.flush()

    study = session.scalars(
        select(Study).where(Study.study_instance_uid == a.study_instance_uid)
    ).one_or_none()
    if study is None:
        study = Study(study_instance_uid=a.study_instance_uid, patient_pk=patient.id)
        session.add(study)
    _update_study(study, a, patient.id)
    study.sequences_json = derived.sequences.study
    session.flush()

    series = session.scalars(
        select(Series).where(Series.series_instance_uid == a.series_instance_uid)
    ).one_or_none()
    if series is None:
        series = Series(series_instance_uid=a.series_instance_uid, study_pk=study.id)
        session.add(series)
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
    instance.metadata_json = derived.metadata
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
    model = instance_json(parsed.dataset, parsed.attributes)
    return Derived(dumps(model), entity_sequences(model))


def _update_patient(patient: Patient, a: InstanceAttributes) -> None:
    patient.patient_name = a.patient_name
    patient.patient_name_lower = a.patient_name_lower
    patient.patient_name_folded = a.patient_name_folded
    patient.patient_birth_date = a.patient_birth_date
    patient.patient_sex = a.patient_sex
    known = [x for x in (patient.other_patient_ids or "").split("|") if x]
    merged = list(dict.fromkeys([*known, *a.other_patient_ids]))
    patient.other_patient_ids = ("|" + "|".join(merged) + "|") if merged else ""


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
        session.execute(delete(Study).where(Study.id == study_pk))


def record_of(instance: Instance, series: Series, study: Study, patient: Patient) -> InstanceRecord:
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
    )
