"""Does the index database make a commit durable before it returns?

minipacs answers success only after the instance's row has committed. That promise
holds only if a commit is on disk when it returns. SQLite is ours to configure
(`database.py` sets synchronous=FULL on every connection). A PostgreSQL server is the
site's, and some tuning guides suggest settings that trade durability for speed.
`commit_durability_problems` reads the live settings; through `Archive.durability_problems`
every node start warns while one of them is set (as it does for MINIPACS_AUTH=off), the
`--workers` banner repeats it and `minipacs verify` lists it.
"""

from __future__ import annotations

from sqlalchemy import Engine, text

# PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA. In WAL mode only FULL and EXTRA
# sync the log at every commit.
_SQLITE_DURABLE = (2, 3)


def commit_durability_problems(engine: Engine) -> list[str]:
    """What in the index database's settings lets a committed row be lost at a power
    cut, one sentence each; empty when commits are durable."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            synchronous = connection.execute(text("PRAGMA synchronous")).scalar()
            mode = str(connection.execute(text("PRAGMA journal_mode")).scalar()).lower()
            if mode == "wal" and synchronous not in _SQLITE_DURABLE:
                return [f"SQLite runs with synchronous={synchronous} in WAL mode, so a "
                        "commit returns before its log is on disk: a power cut can lose "
                        "the last instances minipacs acknowledged"]
            return []
        if engine.dialect.name != "postgresql":
            return []
        setting = {name: str(connection.execute(text(f"SHOW {name}")).scalar()).lower()
                   for name in ("fsync", "synchronous_commit", "full_page_writes")}
    problems = []
    if setting["fsync"] == "off":
        problems.append("PostgreSQL runs with fsync=off: a power cut can lose or corrupt "
                        "the index, including instances minipacs acknowledged")
    if setting["synchronous_commit"] == "off":
        problems.append("PostgreSQL runs with synchronous_commit=off, so a commit returns "
                        "before it is on disk: a power cut can lose the last instances "
                        "minipacs acknowledged")
    if setting["full_page_writes"] == "off":
        problems.append("PostgreSQL runs with full_page_writes=off: a power cut can leave "
                        "torn pages in the index")
    return problems
