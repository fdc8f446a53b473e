"""`minipacs serve --workers N`: N node processes on one machine, on the same ports.

One Python process runs on one core (the GIL), so one node cannot use a second core for
a second association's parse, hash and index work. The supervisor here starts N worker
processes, each a full node (`node.run_node`: archive, DICOM and HTTP listeners) on the
one index and blob store, exactly as N machines behind a load balancer would be: nothing
is shared in memory. They accept on the same DICOM and HTTP ports.

Ports: the supervisor binds and listens on each port (port 0 picks the free port once)
and hands the listening sockets to its workers, which accept on them: one queue of
incoming connections, from which whichever worker is free takes the next. A busy or
stalled worker is not handed associations, and connections waiting in the queue
survive a worker's death. (The first design had each worker bind the port with
SO_REUSEPORT: the kernel then picked a worker by a hash of the peer's address, four
associations often landed three to one, and a stalled worker kept being handed
connections it could not serve.) Start-up chores that must happen once (schema migration, the
first admin account, sample studies) run in the supervisor before any worker starts. A
worker that dies (a crash, kill -9) is replaced; what it had acknowledged is durable,
what it had not, its peer was never told was stored. SQLite works with several workers
(WAL, writers queue on its lock with BEGIN IMMEDIATE and a 30 s busy timeout); under
heavy parallel writing PostgreSQL scales better.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from minipacs.access.accounts import AccountPolicy, Accounts
from minipacs.config import Settings
from minipacs.node import listen_on, load_samples, open_archive, run_node, start_banner

log = logging.getLogger(__name__)

_START_TIMEOUT = 120.0  # seconds a worker may take to listen
_STOP_TIMEOUT = 20.0


def listen_for_workers(host: str, port: int) -> socket.socket:
    """A socket listening on (host, port) (port 0: a free one), non-blocking: each
    worker waits for it to be readable and the first to accept takes the connection."""
    try:
        sock = listen_on(host, port)
    except OSError as exc:
        raise SystemExit(f"cannot listen on {host}:{port} for the workers: {exc}") from exc
    sock.setblocking(False)
    return sock


def _run_worker(settings: Settings, supervisor_pid: int,
                listening: dict[str, socket.socket]) -> None:
    """A worker process's main (spawned: a fresh interpreter; the listening sockets
    are passed to it by multiprocessing, as duplicated descriptors)."""
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)-7s [pid %(process)d] %(name)s: %(message)s")
    for noisy in ("pynetdicom", "alembic"):
        logging.getLogger(noisy).setLevel(
            max(logging.WARNING, logging.getLevelName(settings.log_level)))

    def follow_supervisor() -> None:
        # A supervisor killed outright cannot stop us: stop when we are orphaned.
        while os.getppid() == supervisor_pid:
            time.sleep(1)  # polling the parent pid: no event exists for it
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=follow_supervisor, daemon=True, name="follow-supervisor").start()
    run_node(settings, listening=listening)


class Supervisor:
    """Starts, replaces and stops the worker processes."""

    def __init__(self, settings: Settings, ready_dir: Path,
                 listening: dict[str, socket.socket]) -> None:
        self.settings = settings
        self.ready_dir = ready_dir
        self.listening = listening
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[int, Any] = {}  # slot -> multiprocessing Process
        self.stopping = False

    def ready_file(self, slot: int) -> Path:
        return self.ready_dir / f"worker-{slot}.json"

    def start(self, slot: int) -> None:
        self.ready_file(slot).unlink(missing_ok=True)
        update: dict[str, Any] = {"ready_file": self.ready_file(slot)}
        if slot != 0:
            # One HL7 listener (MLLP peers keep one connection open): worker 0's, which
            # is restarted in its slot if it dies.
            update["hl7_port"] = None
            update["hl7_report_sender"] = False  # one ORU^R01 sender too, in order
        settings = self.settings.model_copy(update=update)
        process = self.context.Process(target=_run_worker,
                                       args=(settings, os.getpid(), self.listening),
                                       name=f"minipacs-worker-{slot}", daemon=False)
        process.start()
        self.workers[slot] = process

    def wait_ready(self, slots: list[int]) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        for slot in slots:
            while not self.ready_file(slot).exists():
                if not self.workers[slot].is_alive():
                    raise SystemExit(f"worker {slot} exited while starting "
                                     f"(code {self.workers[slot].exitcode}); see its log above")
                if time.monotonic() > deadline:
                    raise SystemExit(f"worker {slot} not listening after {_START_TIMEOUT:.0f} s")
                time.sleep(0.05)  # polling for the worker's ready file

    def watch(self) -> None:
        """Replace workers that die, until asked to stop."""
        while not self.stopping:
            sentinels = {p.sentinel: slot for slot, p in self.workers.items()}
            for sentinel in multiprocessing.connection.wait(list(sentinels), timeout=1.0):
                slot = sentinels[sentinel]  # type: ignore[index]
                if self.stopping:
                    break
                log.warning("worker %d (pid %s) exited with code %s; starting another",
                            slot, self.workers[slot].pid, self.workers[slot].exitcode)
                self.start(slot)

    def stop(self) -> None:
        self.stopping = True
        for process in self.workers.values():
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + _STOP_TIMEOUT
        for process in self.workers.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5)


def serve_workers(settings: Settings) -> None:
    """Run `settings.workers` nodes on shared ports until SIGTERM or Ctrl+C."""
    # Once, before any worker: schema migration, the first admin, samples.
    archive = open_archive(settings)
    try:
        if settings.load_samples and settings.sample_dir.is_dir() and archive.is_empty():
            load_samples(archive, settings.sample_dir)
        accounts = Accounts(archive.engine, archive.write_engine,
                            AccountPolicy.from_settings(settings))
        one_time_password = accounts.ensure_admin() if settings.auth == "on" else None
        counts = archive.counts()
        not_durable = archive.durability_problems()  # each worker logs it
    finally:
        archive.close()
    listening = {
        "dicom_port": listen_for_workers(settings.dicom_host, settings.dicom_port),
        "http_port": listen_for_workers(settings.http_host, settings.http_port)}
    if settings.dicom_tls_port is not None:
        listening["dicom_tls_port"] = listen_for_workers(settings.dicom_host,
                                                         settings.dicom_tls_port)
    ports = {name: int(sock.getsockname()[1]) for name, sock in listening.items()}
    ready_dir = settings.data_dir / "workers"
    shutil.rmtree(ready_dir, ignore_errors=True)
    ready_dir.mkdir(parents=True)
    supervisor = Supervisor(settings.model_copy(update={
        **ports, "workers": 1, "load_samples": False}), ready_dir, listening)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for slot in range(settings.workers):
            supervisor.start(slot)
        supervisor.wait_ready(list(range(settings.workers)))
        worker_ready = json.loads(supervisor.ready_file(0).read_text())
        base = settings.base_url(ports["http_port"])
        print(start_banner(
            settings, counts, base, worker_ready["dicom_port"],
            worker_ready.get("dicom_tls_port"), worker_ready.get("hl7_port"),
            one_time_password, not_durable, [p.pid for p in supervisor.workers.values()]),
            flush=True)
        if settings.ready_file:
            partial = settings.ready_file.with_name(settings.ready_file.name + ".partial")
            partial.write_text(json.dumps({
                **worker_ready, "url": base,
                "worker_pids": [p.pid for p in supervisor.workers.values()]}))
            partial.replace(settings.ready_file)
        supervisor.watch()
    finally:
        supervisor.stop()
        for sock in listening.values():
            sock.close()
        log.info("minipacs workers stopped")
