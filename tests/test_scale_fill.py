"""The scale benchmark's bulk path (bench/scale_corpus.py) writes the rows ingest writes.

The benchmark fills indexes of a million instances without going through
`Archive.ingest` for each one; these tests hold it to that: the same instances stored
with `Archive.ingest` and filled by the bulk path give equal patient, study, series and
instance rows, column by column (keys and timestamps aside), on the backend the run
uses (`--db`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from conftest import open_test_archive
from minipacs.archive import Archive
from minipacs.config import Settings
from minipacs.index.database import create_index_engine
from minipacs.index.schema import upgrade

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import scale_corpus  # noqa: E402

TOTAL = 160  # a few studies, CR to CT: series of one instance and of dozens
SEED = 3
# Columns that differ by construction: surrogate keys (compared through the UIDs they
# point at), server timestamps.
SKIP = {"id", "patient_pk", "study_pk", "series_pk", "created_at", "updated_at"}
QUERIES = {
    "patients": "SELECT p.* FROM patients p ORDER BY p.patient_id",
    "studies": "SELECT s.*, p.patient_id AS of_patient FROM studies s "
               "JOIN patients p ON p.id = s.patient_pk ORDER BY s.study_instance_uid",
    "series": "SELECT r.*, s.study_instance_uid AS of_study FROM series r "
              "JOIN studies s ON s.id = r.study_pk ORDER BY r.series_instance_uid",
    "instances": "SELECT i.*, r.series_instance_uid AS of_series FROM instances i "
                 "JOIN series r ON r.id = i.series_pk ORDER BY i.sop_instance_uid",
}


def rows(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    with engine.connect() as connection:
        return {table: [{k: v for k, v in row.items() if k not in SKIP}
                        for row in connection.execute(text(sql)).mappings()]
                for table, sql in QUERIES.items()}


def ingested(archive: Archive) -> dict[str, list[dict[str, Any]]]:
    for part10 in scale_corpus.instances(TOTAL, SEED):
        archive.ingest(part10, received_from=scale_corpus.RECEIVED_FROM)
    return rows(archive.engine)


def filled(tmp_path: Path, backends: Any, exact: bool) -> dict[str, list[dict[str, Any]]]:
    url = backends.settings().get("database_url") or f"sqlite:///{tmp_path / 'bulk.sqlite'}"
    engine = create_index_engine(url, writer=True)
    try:
        upgrade(engine)
        written = scale_corpus.fill(engine, TOTAL, SEED, exact=exact, batch=50,
                                    check_every=1)
        assert written == TOTAL
        return rows(engine)
    finally:
        engine.dispose()


def assert_same_rows(bulk: dict[str, list[dict[str, Any]]],
                     real: dict[str, list[dict[str, Any]]]) -> None:
    for table in QUERIES:
        assert len(bulk[table]) == len(real[table]), table
        for mine, theirs in zip(bulk[table], real[table], strict=True):
            differ = {k: (mine[k], theirs[k]) for k in theirs if mine[k] != theirs[k]}
            assert differ == {}, f"{table}: {differ}"


@pytest.mark.parametrize("exact", [False, True], ids=["sibling-rows", "exact"])
def test_bulk_fill_writes_the_rows_ingest_writes_column_by_column(
    tmp_path: Path, settings: Settings, backends: Any, exact: bool
) -> None:
    archive = open_test_archive(settings)
    try:
        real = ingested(archive)
    finally:
        archive.close()
    bulk = filled(tmp_path, backends, exact)
    assert len(real["instances"]) == TOTAL
    assert any(len({r["of_series"] for r in real["instances"]}) < TOTAL for _ in [0])
    assert_same_rows(bulk, real)
    # The normalised columns are there, as ingest makes them: a Vietnamese name lower-
    # cased with its diacritics, the same without them, and the CCCD and BHYT numbers.
    patient = real["patients"][0]
    assert patient["patient_name_lower"] == patient["patient_name"].lower()
    assert patient["patient_name_folded"].isascii()
    assert patient["other_patient_ids"].count("|") == 3


def test_a_sibling_row_that_differs_from_ingest_is_caught(tmp_path: Path) -> None:
    engine = create_index_engine(f"sqlite:///{tmp_path / 'bulk.sqlite'}", writer=True)
    upgrade(engine)
    study = next(s for s in scale_corpus.studies(2000, SEED)
                 if any(x.count > 2 for x in s.series))
    series = next(x for x in study.series if x.count > 2)
    template = scale_corpus.series_template(study, series)
    from sqlalchemy.orm import Session
    with Session(engine) as session:
        first = scale_corpus.index_instance(
            session, scale_corpus.instance_part10(template, series, 1))
        part10 = scale_corpus.instance_part10(template, series, 2)
        row = scale_corpus.sibling_row(first, series, 2, part10)
        row["metadata_json"] = row["metadata_json"].replace('"Value":[2]', '"Value":[3]')
        with pytest.raises(AssertionError, match="metadata_json"):
            scale_corpus._check_sibling(session, row, part10)
    engine.dispose()
