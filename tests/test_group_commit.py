"""Group commit: index writes waiting together share one transaction; each caller gets
its own outcome, and only after the commit that holds its work."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from minipacs.index.database import create_index_engine, session_factory
from minipacs.index.group_commit import GroupCommitter


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_index_engine(f"sqlite:///{tmp_path / 'group.sqlite'}", writer=True)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE arrivals (sop TEXT UNIQUE NOT NULL)"))
    yield engine
    engine.dispose()


def insert(sop: str) -> Callable[[Session], str]:
    def work(session: Session) -> str:
        session.execute(text("INSERT INTO arrivals (sop) VALUES (:sop)"), {"sop": sop})
        return sop
    return work


def stored(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(text("SELECT sop FROM arrivals")).scalars())


def test_work_queued_behind_a_transaction_commits_together_in_the_next_one(
    engine: Engine,
) -> None:
    lock = threading.Lock()
    committer = GroupCommitter(session_factory(engine), lock)
    outcomes: dict[str, object] = {}

    def call(sop: str) -> None:
        try:
            outcomes[sop] = committer.run(insert(sop))
        except Exception as exc:  # recorded for the assertions below
            outcomes[sop] = exc

    lock.acquire()  # the first caller leads a transaction and waits here for the lock
    first = threading.Thread(target=call, args=("1.1",))
    first.start()
    deadline = time.monotonic() + 30
    while not committer._committing:  # polling for the leader to take its batch
        assert time.monotonic() < deadline
        time.sleep(0.01)
    others = [threading.Thread(target=call, args=(f"1.{n}",)) for n in range(2, 7)]
    for thread in others:
        thread.start()
    while len(committer._queue) < 5:  # polling for the followers to queue
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert stored(engine) == [] and outcomes == {}  # nobody answered before a commit
    lock.release()
    for thread in [first, *others]:
        thread.join(30)
    assert outcomes == {f"1.{n}": f"1.{n}" for n in range(1, 7)}
    assert stored(engine) == [f"1.{n}" for n in range(1, 7)]
    assert (committer.batches, committer.items) == (2, 6)


def test_a_failing_piece_of_work_fails_alone_and_the_rest_of_its_batch_commits(
    engine: Engine,
) -> None:
    lock = threading.Lock()
    committer = GroupCommitter(session_factory(engine), lock)
    committer.run(insert("2.1"))
    outcomes: dict[str, object] = {}

    def call(name: str, sop: str) -> None:
        try:
            outcomes[name] = committer.run(insert(sop))
        except Exception as exc:  # recorded for the assertions below
            outcomes[name] = exc

    lock.acquire()
    leader = threading.Thread(target=call, args=("leader", "2.2"))
    leader.start()
    deadline = time.monotonic() + 30
    while not committer._committing:  # polling for the leader to take its batch
        assert time.monotonic() < deadline
        time.sleep(0.01)
    batch = [threading.Thread(target=call, args=(name, sop)) for name, sop in
             (("a", "2.3"), ("duplicate", "2.1"), ("b", "2.4"))]
    for thread in batch:
        thread.start()
    while len(committer._queue) < 3:  # polling for them to queue behind the leader
        assert time.monotonic() < deadline
        time.sleep(0.01)
    lock.release()
    for thread in [leader, *batch]:
        thread.join(30)
    assert isinstance(outcomes.pop("duplicate"), IntegrityError)
    assert outcomes == {"leader": "2.2", "a": "2.3", "b": "2.4"}
    assert stored(engine) == ["2.1", "2.2", "2.3", "2.4"]
    assert committer.batches == 3  # the first alone, the leader alone, then a, dup, b


def test_a_closed_committer_refuses_new_work(engine: Engine) -> None:
    committer = GroupCommitter(session_factory(engine), threading.Lock())
    committer.close()
    with pytest.raises(Exception, match="index writer is closed"):
        committer.run(insert("3.1"))
    assert stored(engine) == []


def test_lone_work_that_fails_after_writing_leaves_nothing_and_gets_its_own_error(
    engine: Engine,
) -> None:
    """A piece of work alone in its transaction runs without a savepoint: when it
    fails, the whole transaction is rolled back (its earlier writes too), its caller
    gets its own error, and nothing counts as committed."""
    committer = GroupCommitter(session_factory(engine), threading.Lock())

    def half_then_fail(session: Session) -> str:
        insert("4.1")(session)
        return insert("4.1")(session)  # the unique key refuses the second

    with pytest.raises(IntegrityError):
        committer.run(half_then_fail)
    assert stored(engine) == []
    assert (committer.batches, committer.items) == (0, 0)
    assert committer.run(insert("4.2")) == "4.2"  # the committer goes on
    assert stored(engine) == ["4.2"]
