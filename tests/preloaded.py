"""Start `minipacs` processes for the tests from an interpreter that has already imported
minipacs, instead of a fresh `python -m minipacs` each time.

A fresh interpreter spends ~1.6 s of CPU importing FastAPI, SQLAlchemy, pydicom,
pynetdicom and the FHIR models before `minipacs serve` does anything, and ~0.9 s before a
CLI command such as `minipacs token create` does. The suite starts a few hundred of them
on 2 cores. Here one launcher process per pytest run imports all of that once, then
forks: each child sets the environment, working folder, argv and standard streams it was
asked for and runs `minipacs.cli.main`, exactly what `python -m minipacs` runs. The child
is a real, separate process (its own pid, ports, threads; killable with SIGKILL); only
the import work is shared, as with a pre-forking server (gunicorn's `--preload`).

The launcher has one thread and starts none, so a fork never copies a lock some other
thread held. It reports each child's exit status in a file, since the tests are not
the child's parent and cannot `waitpid` it. `minipacs serve --workers N` still starts
from a fresh interpreter (its workers are spawned from `sys.argv[0]`), and so does any
test that asks for `spawn=True`.

Protocol (the launcher's stdin/stdout, one JSON object per line): the tests send
{"argv", "env", "cwd", "stdin", "stdout", "stderr", "exit"} (paths; "stdin" may be null)
and read back {"pid"} or {"error"}.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_LAUNCHER_READY = "minipacs-launcher-ready"


# --- the launcher process -------------------------------------------------------------

def _preload() -> None:
    """Import what `minipacs serve` and the CLI commands import."""
    import minipacs.cli as cli
    import minipacs.node  # noqa: F401  (the node, its doors and the web app)
    import minipacs.web.app  # noqa: F401

    cli.build_parser()  # imports every command's module
    if threading.active_count() != 1:
        raise RuntimeError(f"preloading started threads: {threading.enumerate()}; "
                           "a fork would copy their locks")


def _child(request: dict[str, Any], protocol: tuple[int, int], wakeup: tuple[int, int]
           ) -> None:
    """In the forked child: become `minipacs ARGV` and never return."""
    code = 70  # EX_SOFTWARE, if anything below fails before main runs
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (*protocol, *wakeup):
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        stdin = os.open(request["stdin"] or os.devnull, os.O_RDONLY)
        stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        stderr = (stdout if request["stderr"] == request["stdout"] else
                  os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
        for source, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(source, target)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own stdin)
        sys.argv = ["minipacs", *request["argv"]]
        from minipacs.cli import main

        try:
            code = main(request["argv"])
        except SystemExit as exc:  # as the interpreter ends on one: a message is printed
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
    except BaseException:  # noqa: BLE001 (the child reports it on stderr and exits)
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _reap(exits: dict[int, str]) -> None:
    """Record the exit status of every child that has ended, in its "exit" file."""
    while exits:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        path = exits.pop(pid, None)
        if path is not None:
            temporary = f"{path}.partial"
            Path(temporary).write_text(str(os.waitstatus_to_exitcode(status)))
            os.replace(temporary, path)


def launcher_main() -> None:
    sys.path.pop(0)  # tests/, this file's folder: the children see what `python -m` sees
    _preload()
    requests = sys.stdin.buffer
    answers = sys.stdout.buffer
    protocol = (requests.fileno(), answers.fileno())
    wakeup = os.pipe()
    os.set_blocking(wakeup[0], False)
    os.set_blocking(wakeup[1], False)
    signal.set_wakeup_fd(wakeup[1])
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select below
    exits: dict[int, str] = {}
    answers.write(f"{_LAUNCHER_READY}\n".encode())
    answers.flush()
    pending = b""
    while True:
        readable, _, _ = select.select([protocol[0], wakeup[0]], [], [], 1.0)
        if wakeup[0] in readable:
            while True:
                try:
                    if not os.read(wakeup[0], 512):
                        break
                except BlockingIOError:
                    break
        _reap(exits)
        if protocol[0] not in readable:
            continue
        chunk = os.read(protocol[0], 65536)
        if not chunk:  # the tests are gone: so are we (children stop with their tests)
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request, protocol, wakeup)
            exits[pid] = request["exit"]
            answers.write(json.dumps({"pid": pid}).encode() + b"\n")
            answers.flush()
            _reap(exits)


# --- the tests' side ------------------------------------------------------------------

class PreloadedProcess:
    """A child of the launcher, with the parts of `subprocess.Popen` the tests use."""

    def __init__(self, pid: int, argv: list[str], exit_path: Path) -> None:
        self.pid = pid
        self.args = argv
        self.returncode: int | None = None
        self._exit_path = exit_path

    def poll(self) -> int | None:
        if self.returncode is None and self._exit_path.exists():
            self.returncode = int(self._exit_path.read_text())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.01)  # polling the launcher's exit file, bounded by the deadline
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass  # ended between the poll and the kill: its exit file says how

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Launcher:
    """The tests' handle on one launcher process (started on first use)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._count = 0
        # exit files and captured streams: never in a test's own folders
        self._scratch: Path | None = None

    def _scratch_path(self, name: str) -> Path:
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="minipacs-launcher-"))
        self._count += 1
        return self._scratch / f"{self._count}.{name}"

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert self._process.stdout is not None
            ready = self._process.stdout.readline().decode().strip()
            if ready != _LAUNCHER_READY:
                raise RuntimeError(f"the tests' minipacs launcher did not start: {ready!r}")
        return self._process

    def start(self, argv: list[str], env: dict[str, str], *, stdout: Path,
              stderr: Path | None = None, stdin: Path | None = None,
              cwd: Path | None = None) -> PreloadedProcess:
        """`minipacs ARGV` as a new process, its output appended to `stdout`/`stderr`."""
        with self._lock:
            process = self._started()
            exit_path = self._scratch_path("exit")
            request = {"argv": argv, "env": env, "cwd": str(cwd or Path.cwd()),
                       "stdin": str(stdin) if stdin else None, "stdout": str(stdout),
                       "stderr": str(stderr or stdout), "exit": str(exit_path)}
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(json.dumps(request).encode() + b"\n")
            process.stdin.flush()
            answer = json.loads(process.stdout.readline())
        return PreloadedProcess(answer["pid"], ["minipacs", *argv], exit_path)

    def run(self, argv: list[str], env: dict[str, str], *, input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`minipacs ARGV` to its end, like `subprocess.run(..., capture_output=True,
        text=True)`."""
        with self._lock:
            out, err, stdin = (self._scratch_path(n) for n in ("stdout", "stderr", "stdin"))
        if input is None:
            stdin = None
        else:
            stdin.write_text(input)
        process = self.start(argv, env, stdout=out, stderr=err, stdin=stdin)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        result = subprocess.CompletedProcess(["minipacs", *argv], code,
                                             out.read_text(errors="replace"),
                                             err.read_text(errors="replace"))
        for path in (stdin, out, err):
            if path is not None:
                path.unlink(missing_ok=True)
        return result

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


LAUNCHER = Launcher()

if __name__ == "__main__":
    launcher_main()
