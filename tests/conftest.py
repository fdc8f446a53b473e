"""Shared fixtures: real servers on free ports, real archives in temp folders.

Nothing here mocks our storage, index or protocol layers. External tools (dcmtk,
chromium, PostgreSQL) are required: a missing one fails the run (the README's test
command installs them), it never silently skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
SAMPLE_DIR = REPO / "sample_dicom"
sys.path.insert(0, str(TESTS_DIR))

from backends import Backends  # noqa: E402
from minipacs.access.principal import system_principal  # noqa: E402
from minipacs.archive import Archive  # noqa: E402
from minipacs.config import Settings  # noqa: E402
from minipacs.node import open_archive  # noqa: E402
from preloaded import LAUNCHER, PreloadedProcess  # noqa: E402


def _race_free_pynetdicom_requestors() -> None:
    """The tests' own pynetdicom requestors pause their reactor as the server does.

    pynetdicom 3.0.4 can let a requestor's reactor thread take the response its
    `send_*` method is waiting for (the race is described in
    minipacs.dimse.reactor_pause); the request then times out, whatever the server
    answered. It struck one C-STORE in a CI run once the server answered faster. Every
    association the tests open with `AE.associate` gets the checkpoint minipacs puts on
    its own associations. Only this process is changed: servers run in the launcher's
    children (tests/preloaded.py) or fresh interpreters."""
    from pynetdicom import AE

    from minipacs.dimse.reactor_pause import install

    associate = AE.associate

    def associate_race_free(self: AE, *args: Any, **kwargs: Any) -> Any:
        assoc = associate(self, *args, **kwargs)
        install(assoc)
        return assoc

    AE.associate = associate_race_free  # type: ignore[method-assign]


_race_free_pynetdicom_requestors()


def require_tool(name: str) -> str:
    """Path of an external command; fails the test when it is not installed."""
    # pynetdicom installs its own findscu/getscu/... into the venv; the peers must be dcmtk's.
    venv_bin = str(Path(sys.prefix) / "bin")
    search = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin
    )
    path = shutil.which(name, path=search)
    if path is None:
        pytest.fail(f"{name} is not installed; run ./test.sh, which installs it (apt-get)")
    return path


@dataclass
class ServerProcess:
    """A `minipacs serve` process on free ports. It is forked from the tests' preloaded
    interpreter (tests/preloaded.py: same code, ~1.6 s less CPU per start) unless
    `spawn` asks for a fresh `python -m minipacs` or it runs `--workers`."""

    data_dir: Path
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    ae_title: str = "MINIPACS"
    http_port: int = 0
    dicom_port: int = 0
    spawn: bool = False
    process: subprocess.Popen[bytes] | PreloadedProcess | None = None
    log_path: Path | None = None
    # The tests' admin API token, made with the CLI the first time a test asks for it
    # (`token`, `auth`, `http`): a DICOM-only test never pays for the CLI process.
    _token: str | None = None
    _http: httpx.Client | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        ready = self.data_dir / "ready.json"
        ready.unlink(missing_ok=True)
        self.log_path = self.data_dir / "server.log"
        argv = [
            "serve", "--data-dir", str(self.data_dir),
            "--http-port", "0", "--dicom-port", "0", "--http-host", "127.0.0.1",
            "--dicom-host", "127.0.0.1", "--ae-title", self.ae_title,
            "--ready-file", str(ready), *self.extra_args,
        ]
        if "--workers" not in self.extra_args:
            # One process, whatever the machine's cores (the default would run one per
            # core): tests of several workers ask for them (tests/test_workers.py).
            argv += ["--workers", "1"]
        env = {**os.environ, **self.env}
        if self.spawn or "--workers" in self.extra_args:  # workers re-run sys.argv[0]
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen([sys.executable, "-m", "minipacs", *argv],
                                                stdout=log, stderr=subprocess.STDOUT, env=env)
        else:
            self.process = LAUNCHER.start(argv, env, stdout=self.log_path)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"minipacs exited early:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"minipacs not ready after {timeout}s:\n{self.log()}")
            time.sleep(0.05)  # polling for readiness, not waiting on time
        ports = json.loads(ready.read_text())
        self.http_port, self.dicom_port = ports["http_port"], ports["dicom_port"]
        self._token = None
        self._http = None
        return self

    @property
    def auth_on(self) -> bool:
        off = "--auth" in self.extra_args and \
            self.extra_args[self.extra_args.index("--auth") + 1] == "off"
        return not off and self.env.get("MINIPACS_AUTH", "on") != "off"

    @property
    def token(self) -> str:
        """An admin API token ("" with auth off), made as a hospital admin would:
        `minipacs token create` on the server's data."""
        if self._token is None:
            self._token = self.create_token("tests-admin", "admin") if self.auth_on else ""
        return self._token

    @property
    def auth(self) -> dict[str, str]:
        """Headers that authenticate as the tests' admin token."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def http(self) -> httpx.Client:
        """An HTTP client on this server, authenticated as the tests' admin token."""
        if self._http is None:
            self._http = httpx.Client(base_url=self.http_url, headers=self.auth, timeout=60)
        return self._http

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """`minipacs ARGS` on this server's data folder and backends, as an admin runs it."""
        return LAUNCHER.run([*args, "--data-dir", str(self.data_dir), *self.extra_args],
                            {**os.environ, **self.env}, input=stdin, timeout=120)

    def create_token(self, name: str, role: str) -> str:
        """A new API token (`minipacs token create`), from the last line it prints."""
        done = self.cli("token", "create", name, "--role", role)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.strip().splitlines()[-1]

    def add_user(self, name: str, role: str, password: str) -> None:
        """A new account with a known password (`minipacs user add --password-stdin`)."""
        done = self.cli("user", "add", name, "--role", role, "--password-stdin",
                        stdin=password + "\n")
        assert done.returncode == 0, done.stdout + done.stderr

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, kill: bool = False) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self.process and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, backends: Backends
) -> Iterator[ServerProcess]:
    """One server for the session, with sample_dicom/ loaded. Tests add data with
    their own fresh UIDs, so they do not disturb each other."""
    proc = ServerProcess(tmp_path_factory.mktemp("server"), backends.server_args()).start()
    yield proc
    proc.stop()


@pytest.fixture
def empty_server(tmp_path: Path, backends: Backends) -> Iterator[ServerProcess]:
    """A server of its own with an empty archive (no samples)."""
    proc = ServerProcess(tmp_path / "data", ["--no-load-samples", *backends.server_args()])
    proc.data_dir.mkdir()
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def settings(tmp_path: Path, backends: Backends) -> Settings:
    """Settings of a fresh archive on the backends the run asks for (--db, --blobs)."""
    return Settings(data_dir=tmp_path / "data", load_samples=False, **backends.settings())


def open_test_archive(settings: Settings) -> Archive:
    """`open_archive` acting for the system principal "tests" (core calls need one)."""
    return open_archive(settings).acting_as(system_principal("tests"))


@pytest.fixture
def archive(settings: Settings) -> Iterator[Archive]:
    """An in-process archive on a fresh index (SQLite or PostgreSQL) and blob store,
    acting for the system principal "tests" (core calls need a principal)."""
    opened = open_archive(settings)
    yield opened.acting_as(system_principal("tests"))
    opened.close()


# ------------------------------------------------------------ backends (--db, --blobs)
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db", choices=("sqlite", "postgres"),
        default=os.environ.get("MINIPACS_TEST_DB", "sqlite"),
        help="index every archive and server fixture uses: a SQLite file (default) or a "
        "fresh database in a throwaway PostgreSQL cluster",
    )
    parser.addoption(
        "--blobs", choices=("folder", "s3"),
        default=os.environ.get("MINIPACS_TEST_BLOBS", "folder"),
        help="blob store of every archive and server fixture: a folder (default) or a "
        "fresh bucket on a loopback S3 server (moto_server)",
    )
    parser.addoption(
        "--every-test", action="store_true",
        help="on --db postgres / --blobs s3, also run the door_only tests (browser suites, "
        "fuzzers, HTTP bounds), which by default run in the embedded pass only",
    )


# Which tests the production pass (--db postgres / --blobs s3) leaves to the embedded one.
# A test whose subject is a door's parsing, refusals, transport or user interface (the
# browser suites, protocol fuzzers, HTTP bounds, DICOM TLS and timers, the benchmark's
# smoke run) makes the same index and blob calls on every backend, and those calls are
# what the rest of the suite runs on both; a test of pure code (rendering, encodings,
# message builders) touches no backend at all. Such tests run once, in the embedded
# pass: modules say so with `pytestmark = pytest.mark.door_only`, and every test that
# drives a browser is one.
# `--every-test` runs them on the production backends too.
_BROWSER_FIXTURES = {"browser", "firefox"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _BROWSER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.door_only)
    embedded = config.getoption("--db") == "sqlite" and config.getoption("--blobs") == "folder"
    if embedded or config.getoption("--every-test"):
        return
    kept = [item for item in items if item.get_closest_marker("door_only") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


def pytest_report_header(config: pytest.Config) -> str:
    return f"minipacs backends: index {config.getoption('--db')}, " \
        f"blobs {config.getoption('--blobs')}"


@pytest.fixture(scope="session")
def backends(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backends]:
    chosen = Backends(request.config.getoption("--db"), request.config.getoption("--blobs"),
                      tmp_path_factory.mktemp("backends"))
    yield chosen
    chosen.stop()


@pytest.fixture(scope="session")
def limited_server(
    tmp_path_factory: pytest.TempPathFactory, backends: Backends
) -> Iterator[ServerProcess]:
    """An empty server with small limits (uploads, query results) and CORS for one origin."""
    proc = ServerProcess(tmp_path_factory.mktemp("limited"), [
        "--no-load-samples", "--max-upload-bytes", "300000", "--max-query-results", "2",
        "--cors-origins", "https://viewer.example.org", *backends.server_args(),
    ])
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def viewer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of the module's own holding only sample_dicom/: other tests add studies
    (with shared accession numbers) to the session server, which would change what the
    study list and the EMR links show."""
    proc = ServerProcess(tmp_path_factory.mktemp("viewer-server")).start()
    yield proc
    proc.stop()


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium through Playwright, one for the whole run (Playwright's sync API
    allows one driver at a time)."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed; run ./test.sh, which installs it (apt-get)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def pytest_sessionfinish(session: pytest.Session) -> None:
    LAUNCHER.close()
