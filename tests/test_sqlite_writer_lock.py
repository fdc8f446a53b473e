"""SQLite writers in several processes (`serve --workers N`, a CLI import beside the
server) take the index's lock file before BEGIN IMMEDIATE: the lock changes hands as
soon as its holder commits, not when SQLite's busy handler next wakes its waiter (1, 2,
5 ... 100 ms sleeps)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from minipacs.index.database import create_index_engine

pytestmark = pytest.mark.door_only  # the SQLite index only, whatever the backend

_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from sqlalchemy import text
    from minipacs.index.database import create_index_engine
    engine = create_index_engine(sys.argv[1], writer=True)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO writes (who) VALUES ('holder')"))
        Path(sys.argv[2]).write_text("holding")
        time.sleep(float(sys.argv[3]))
        released = time.time()
    Path(sys.argv[2]).write_text(repr(released))  # committed: the lock is free
""")


def test_a_writer_in_another_process_gets_the_lock_as_soon_as_it_is_released(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    engine = create_index_engine(url, writer=True)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE writes (who TEXT, at REAL)"))
    marker = tmp_path / "holder"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, url, str(marker), "1.5"])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():  # polling for the holder's transaction
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.01)
        with engine.begin() as conn:  # waits for the holder's commit
            began = time.time()
            conn.execute(text("INSERT INTO writes (who, at) VALUES ('waiter', :at)"),
                         {"at": began})
        assert holder.wait(60) == 0
    finally:
        holder.kill()
    released = float(marker.read_text())
    # SQLite's busy handler, after a second of waiting, sleeps 100 ms between tries.
    assert 0 <= began - released < 0.03, began - released
    assert (tmp_path / "index.sqlite-writer.lock").exists()
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(text("SELECT who FROM writes"))] == [
            "holder", "waiter"]
    engine.dispose()
