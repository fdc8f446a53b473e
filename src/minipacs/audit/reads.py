"""Which reads to write down: every first access of a principal to a study, then again
once `window` seconds have passed.

A viewer opening a CT asks for its metadata and then hundreds of frames; the audit trail
must say that this user viewed this patient's study at this time, not repeat it hundreds
of times (IHE BALP records one event per query or retrieve transaction, and a study
open is one). The memory is per node and only ever causes an extra event, never a
missing one, so nodes need not share it.
"""

from __future__ import annotations

import threading
import time


class ReadCoalescer:
    def __init__(self, window: float = 300.0, capacity: int = 50_000) -> None:
        self.window = window
        self.capacity = capacity
        self._last: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()

    def first_in_window(self, actor: str, action: str, study_uid: str) -> bool:
        """True when this (actor, action, study) was not recorded within the window."""
        key = (actor, action, study_uid)
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.window:
                return False
            if len(self._last) >= self.capacity:
                self._last = {k: t for k, t in self._last.items() if now - t < self.window}
            self._last[key] = now
            return True
