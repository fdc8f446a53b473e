"""A database that can lose commits is named at every start (index/durability.py).

The tests' PostgreSQL cluster runs with fsync, synchronous_commit and full_page_writes
off (tests/postgres_cluster.py, for speed), which is exactly what a site must be warned
about; SQLite is checked with the pragmas minipacs sets and with weaker ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url

from backends import Backends
from conftest import ServerProcess
from minipacs.index.database import create_index_engine
from minipacs.index.durability import commit_durability_problems

# Each check reads settings only; the module needs to run once, not per backend pass.
pytestmark = pytest.mark.door_only


def test_the_sqlite_index_minipacs_opens_has_durable_commits(tmp_path: Path) -> None:
    engine = create_index_engine(f"sqlite:///{tmp_path / 'index.sqlite'}", writer=True)
    try:
        assert commit_durability_problems(engine) == []
    finally:
        engine.dispose()


def test_an_sqlite_index_syncing_its_log_only_at_checkpoints_is_named(tmp_path: Path
                                                                      ) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'index.sqlite'}")

    @event.listens_for(engine, "connect")
    def weaker(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    try:
        [problem] = commit_durability_problems(engine)
    finally:
        engine.dispose()
    assert "synchronous=1" in problem and "acknowledged" in problem


def test_postgres_settings_that_can_lose_commits_are_each_named(backends: Backends) -> None:
    url = backends.postgres.create_database()
    engine = create_index_engine(url)
    try:
        problems = commit_durability_problems(engine)
    finally:
        engine.dispose()
    assert [p.split(":")[0] for p in problems] == [
        "PostgreSQL runs with fsync=off",
        "PostgreSQL runs with synchronous_commit=off, so a commit returns before it is on disk",
        "PostgreSQL runs with full_page_writes=off",
    ]
    # The live setting is read, not a default: turned on for this database, that
    # sentence goes and the cluster-wide two stay.
    target = make_url(url)
    with psycopg.connect(host=target.host, port=target.port, user=target.username,
                         dbname="postgres", autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{target.database}" SET synchronous_commit = on')
    engine = create_index_engine(url)
    try:
        problems = commit_durability_problems(engine)
    finally:
        engine.dispose()
    assert len(problems) == 2 and not any("synchronous_commit" in p for p in problems)


@pytest.mark.parametrize("workers", [1, 2], ids=["one node", "two workers"])
def test_a_server_on_such_a_database_warns_in_its_log_and_banner(
        backends: Backends, tmp_path: Path, workers: int) -> None:
    proc = ServerProcess(tmp_path / "data", ["--no-load-samples", "--database-url",
                                             backends.postgres.create_database(),
                                             *(["--workers", "2"] if workers > 1 else [])])
    proc.data_dir.mkdir()
    proc.start()
    try:
        log = proc.log()
    finally:
        proc.stop()
    assert "WARNING" in log and "the index does not keep acknowledged instances safe: " \
        "PostgreSQL runs with fsync=off" in log
    assert "  WARNING: PostgreSQL runs with synchronous_commit=off" in log  # the banner


def test_verify_warns_about_such_a_database_without_failing(backends: Backends,
                                                            tmp_path: Path) -> None:
    """`minipacs verify` is what an IT admin runs to check an archive; the stored data
    is whole (exit 0), and the settings that endanger what comes next are named."""
    archive = ServerProcess(tmp_path / "data", ["--no-load-samples", "--database-url",
                                                backends.postgres.create_database()])
    archive.data_dir.mkdir()
    done = archive.cli("verify")
    assert done.returncode == 0, done.stdout + done.stderr
    warnings = [line.strip() for line in done.stdout.splitlines()
                if line.strip().startswith("warning")]
    assert [w.split(":")[0] for w in warnings] == [
        "warning  PostgreSQL runs with fsync=off",
        "warning  PostgreSQL runs with synchronous_commit=off, so a commit returns before "
        "it is on disk",
        "warning  PostgreSQL runs with full_page_writes=off",
    ], done.stdout


def test_verify_of_the_embedded_index_has_no_such_warning(tmp_path: Path) -> None:
    archive = ServerProcess(tmp_path / "data", ["--no-load-samples"])
    archive.data_dir.mkdir()
    done = archive.cli("verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 instances checked" in done.stdout and "warning" not in done.stdout
