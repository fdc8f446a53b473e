"""A job a node runs every few seconds in a daemon thread (alert scans, audit forwarding).

A failing run is logged and the next one happens on time: background work must never die
silently, and never take the node down."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicTask:
    def __init__(self, name: str, run: Callable[[], object], interval: float) -> None:
        self.name = name
        self.run = run
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> PeriodicTask:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run()
            except Exception:  # noqa: BLE001 - logged; the next run retries
                log.exception("%s failed; trying again in %s s", self.name, self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
