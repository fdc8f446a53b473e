"""A real OpenID Provider for the single sign-on tests: panva's `oidc-provider` from npm
(OpenID Certified) run by Node.js, on a free loopback port (tests/oidc_provider/).

Node.js and npm come from Debian (./test.sh installs them); the npm package is installed
once into a cache folder named after the lock file's digest, with `npm ci` (exactly the
versions of tests/oidc_provider/package-lock.json). A missing node or npm fails the test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

PROVIDER_SOURCE = Path(__file__).resolve().parent / "oidc_provider"
KEY_ID = "minipacs-test-key"
AUDIENCE = "urn:minipacs"  # the API's resource indicator: access tokens' 'aud'


def _require(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run ./test.sh, which installs it (apt-get "
                    "nodejs npm)")
    return path


def provider_install() -> Path:
    """A folder with provider.mjs and its node_modules (npm ci, cached by lock digest)."""
    lock = (PROVIDER_SOURCE / "package-lock.json").read_bytes()
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(lock).hexdigest()[:16]
    target = cache_root / "minipacs-tests" / f"oidc-provider-{digest}"
    if not (target / "node_modules" / "oidc-provider" / "package.json").exists():
        npm = _require("npm")
        _require("node")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="oidc-provider-", dir=target.parent))
        for name in ("package.json", "package-lock.json"):
            shutil.copy(PROVIDER_SOURCE / name, staging / name)
        done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                              cwd=staging, capture_output=True, text=True, timeout=300,
                              check=False)
        assert done.returncode == 0, f"npm ci of oidc-provider failed:\n{done.stderr}"
        if not target.exists():
            staging.rename(target)
        else:
            shutil.rmtree(staging, ignore_errors=True)
    shutil.copy(PROVIDER_SOURCE / "provider.mjs", target / "provider.mjs")
    return target


@dataclass
class RunningProvider:
    """A running provider: its issuer URL and the private key it signs with."""

    issuer: str
    key: RSAKey
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def sign(self, claims: dict[str, Any], key: RSAKey | None = None,
             kid: str = KEY_ID) -> str:
        """A JWT as the provider would sign it (with its own key, or another one)."""
        return jwt.encode({"alg": "RS256", "kid": kid, "typ": "at+jwt"}, claims,
                          key or self.key)

    def access_claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": AUDIENCE, "sub": "emr-reader",
                  "client_id": "emr-reader", "iat": now, "exp": now + 300,
                  "scope": "pacs", "roles": ["pacs-radiologist"]}
        claims.update(overrides)
        return claims

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_provider(work: Path, clients: list[dict[str, Any]],
                   accounts: dict[str, dict[str, Any]], timeout: float = 60.0
                   ) -> RunningProvider:
    install = provider_install()
    node = _require("node")
    key = RSAKey.generate_key(2048, private=True)
    jwk = {**key.as_dict(private=True), "kid": KEY_ID, "use": "sig", "alg": "RS256"}
    ready = work / "provider-ready.json"
    config = work / "provider.json"
    config.write_text(json.dumps({"jwks": {"keys": [jwk]}, "audience": AUDIENCE,
                                  "clients": clients, "accounts": accounts,
                                  "ready_file": str(ready)}))
    log_path = work / "provider.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen([node, str(install / "provider.mjs"), str(config)],
                                   cwd=install, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    issuer = ""
    while not issuer:
        if process.poll() is not None:
            raise RuntimeError(f"the OpenID Provider exited:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the OpenID Provider is not up after {timeout}s")
        try:
            issuer = json.loads(ready.read_text())["issuer"]
        except (OSError, ValueError):
            time.sleep(0.05)  # polling for readiness, not waiting on time
    return RunningProvider(issuer, key, process, log_path)
