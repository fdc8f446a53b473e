"""docker-compose.yml, the Dockerfile and the deployment docs name only real settings.

No Docker engine runs where the tests run, so this checks what can be checked without
one: the compose file parses, wires the three services together, and every MINIPACS_
variable anywhere in the deployment files is a field of `Settings`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from minipacs.config import Settings

pytestmark = pytest.mark.door_only  # the deployment files

REPO = Path(__file__).resolve().parents[1]
SETTING_NAMES = {"MINIPACS_" + name.upper() for name in Settings.model_fields}
_VARIABLE = re.compile(r"MINIPACS_[A-Z0-9_]+")


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_file_runs_minio_postgres_and_minipacs_with_health_checks_and_volumes() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"postgres", "minio", "minipacs"}
    for name in ("postgres", "minio"):
        assert services[name]["healthcheck"]["test"], name
        assert services["minipacs"]["depends_on"][name]["condition"] == "service_healthy"
    assert {"11112:11112", "8080:8080"} <= set(services["minipacs"]["ports"])
    declared = set(compose["volumes"])
    for service in services.values():
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in declared, volume
    env = services["minipacs"]["environment"]
    assert env["MINIPACS_STORAGE"] == "s3"
    assert env["MINIPACS_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["MINIPACS_S3_ENDPOINT"] == "minio:9000"


def test_every_minipacs_variable_in_deployment_files_is_a_real_setting() -> None:
    files = ["docker-compose.yml", "Dockerfile", ".env.example", "docs/deployment.md",
             "README.md"]
    for name in files:
        used = set(_VARIABLE.findall((REPO / name).read_text()))
        unknown = used - SETTING_NAMES
        assert not unknown, f"{name} names {sorted(unknown)}, not settings in config.py"
    compose_env = set(_compose()["services"]["minipacs"]["environment"])
    assert compose_env <= SETTING_NAMES


def test_compose_settings_validate_as_settings() -> None:
    env = _compose()["services"]["minipacs"]["environment"]

    def substitute(value: object) -> str:  # compose's ${VAR:-default}; other ${VAR} as "x"
        text = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))
        return re.sub(r"\$\{[^}]*\}", "x", text)

    values = {key.removeprefix("MINIPACS_").lower(): substitute(v) for key, v in env.items()}
    settings = Settings(**values)
    assert (settings.storage, settings.dicom_port, settings.http_port) == ("s3", 11112, 8080)
    assert settings.s3_spool and not settings.load_samples
