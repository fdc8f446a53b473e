"""Group commit: index writes from many threads share one transaction and one commit.

Each association (or HTTP request) thread hands its instance's index work to
`GroupCommitter.run`; one of the waiting threads takes every piece of work waiting at
that moment, runs each in its own SAVEPOINT of one transaction and commits once. A
commit is the durable write of the index (SQLite: the WAL fsync with synchronous=FULL;
PostgreSQL: the WAL flush), so N instances arriving together cost one fsync instead of
N, and on PostgreSQL they take the audit chain's head row lock once.

`run` returns only after the commit that holds its work succeeded: a caller that gets
an answer knows its rows are durable. One failing piece of work (a unique-key race
with another node, a bad value) rolls back its own savepoint and gets its own
exception; the others commit. When the commit itself fails, every caller in the batch
gets that error (and the archive's retry loop tries again).

Nothing here is shared between processes or nodes: each process has its own committer,
and their transactions meet in the database like any other writers'.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from minipacs.errors import StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")


class _WorkFailed(Exception):
    """A lone piece of work failed: roll its transaction back, commit nothing."""


class _Pending(Generic[T]):
    __slots__ = ("work", "done", "result", "error")

    def __init__(self, work: Callable[[Session], T]) -> None:
        self.work = work
        self.done = False  # read and written under the committer's condition
        self.result: T | None = None
        self.error: BaseException | None = None


class GroupCommitter:
    """Runs `work(session)` callables from many threads in shared transactions.

    Leader and followers, no thread of its own: a caller that finds no transaction in
    progress leads one, for every piece of work waiting at that moment (its own
    included); callers arriving meanwhile queue and wait, and when the leader has
    committed, one of them leads the next transaction for all of them. A lone caller
    (one association) so commits on its own thread with no hand-off. `max_batch` bounds
    how many pieces of work one transaction holds; `lock` is held around each
    transaction (SQLite: the archive's one-writer lock)."""

    def __init__(self, sessions: sessionmaker[Session], lock: AbstractContextManager[Any],
                 *, max_batch: int = 64, timeout: float = 120.0) -> None:
        self._sessions = sessions
        self._lock = lock
        self.max_batch = max_batch
        self.timeout = timeout
        self._queue: deque[_Pending[Any]] = deque()
        self._turn = threading.Condition()
        self._committing = False
        self._closed = False
        self.batches = 0  # transactions committed (for tests and benchmarks)
        self.items = 0

    def run(self, work: Callable[[Session], T]) -> T:
        """Run `work` in the next group transaction; return its result once committed.

        Raises what `work` raised, or the commit's error, or `StorageError` when no
        commit came within `timeout` seconds (work still queued is then dropped; work
        already in a transaction may still commit: either way the caller answers that
        it was not stored, and at worst a row exists for a blob that does)."""
        pending: _Pending[T] = _Pending(work)
        deadline = time.monotonic() + self.timeout
        with self._turn:
            if self._closed:
                raise StorageError("the index writer is closed; the archive is shutting down")
            self._queue.append(pending)
            while not pending.done:
                if not self._committing:
                    self._lead()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if pending in self._queue:
                        self._queue.remove(pending)
                    raise StorageError(f"the index did not commit within {self.timeout:.0f} s")
                self._turn.wait(remaining)
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]  # set when error is None

    def close(self) -> None:
        """Refuse new work (what is waiting still commits)."""
        with self._turn:
            self._closed = True

    def _lead(self) -> None:
        """Commit the waiting work as one transaction (called holding `_turn`, which is
        released while the transaction runs)."""
        self._committing = True
        batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
        self._turn.release()
        finished = False
        try:
            self._commit(batch)
            finished = True
        finally:
            self._turn.acquire()
            self._committing = False
            for pending in batch:
                if not finished and pending.error is None:  # interrupted: not durable
                    pending.error = StorageError("the index transaction was interrupted")
                pending.done = True
            self._turn.notify_all()

    def _commit(self, batch: list[_Pending[Any]]) -> None:
        alone = len(batch) == 1
        try:
            with self._lock, self._sessions() as session, session.begin():
                for pending in batch:
                    try:
                        if alone:  # its failure is the transaction's: no savepoint
                            pending.result = pending.work(session)
                            continue
                        with session.begin_nested():  # SAVEPOINT: its failure is its own
                            pending.result = pending.work(session)
                    except Exception as exc:  # handed to its caller, who decides
                        pending.error = exc
                        if alone:
                            raise _WorkFailed from exc
        except _WorkFailed:
            pass  # rolled back: the caller gets its work's own error
        except Exception as exc:  # the commit failed: nothing in the batch is durable
            log.warning("group commit of %d index writes failed: %s", len(batch), exc)
            for pending in batch:
                if pending.error is None:
                    pending.error = exc
                    pending.result = None
        else:
            self.batches += 1
            self.items += len(batch)
