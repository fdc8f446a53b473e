"""The index schema comes from Alembic migrations, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pydicom.uid import generate_uid
from sqlalchemy import inspect, text

from conftest import open_test_archive
from factories import make_instance
from minipacs.archive import Archive
from minipacs.config import Settings
from minipacs.index.database import create_index_engine
from minipacs.index.schema import (
    BASELINE,
    current_revision,
    head_revision,
    pending_model_changes,
    upgrade,
)


def test_new_archive_index_is_at_the_newest_revision_and_matches_the_models(
    archive: Archive,
) -> None:
    assert current_revision(archive.engine) == head_revision()
    # Fails when index/models.py changed without a migration: run `minipacs db revision`.
    assert pending_model_changes(archive.engine) == []


def test_upgrade_twice_changes_nothing_and_keeps_data(archive: Archive) -> None:
    study = generate_uid()
    archive.ingest(make_instance(study_uid=study))
    upgrade(archive.write_engine)
    assert current_revision(archive.engine) == head_revision()
    assert [r.study_instance_uid for r in archive.instances(study)] == [study]


def test_index_made_before_migrations_is_stamped_as_baseline_then_upgraded(
    settings: Settings,
) -> None:
    engine = create_index_engine(settings.index_url, writer=True)
    # What the foundation did before migrations: create_all of its own five tables, as
    # they were then (revision 0001; columns added since arrive through later revisions).
    upgrade(engine, BASELINE)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))
    assert "alembic_version" not in inspect(engine).get_table_names()
    assert set(inspect(engine).get_table_names()) == {
        "patients", "studies", "series", "instances", "audit_events"}
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert head_revision() >= BASELINE
    engine.dispose()
    archive = open_test_archive(settings)
    archive.ingest(make_instance())
    assert archive.counts()["instances"] == 1
    archive.close()


def test_db_upgrade_command_migrates_and_db_current_reports_it(settings: Settings) -> None:
    flags = ["--data-dir", str(settings.data_dir)]
    if settings.database_url:
        flags += ["--database-url", settings.database_url]

    def minipacs_db(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "minipacs", "db", *args, *flags],
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "none (empty)" in minipacs_db("current")
    assert f"index at revision {head_revision()} (was empty)" in minipacs_db("upgrade")
    assert "up to date" in minipacs_db("current")


def test_migration_files_are_numbered_in_order() -> None:
    versions = Path(__file__).resolve().parents[1] / "src/minipacs/index/migrations/versions"
    numbers = sorted(p.name[:4] for p in versions.glob("[0-9][0-9][0-9][0-9]_*.py"))
    assert numbers == [f"{n:04d}" for n in range(1, len(numbers) + 1)]
    assert numbers[-1] == head_revision()
