"""The tests' launcher (tests/preloaded.py) runs `minipacs` as `python -m minipacs` does:
same output and exit status, the environment and standard input it is given, a process
of its own that a signal stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ServerProcess
from preloaded import LAUNCHER

pytestmark = pytest.mark.door_only  # the tests' own machinery, no storage calls


def _spawned(*argv: str, env: dict[str, str] | None = None,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "minipacs", *argv], capture_output=True,
                          text=True, input=stdin, timeout=120, env=env)


@pytest.mark.parametrize("argv", [["--help"], ["token", "--help"], ["no-such-command"],
                                  ["serve", "--http-port", "not-a-port"]])
def test_output_and_exit_status_are_those_of_python_m_minipacs(argv: list[str]) -> None:
    spawned = _spawned(*argv)
    forked = LAUNCHER.run(argv, dict(os.environ))
    assert (forked.returncode, forked.stdout, forked.stderr) == \
        (spawned.returncode, spawned.stdout, spawned.stderr)


def test_a_start_refused_with_a_message_prints_it_and_exits_1(tmp_path: Path) -> None:
    argv = ["serve", "--dicom-tls-port", "0", "--no-load-samples"]
    message = "MINIPACS_DICOM_TLS_PORT needs MINIPACS_DICOM_TLS_CERT"
    spawned = _spawned(*argv, "--data-dir", str(tmp_path / "a"))
    forked = LAUNCHER.run([*argv, "--data-dir", str(tmp_path / "b")], dict(os.environ))
    assert spawned.returncode == forked.returncode == 1
    assert message in spawned.stderr and message in forked.stderr, forked.stderr


def test_environment_and_stdin_are_the_childs_own(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "MINIPACS_DATA_DIR": str(data), "MINIPACS_LOAD_SAMPLES": "false"}
    added = LAUNCHER.run(["user", "add", "lan", "--role", "radiologist", "--password-stdin"],
                         env, input="Mat-khau-dai-12345\n")
    assert added.returncode == 0, added.stdout + added.stderr
    listed = _spawned("user", "list", env=env)
    assert listed.returncode == 0 and "lan" in listed.stdout, listed.stdout + listed.stderr


def test_a_forked_server_is_a_process_of_its_own_that_sigkill_stops(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, ["--no-load-samples"]).start()
    assert server.process is not None
    assert server.process.pid not in (os.getpid(), os.getppid())
    assert server.http.get("/dicom-web/studies").status_code == 200
    server.process.send_signal(signal.SIGKILL)
    assert server.process.wait(30) == -signal.SIGKILL
    server.stop()
