"""Query results as DICOM JSON: the attributes each level returns, counts, requested
extras and kept sequences, built from the rows `compile_query` matched.

Called by `Archive.find` inside its read session; nothing here decides what matches.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal, cast

from sqlalchemy import BindParameter, Select, Table, bindparam, func, select
from sqlalchemy.orm import Session

from minipacs.dicom.json_model import element
from minipacs.index import access_tags
from minipacs.index.models import Instance, Patient, Series, Study
from minipacs.index.query import Level
from minipacs.index.sequences import INDEXED_SEQUENCES, stored

Include = Sequence[str] | Literal["all"]

# Attributes each query level returns by itself: PS3.18 Tables 10.6.3-3 (study), 10.6.3-4
# (series) and 10.6.3-5 (instance), plus a few PS3.4 C.6.1.1 keys viewers ask for.
# Retrieve URL (0008,1190) is added by the DICOMweb door, which knows the base URL.
TIMEZONE = "00080201"  # Timezone Offset From UTC: "shall be present if known"
STUDY_KEYS = (
    "00080005", "00080020", "00080030", "00080050", "00080056", "00080061", "00080090",
    TIMEZONE, "00081030", "00100010", "00100020", "00100021", "00100030", "00100040",
    "0020000D", "00200010", "00201206", "00201208",
)
# Performed Procedure Step Start Date/Time: Table 10.6.3-4, "shall be present if known".
PPS_START = ("00400244", "00400245")
SERIES_KEYS = (
    "00080005", "00080021", "00080031", "00080060", TIMEZONE, "0008103E", "00180015",
    "0020000D", "0020000E", "00200011", "00201209", *PPS_START, "00400275",
)
REQUEST_ATTRIBUTES = "00400275"  # RequestAttributesSequence, kept by the series row
INSTANCE_KEYS = (
    "00080005", "00080016", "00080018", "00080056", TIMEZONE, "0020000D", "0020000E",
    "00200013", "00280008", "00280010", "00280011", "00280100",
)
PATIENT_KEYS = (
    "00080005", "00100010", "00100020", "00100021", "00100030", "00100040", "00201200",
    "00201202", "00201204",
)
# Patient/study module attributes added for includefield=all at the study level.
STUDY_ALL_EXTRA = (
    "00101002", "00101010", "00101020", "00101030", "00102160", "00104000", "00080080",
    "00080081", "00081032", "00081060", "00321032", "00321060", "00080201", "00081080",
    "00081110", "00081120",
)
SERIES_ALL_EXTRA = (
    "00080070", "00081090", "00081010", "00080080", "00180050", "00185100", "00400244",
    "00400245", "00200060", "00400275",
)


def patient_matches(
    session: Session, patients: list[Patient], include: Include,
    visible_tags: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    """Patients with the counts of their studies, series and instances (those of the
    studies `visible_tags` let the caller see: other studies are not revealed)."""
    ids = [p.id for p in patients]
    counts: dict[int, tuple[int, int, int]] = {}
    if ids:
        stmt = (
            select(
                Study.patient_pk,
                func.count(func.distinct(Study.id)),
                func.count(func.distinct(Series.id)),
                func.count(Instance.id),
            )
            .join(Series, Series.study_pk == Study.id)
            .join(Instance, Instance.series_pk == Series.id)
            .where(Study.patient_pk.in_(ids), access_tags.visible("STUDY", visible_tags))
            .group_by(Study.patient_pk)
        )
        counts = {row[0]: (row[1], row[2], row[3]) for row in session.execute(stmt)}
    out = []
    for p in patients:
        n_studies, n_series, n_instances = counts.get(p.id, (0, 0, 0))
        model = _patient_json(p)
        model["00201200"] = element("00201200", n_studies)
        model["00201202"] = element("00201202", n_series)
        model["00201204"] = element("00201204", n_instances)
        _add_sequences(model, _extra_keys(include, PATIENT_KEYS, ()), [p])
        out.append(model)
    return out

def study_matches(
    session: Session, rows: Sequence[Any], include: Include
) -> list[dict[str, Any]]:
    study_ids = [row[0].id for row in rows]
    statistics = _study_statistics(session, study_ids)
    extra_keys = _extra_keys(include, STUDY_KEYS, STUDY_ALL_EXTRA)
    # The timezone has no column: it comes from one stored instance of each study.
    samples = sample_metadata(session, "STUDY", study_ids,
                              None if extra_keys else (TIMEZONE,))
    out = []
    for study, patient in rows:
        model = _patient_json(patient)
        model.update(
            {
                "00080020": element("00080020", study.study_date),
                "00080030": element("00080030", study.study_time),
                "00080050": element("00080050", study.accession_number),
                "00080056": element("00080056", "ONLINE"),
                "00080090": element("00080090", study.referring_physician_name),
                "00081030": element("00081030", study.study_description),
                "0020000D": element("0020000D", study.study_instance_uid),
                "00200010": element("00200010", study.study_id),
                **_study_counts(statistics, study.id),
            }
        )
        kept = _add_sequences(model, extra_keys, [study, patient])
        _add_extra(model, [TIMEZONE, *(k for k in extra_keys if k not in kept)],
                   samples.get(study.id))
        out.append(dict(sorted(model.items())))
    return out

def series_matches(
    session: Session, rows: Sequence[Any], include: Include
) -> list[dict[str, Any]]:
    series_ids = [row[0].id for row in rows]
    counts: dict[int, int] = {}
    if series_ids:
        stmt = (
            select(Instance.series_pk, func.count(Instance.id))
            .where(Instance.series_pk.in_(series_ids))
            .group_by(Instance.series_pk)
        )
        counts = {r[0]: r[1] for r in session.execute(stmt)}
    extra_keys = _extra_keys(include, SERIES_KEYS, SERIES_ALL_EXTRA)
    # Timezone and PPS start have no column: from one stored instance of each series.
    samples = sample_metadata(session, "SERIES", series_ids,
                              None if extra_keys else (TIMEZONE, *PPS_START))
    study_stats = _study_statistics(session, list({row[1].id for row in rows})) \
        if include == "all" or any(k in include for k in _STUDY_COUNTS) else None
    out = []
    for series, study, patient in rows:
        model: dict[str, Any] = {
            "00080005": element("00080005", "ISO_IR 192"),
            "00080021": element("00080021", series.series_date),
            "00080031": element("00080031", series.series_time),
            "00080060": element("00080060", series.modality),
            "0008103E": element("0008103E", series.series_description),
            "00180015": element("00180015", series.body_part_examined),
            "0020000D": element("0020000D", study.study_instance_uid),
            "0020000E": element("0020000E", series.series_instance_uid),
            "00200011": element("00200011", series.series_number),
            "00201209": element("00201209", counts.get(series.id, 0)),
        }
        if include == "all" or any(k in include for k in STUDY_KEYS):
            study_part = _patient_json(patient)
            study_part.update(
                {
                    "00080020": element("00080020", study.study_date),
                    "00080030": element("00080030", study.study_time),
                    "00080050": element("00080050", study.accession_number),
                    "00080056": element("00080056", "ONLINE"),
                    "00080090": element("00080090", study.referring_physician_name),
                    "00081030": element("00081030", study.study_description),
                    "00200010": element("00200010", study.study_id),
                }
            )
            if study_stats is not None:
                study_part.update(_study_counts(study_stats, study.id))
            for key, value in study_part.items():
                if include == "all" or key in include:
                    model.setdefault(key, value)
        kept = _add_sequences(model, [*extra_keys, REQUEST_ATTRIBUTES],
                              [series, study, patient])
        _add_extra(model, [TIMEZONE, *PPS_START, *(k for k in extra_keys if k not in kept)],
                   samples.get(series.id))
        out.append(dict(sorted(model.items())))
    return out

def instance_matches(rows: Sequence[Any], include: Include) -> list[dict[str, Any]]:
    extra_keys = _extra_keys(include, INSTANCE_KEYS, ())
    out = []
    for instance, series, study, _patient in rows:
        model: dict[str, Any] = {
            "00080005": element("00080005", "ISO_IR 192"),
            "00080016": element("00080016", instance.sop_class_uid),
            "00080018": element("00080018", instance.sop_instance_uid),
            "00080056": element("00080056", "ONLINE"),
            "0020000D": element("0020000D", study.study_instance_uid),
            "0020000E": element("0020000E", series.series_instance_uid),
            "00200013": element("00200013", instance.instance_number),
            "00280008": element("00280008", instance.number_of_frames),
            "00280010": element("00280010", instance.rows),
            "00280011": element("00280011", instance.columns),
            "00280100": element("00280100", instance.bits_allocated),
            "00020010": element("00020010", instance.transfer_syntax_uid),
        }
        # The stored JSON is parsed only when needed: extra attributes, or the timezone
        # (rarely present, and the text says whether it is).
        if extra_keys or include == "all" or f'"{TIMEZONE}"' in instance.metadata_json:
            stored = json.loads(instance.metadata_json)
            _add_extra(model, [TIMEZONE], stored)
            if include == "all":
                for key, value in stored.items():
                    if "BulkDataURI" not in value and "InlineBinary" not in value:
                        model.setdefault(key, value)
            _add_extra(model, extra_keys, stored)
        out.append(dict(sorted(model.items())))
    return out


# Study attributes computed from the study's series and instances.
_STUDY_COUNTS = ("00080061", "00201206", "00201208")
StudyStatistics = tuple[dict[int, tuple[int, int]], dict[int, set[str]]]


def _table(model: type[Any]) -> Table:
    return cast(Table, model.__table__)


_SERIES, _INSTANCES = _table(Series), _table(Instance)
_IDS: BindParameter[list[int]] = bindparam("ids", expanding=True)
# Built once, with the keys as one expanding bound parameter: the statement's cache key
# and compiled SQL are reused by every query, where building it per call cost as much as
# running it (docs/performance.md, "QIDO and per-request cost, fourth pass"). One row
# per series of the studies: its modality and its instance count, a correlated count
# on the instances' series index. Grouping the instances themselves by study and
# modality, with a distinct count of series, made the database sort every instance of
# the matched studies (a temporary B-tree for the DISTINCT): about 7x slower for five
# studies of 300 instances (docs/performance.md, "Seventh pass").
_SERIES_SIZES = (
    select(
        _SERIES.c.study_pk, _SERIES.c.modality,
        select(func.count()).select_from(_INSTANCES)
        .where(_INSTANCES.c.series_pk == _SERIES.c.id).scalar_subquery(),
    )
    .where(_SERIES.c.study_pk.in_(_IDS))
)


def _study_statistics(session: Session, study_ids: list[int]) -> StudyStatistics:
    """(series count, instance count) and the modalities of each study, by study key.
    A series without instances counts for neither number, but its modality is listed."""
    stats: dict[int, tuple[int, int]] = {}
    modalities: dict[int, set[str]] = {}
    if study_ids:
        for study_pk, modality, n_instances in session.connection().execute(
                _SERIES_SIZES, {"ids": study_ids}):
            if n_instances:
                before = stats.get(study_pk, (0, 0))
                stats[study_pk] = (before[0] + 1, before[1] + n_instances)
            if modality:
                modalities.setdefault(study_pk, set()).add(modality)
    return stats, modalities


def _study_counts(statistics: StudyStatistics, study_id: int) -> dict[str, Any]:
    """Modalities in Study, Number of Study Related Series and Instances (PS3.4 C.3.4)."""
    stats, modalities = statistics
    n_series, n_instances = stats.get(study_id, (0, 0))
    return {
        "00080061": element("00080061", sorted(modalities.get(study_id, []))),
        "00201206": element("00201206", n_series),
        "00201208": element("00201208", n_instances),
    }


def _first_instances(group_column: Any) -> Select[tuple[Any, str]]:
    """The JSON of the first stored instance (lowest key) per value of `group_column`
    (a series column: study_pk or id) among the `ids` bound at execution.

    Each series' first instance is a correlated MIN on the instances' series index (one
    index probe), then the lowest of those per group: grouping the joined instances
    read every instance of the matched studies, ~7x slower for five CT studies
    (docs/performance.md, "Seventh pass")."""
    first_of_series = (
        select(func.min(_INSTANCES_INNER.c.id))
        .where(_INSTANCES_INNER.c.series_pk == _SERIES.c.id)
        .scalar_subquery()
    )
    per_series = (
        select(group_column.label("grp"), first_of_series.label("first"))
        .where(group_column.in_(_IDS))
        .subquery()
    )
    per_group = (
        select(per_series.c.grp, func.min(per_series.c.first).label("first"))
        .group_by(per_series.c.grp)
        .subquery()
    )
    return (
        select(per_group.c.grp, _INSTANCES.c.metadata_json)
        .select_from(_INSTANCES.join(per_group, _INSTANCES.c.id == per_group.c.first))
    )


_INSTANCES_INNER = _INSTANCES.alias("first_instance")
_FIRST_INSTANCE = {"STUDY": _first_instances(_SERIES.c.study_pk),
                   "SERIES": _first_instances(_SERIES.c.id)}


def sample_metadata(
    session: Session, level: Literal["STUDY", "SERIES"], ids: list[int],
    wanted: Sequence[str] | None = None,
) -> dict[int, dict[str, Any]]:
    """One stored instance's JSON per study or series (by key, at `level`), for
    attributes without a column. With `wanted` (tags), a JSON text holding none of them
    is not parsed (left out)."""
    if not ids:
        return {}
    texts = session.connection().execute(_FIRST_INSTANCE[level], {"ids": ids})
    return {group: json.loads(text) for group, text in texts
            if wanted is None or any(f'"{tag}"' in text for tag in wanted)}


def _patient_json(patient: Patient) -> dict[str, Any]:
    return {
        "00080005": element("00080005", "ISO_IR 192"),
        "00100010": element("00100010", patient.patient_name),
        "00100020": element("00100020", patient.patient_id),
        "00100021": element("00100021", patient.issuer_of_patient_id),
        "00100030": element("00100030", patient.patient_birth_date),
        "00100040": element("00100040", patient.patient_sex),
    }


def _extra_keys(include: Include, own: tuple[str, ...], all_extra: tuple[str, ...]) -> list[str]:
    if include == "all":
        return [k for k in all_extra if k not in own]
    return [k for k in include if k not in own]


def _add_extra(model: dict[str, Any], keys: list[str], sample: dict[str, Any] | None) -> None:
    for key in keys:
        if key in model:
            continue
        if sample is not None and key in sample:
            model[key] = sample[key]


_LEVEL_OF_ROW: dict[type, Level] = {Patient: "PATIENT", Study: "STUDY", Series: "SERIES"}


def _add_sequences(model: dict[str, Any], keys: list[str], rows: list[Any]) -> set[str]:
    """Fill requested indexed sequences from the rows that keep them (the same values
    sequence matching uses). Returns the keys answered, present or not; a row indexed
    before sequences were kept answers none (its sample instance's JSON will)."""
    answered: set[str] = set()
    for row in rows:
        sequences = stored(row.sequences_json)
        if sequences is None:
            continue
        for key in keys:
            if INDEXED_SEQUENCES.get(key) == _LEVEL_OF_ROW[type(row)]:
                answered.add(key)
                if key in sequences:
                    model[key] = sequences[key]
    return answered
