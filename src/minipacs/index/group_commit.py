"""Group commit: index writes from many threads share one transaction and one commit.

Each association (or HTTP request) thread hands its instance's index work to
`GroupCommitter.run` and waits; one committer thread takes every piece of work waiting
at that moment, runs each in its own SAVEPOINT of one transaction and commits once. A
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
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from minipacs.errors import StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Pending(Generic[T]):
    __slots__ = ("work", "done", "result", "error")

    def __init__(self, work: Callable[[Session], T]) -> None:
        self.work = work
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class GroupCommitter:
    """Runs `work(session)` callables from many threads in shared transactions.

    `max_batch` bounds how many pieces of work one transaction holds (and so how long
    the first of them waits); `lock` is held around each transaction (SQLite: the
    archive's one-writer lock). The committer thread starts on first use."""

    def __init__(self, sessions: sessionmaker[Session], lock: AbstractContextManager[Any],
                 *, max_batch: int = 64, timeout: float = 120.0) -> None:
        self._sessions = sessions
        self._lock = lock
        self.max_batch = max_batch
        self.timeout = timeout
        self._queue: deque[_Pending[Any]] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # transactions committed (for tests and benchmarks)
        self.items = 0

    def run(self, work: Callable[[Session], T]) -> T:
        """Run `work` in the next group transaction; return its result once committed.

        Raises what `work` raised, or the commit's error, or `StorageError` when no
        commit came within `timeout` seconds (the work may still commit later: the
        caller must treat it as not acknowledged, which is what it will answer)."""
        pending: _Pending[T] = _Pending(work)
        with self._wake:
            if self._closed:
                raise StorageError("the index writer is closed; the archive is shutting down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="index-group-commit")
                self._thread.start()
            self._queue.append(pending)
            self._wake.notify()
        if not pending.done.wait(self.timeout):
            raise StorageError(f"the index did not commit within {self.timeout:.0f} s")
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]  # set when error is None

    def close(self) -> None:
        """Commit what is waiting, then stop the committer thread."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(self.timeout)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if not self._queue:  # closed and drained
                    return
                batch = [self._queue.popleft()
                         for _ in range(min(self.max_batch, len(self._queue)))]
            self._commit(batch)

    def _commit(self, batch: list[_Pending[Any]]) -> None:
        try:
            with self._lock, self._sessions() as session, session.begin():
                for pending in batch:
                    try:
                        with session.begin_nested():  # SAVEPOINT: its failure is its own
                            pending.result = pending.work(session)
                    except Exception as exc:  # handed to its caller, who decides
                        pending.error = exc
        except Exception as exc:  # the commit failed: nothing in the batch is durable
            log.warning("group commit of %d index writes failed: %s", len(batch), exc)
            for pending in batch:
                if pending.error is None:
                    pending.error = exc
                    pending.result = None
        else:
            self.batches += 1
            self.items += len(batch)
        finally:
            for pending in batch:
                pending.done.set()
