"""The queries QIDO-RS and C-FIND compile (index/query.py) use the intended index, not a
full scan, on the backend the run uses (`--db sqlite|postgres`): the plans that keep a
lookup or a study list page fast at a million instances (issue #13; measured by
bench/scale.py, not here: no timing assertions).

SQLite: EXPLAIN QUERY PLAN, on an index without statistics (as minipacs runs it).
PostgreSQL: EXPLAIN with sequential scans disabled, so a small table shows which index
the planner can use rather than the seq scan it rightly prefers for a few rows."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from minipacs.archive import _LOOKUP_WITH_ORDERS, Archive
from minipacs.index.query import compile_query
from minipacs.web.query_params import parse_qido

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import scale_corpus  # noqa: E402

# Query kind -> (QIDO-RS parameters, the index SQLite searches with its terms (a regular
# expression), the index PostgreSQL uses).
KINDS: dict[str, tuple[list[tuple[str, str]], str, str]] = {
    "PatientID": (
        [("PatientID", "BN00000002")],
        r"SEARCH patients USING (COVERING )?INDEX ix_patients_patient_id \(patient_id=\?\)",
        "ix_patients_patient_id"),
    "AccessionNumber": (
        [("AccessionNumber", "{accession}")],
        r"SEARCH studies USING INDEX ix_studies_accession_number \(accession_number=\?\)",
        "ix_studies_accession_number"),
    "StudyInstanceUID": (
        [("StudyInstanceUID", "{study_uid}")],
        r"SEARCH studies USING INDEX sqlite_autoindex_studies_1 \(study_instance_uid=\?\)",
        "studies_study_instance_uid_key"),
    "name prefix": (
        [("PatientName", "nguyễn^th*"), ("limit", "100")],
        r"SEARCH patients USING (COVERING )?INDEX ix_patients_patient_name_lower "
        r"\(patient_name_lower>\? AND patient_name_lower<\?\)",
        "ix_patients_patient_name_lower_pattern"),
    "date range page": (
        [("StudyDate", "20200101-20201231"), ("fuzzymatching", "true"), ("limit", "26")],
        r"SEARCH studies USING INDEX ix_studies_date_time \(study_date>\? AND study_date<\?\)",
        "ix_studies_date_time"),
}


def explain(engine: Engine, statement: Any) -> list[str]:
    """The plan of `statement` with its parameters bound as when it runs."""
    compiled = statement.compile(engine, compile_kwargs={"render_postcompile": True})
    params: Any = compiled.params
    if compiled.positional:
        params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params)
            return [str(row[-1]) for row in rows]
        connection.exec_driver_sql("SET enable_seqscan = off")
        return [str(row[0]) for row in
                connection.exec_driver_sql("EXPLAIN " + str(compiled), params)]


@pytest.fixture
def filled(archive: Archive) -> Archive:
    """An index of a few patients and studies, written by the ingest code."""
    scale_corpus.fill(archive.engine, 3000, seed=5)
    return archive


def _values(archive: Archive) -> dict[str, str]:
    with archive.engine.connect() as connection:
        accession, study_uid = connection.exec_driver_sql(
            "SELECT accession_number, study_instance_uid FROM studies "
            "ORDER BY id LIMIT 1").one()
    return {"accession": accession, "study_uid": study_uid}


@pytest.mark.parametrize("kind", list(KINDS))
def test_study_query_uses_its_index_not_a_full_scan(filled: Archive, kind: str) -> None:
    items, sqlite_search, postgres_index = KINDS[kind]
    values = _values(filled)
    query = parse_qido([(k, v.format(**values)) for k, v in items])
    statement = compile_query("STUDY", query.filter).statement.limit((query.limit or 100) + 1)
    plan = explain(filled.engine, statement)
    text = "\n".join(plan)
    if filled.engine.dialect.name == "sqlite":
        assert any(re.fullmatch(sqlite_search, line) for line in plan), text
        assert not [line for line in plan if line.startswith("SCAN ")], text
        if kind == "date range page":  # the index gives the order: nothing to sort
            assert "USE TEMP B-TREE FOR ORDER BY" not in text, text
    else:
        assert re.search(rf"(Index Scan|Index Only Scan|Bitmap Index Scan)( Backward)? (using|on) "
                         rf"{postgres_index}\b", text), text
        assert "Seq Scan" not in text, text
        if kind == "name prefix":  # the prefix is an index range, not a filter
            assert "~>=~" in text and "~<~" in text, text


def test_accent_free_name_search_scans_patients_once_then_finds_studies_by_index(
    filled: Archive
) -> None:
    """An accent-free search (fuzzy: from the start of any name component) can use no
    index on the name; it reads the patients (the smallest table) once and finds their
    studies by their patient key, never walking every study."""
    query = parse_qido([("PatientName", "nguyen thi h*"), ("fuzzymatching", "true"),
                        ("limit", "100")])
    statement = compile_query("STUDY", query.filter).statement.limit(101)
    plan = explain(filled.engine, statement)
    text = "\n".join(plan)
    if filled.engine.dialect.name == "sqlite":
        assert "SEARCH studies USING INDEX ix_studies_patient_pk (patient_pk=?)" in plan, text
        assert not [line for line in plan if line.startswith("SCAN studies")], text
    else:
        assert "Seq Scan on studies" not in text, text
        assert re.search(r"Index (Only )?Scan using ix_studies_patient_pk", text), text


def test_name_prefix_range_matches_what_like_matches(filled: Archive) -> None:
    """The prefix's index range and the LIKE agree: every patient whose lower-cased name
    starts with the prefix is found, and only those."""
    prefix = "nguyễn^"
    query = parse_qido([("PatientName", prefix + "*"), ("limit", "1000")])
    found = filled._find("PATIENT", query.filter, limit=1000).matches
    with filled.engine.connect() as connection:
        names = [row[0] for row in connection.exec_driver_sql(
            "SELECT patient_name_lower FROM patients")]
    expected = sorted(n for n in names if n.startswith(prefix))
    assert expected, "the corpus has patients with this prefix"
    assert sorted(m["00100010"]["Value"][0]["Alphabetic"].lower() for m in found) == expected


@pytest.mark.parametrize("by_accession", [False, True], ids=["by study", "by accession"])
def test_ingest_lookup_reads_every_row_by_its_key(filled: Archive, by_accession: bool) -> None:
    """Every arriving instance runs this one statement (`Archive._record_instance`): its
    own row, its patient's (and alias), study's and series' rows, and whether an order
    waits for its study. Each must be an index lookup, or ingest slows as the index grows."""
    values = _values(filled)
    statement = _LOOKUP_WITH_ORDERS[by_accession].params(
        uid="1.2.826.0.1.3680043.10.1", patient_id="BN00000002", issuer="",
        study=values["study_uid"], series="1.2.826.0.1.3680043.10.2",
        accession=values["accession"] if by_accession else "")
    plan = explain(filled.engine, statement)
    text = "\n".join(plan)
    if filled.engine.dialect.name == "sqlite":
        for table in ("instances", "patient_aliases", "patients", "studies", "series",
                      "scheduled_procedure_steps"):
            assert re.search(rf"^SEARCH {table} USING (COVERING )?INDEX ", text, re.M), text
        scans = [line for line in plan if line.startswith("SCAN ")
                 and line not in ("SCAN one", "SCAN CONSTANT ROW")]
        assert not scans, text
    else:
        for table in ("instances", "patient_aliases", "patients", "studies", "series",
                      "scheduled_procedure_steps"):
            assert re.search(rf"Index (Only )?Scan using \w+ on {table}\b|"
                             rf"Bitmap Index Scan on ix_{table}_", text), text
        assert "Seq Scan" not in text, text
