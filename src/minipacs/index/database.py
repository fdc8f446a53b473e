"""Engine and session factory for the index (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import threading
import time
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


class WriterLock:
    """A lock file beside a SQLite index that its writers, in every process, take
    before BEGIN IMMEDIATE and drop once they commit or roll back.

    SQLite hands its write lock between processes by having the waiter sleep and retry
    (its busy handler: 1, 2, 5, 10 ... 100 ms): with `serve --workers 2` ingesting,
    BEGIN IMMEDIATE waited up to 56 ms while the lock sat free. Here a waiter retries
    `flock` every 0.2 to 1 ms instead, so the lock changes hands within a millisecond of
    its release. A writer that cannot have it within `timeout` seconds goes on to SQLite,
    whose busy timeout then decides, as before. Each pooled connection has its own open
    file (flock excludes other open files, in this process too)."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._files: dict[int, int] = {}  # id(DBAPI connection) -> descriptor
        self._held: set[int] = set()
        self._guard = threading.Lock()

    def acquire(self, dbapi_connection: Any) -> None:
        key = id(dbapi_connection)
        with self._guard:
            fd = self._files.get(key)
            if fd is None:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._files[key] = fd
        deadline = time.monotonic() + self.timeout
        pause = 0.0002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    return  # SQLite's busy timeout decides from here
                time.sleep(pause)  # polling: flock has no timeout of its own
                pause = min(pause * 2, 0.001)
                continue
            self._held.add(key)
            return

    def release(self, dbapi_connection: Any) -> None:
        key = id(dbapi_connection)
        if key in self._held:
            self._held.discard(key)
            fcntl.flock(self._files[key], fcntl.LOCK_UN)

    def forget(self, dbapi_connection: Any) -> None:
        """The connection is closed: release and close its descriptor."""
        self.release(dbapi_connection)
        with self._guard:
            fd = self._files.pop(id(dbapi_connection), None)
        if fd is not None:
            os.close(fd)


def _raw(connection: Any) -> Any:
    """The DBAPI connection behind SQLAlchemy's pool proxy (or itself)."""
    return getattr(connection, "dbapi_connection", connection)


def _install_writer_lock(engine: Engine, lock: WriterLock) -> None:
    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(connection: Any) -> None:
        try:
            commit(connection)
        finally:
            lock.release(_raw(connection))

    def do_rollback(connection: Any) -> None:
        try:
            rollback(connection)
        finally:
            lock.release(_raw(connection))

    dialect.do_commit = do_commit  # type: ignore[method-assign,assignment]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign,assignment]
    event.listen(engine, "close", lambda dbapi_connection, _record: lock.forget(
        dbapi_connection))


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

        lock = None
        if writer and parsed.database and parsed.database != ":memory:":
            lock = WriterLock(Path(parsed.database + "-writer.lock"))
            _install_writer_lock(engine, lock)

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            if lock is None:
                conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")
                return
            raw = conn.connection.dbapi_connection
            lock.acquire(raw)
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                lock.release(raw)
                raise
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
