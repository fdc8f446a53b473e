"""Engine and session factory for the index (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets queries run while a C-STORE commits; synchronous=FULL makes a commit
    # durable before we acknowledge (a power cut must not lose an acknowledged instance).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # PS3.4 C.2.2.2: matching is case-sensitive except for PN (which has its own columns).
    cursor.execute("PRAGMA case_sensitive_like=ON")
    cursor.close()


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_index_engine(url: str, *, writer: bool = False) -> Engine:
    """An engine on the index. For SQLite, `writer=True` starts each transaction with
    BEGIN IMMEDIATE, so concurrent writers (threads or an import next to the server)
    queue on the lock instead of failing when a read lock cannot be upgraded."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8,
            max_overflow=16,
        )
        event.listen(engine, "connect", _sqlite_pragmas)

        @event.listens_for(engine, "connect")
        def _own_transactions(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")
    else:
        engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    return engine


_VERSIONS = Path(__file__).resolve().parent / "migrations" / "versions"


def newest_revision() -> str:
    """The newest migration's id: revisions are numbered 0001, 0002, ... and each file
    is named after its id (tests/test_migrations.py holds both to that)."""
    return max(m.group(1) for p in _VERSIONS.glob("*.py")
               if (m := re.match(r"(\d{4})_", p.name)))


def _at_newest(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            found = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except Exception:  # no alembic_version table yet: an empty or pre-migration index
        return False
    return [row[0] for row in found] == [newest_revision()]


def create_schema(engine: Engine) -> None:
    """Bring the index to the newest schema through its Alembic migrations (idempotent).

    An index already at the newest revision is recognised with one SELECT, so the CLI and
    each store that opens the index do not import and walk Alembic's scripts (0.3 s)."""
    if _at_newest(engine):
        return
    from minipacs.index.schema import upgrade  # Alembic loads only when a schema is needed

    upgrade(engine)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
