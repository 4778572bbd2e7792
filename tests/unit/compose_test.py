"""docker-compose.yml agrees with the code: services, ports, settings names, files it mounts.

Docker is not available where the suite runs, so the file's structure is what is checked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.contracts.contracts import SERVICE_CONTRACTS
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
WORKERS = ("policy", "analytics", "simulator", "dashboard", "alerts")
INFRA = ("nats", "postgres-core", "postgres-analytics", "postgres-audit", "redis")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The parsed compose file (YAML anchors and merge keys resolved)."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _worker_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the ionveil image (the workers and the demo publisher)."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("image") == "ionveil:latest" or "build" in svc
    }


@pytest.mark.parametrize("name", WORKERS + INFRA)
def test_service_is_defined(compose: dict[str, Any], name: str) -> None:
    """Every worker and every server the fleet needs has a service."""
    assert name in compose["services"]


@pytest.mark.parametrize("name", WORKERS)
def test_worker_runs_its_command_on_its_contract_port(compose: dict[str, Any], name: str) -> None:
    """A worker runs `ionveil worker NAME`, publishes its contract port and health-checks it."""
    service = compose["services"][name]
    port = SERVICE_CONTRACTS[name]["port"]
    assert service["command"] == ["worker", name]
    assert service["build"] == "."
    assert f"{port}:{port}" in service["ports"]
    check = " ".join(service["healthcheck"]["test"])
    assert f"127.0.0.1:{port}{SERVICE_CONTRACTS[name]['health']}" in check
    env = _env(service)
    assert env["IONVEIL_NATS_USER"] == name
    assert env["IONVEIL_HTTP_HOST"] == "0.0.0.0"
    assert env["IONVEIL_NATS_URL"].startswith("nats://nats:")


def test_every_ionveil_variable_is_a_settings_field(compose: dict[str, Any]) -> None:
    """Each IONVEIL_* name given to an ionveil container is a field of `Settings`."""
    fields = {f"IONVEIL_{name.upper()}" for name in Settings.model_fields}
    seen = set()
    for name, service in _worker_services(compose).items():
        for key in _env(service):
            if key.startswith("IONVEIL_"):
                seen.add(key)
                assert key in fields, f"{name}: {key} is not a Settings field"
    assert {"IONVEIL_NATS_URL", "IONVEIL_CORE_DSN", "IONVEIL_REDIS_URL"} <= seen


def test_dsns_point_at_their_databases(compose: dict[str, Any]) -> None:
    """Each DSN names the compose service and the database of the same name."""
    env = _env(compose["services"]["policy"])
    for db in ("core", "analytics", "audit"):
        assert re.search(rf"@postgres-{db}:5432/{db}$", env[f"IONVEIL_{db.upper()}_DSN"])


def test_depends_on_targets_exist(compose: dict[str, Any]) -> None:
    """Every depends_on names a defined service (and waits for it to be healthy)."""
    services = compose["services"]
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        for dep in deps:
            assert dep in services, f"{name} depends on unknown {dep}"
            if isinstance(deps, dict):
                assert deps[dep]["condition"] in {"service_healthy", "service_started"}


@pytest.mark.parametrize("name", INFRA)
def test_servers_have_health_checks(compose: dict[str, Any], name: str) -> None:
    """NATS, PostgreSQL and Redis declare health checks (pg_isready for PostgreSQL)."""
    check = compose["services"][name]["healthcheck"]["test"]
    if name.startswith("postgres-"):
        assert "pg_isready" in check
        assert compose["services"][name]["environment"]["POSTGRES_DB"] == name.split("-")[1]


def test_nats_config_file_exists_and_every_password_is_passed(compose: dict[str, Any]) -> None:
    """The mounted NATS config exists, and each $VAR it reads is set in the nats service."""
    nats = compose["services"]["nats"]
    mounts = [v.split(":") for v in nats["volumes"] if v.startswith("./")]
    assert mounts, "the nats config must be mounted from the repository"
    for source, target, *_ in mounts:
        config = ROOT / source
        assert config.is_file(), source
        assert target in nats["command"]
    lines = (ROOT / mounts[0][0]).read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    wanted = set(re.findall(r"\$(IONVEIL_[A-Z_]+)", text))
    assert wanted, "passwords must come from the environment"
    assert wanted <= set(_env(nats))
    example = (ROOT / "deploy" / ".env.example").read_text()
    for var in wanted:
        assert f"{var}=" in example, f"{var} missing from deploy/.env.example"


def test_dockerfile_installs_the_package_and_runs_ionveil() -> None:
    """The image is python:3.11-slim, pip-installs the project and has `ionveil` as entry."""
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert "pip install ." in text
    assert 'ENTRYPOINT ["ionveil"]' in text
    for needed in ("pyproject.toml", "subjects.yaml", "ionveil", "services", "workers", "shared"):
        assert needed in text
