"""Settings from IONVEIL_* variables: defaults, valid values, and errors naming the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ionveil.errors import ConfigurationError
from workers.settings import DATABASES, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no IONVEIL_* variable set."""
    for name in list(os.environ):
        if name.startswith("IONVEIL_"):
            monkeypatch.delenv(name)


def test_defaults_mean_embedded_servers() -> None:
    """With nothing set: no URLs (embedded servers), JSON logs at info, sane pool sizes."""
    s = load_settings()
    assert s.nats_url is None and s.redis_url is None
    assert all(s.dsn(db) is None for db in DATABASES)
    assert s.data_dir == Path(".ionveil")
    assert (s.log_level, s.log_format, s.http_host) == ("info", "json", "127.0.0.1")
    assert (s.db_pool_max, s.fetch_batch) == (10, 256)


def test_valid_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every variable is read from IONVEIL_<FIELD>; dsn() picks a database's DSN."""
    creds = tmp_path / "svc.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\nj\n-----BEGIN USER NKEY SEED-----\ns\n")
    env = {
        "IONVEIL_NATS_URL": "nats://a:4222,tls://b:4222",
        "IONVEIL_CORE_DSN": "postgresql://u@h/core",
        "IONVEIL_ANALYTICS_DSN": "postgres://u@h/analytics",
        "IONVEIL_AUDIT_DSN": "postgresql://u@h/audit",
        "IONVEIL_REDIS_URL": "redis://127.0.0.1:6379/0",
        "IONVEIL_DATA_DIR": str(tmp_path),
        "IONVEIL_NATS_CREDS": str(creds),
        "IONVEIL_LOG_LEVEL": "debug",
        "IONVEIL_LOG_FORMAT": "console",
        "IONVEIL_DB_POOL_MAX": "25",
        "IONVEIL_FETCH_BATCH": "1000",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    assert s.nats_url == "nats://a:4222,tls://b:4222"
    assert s.dsn("core") == "postgresql://u@h/core"
    assert s.dsn("analytics") == "postgres://u@h/analytics"
    assert s.dsn("audit") == "postgresql://u@h/audit"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.data_dir == tmp_path and s.nats_creds == creds
    assert (s.log_level, s.log_format, s.db_pool_max, s.fetch_batch) == (
        "debug",
        "console",
        25,
        1000,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IONVEIL_NATS_URL", "http://localhost:4222"),
        ("IONVEIL_NATS_URL", "nats://ok:4222,localhost:4223"),
        ("IONVEIL_CORE_DSN", "mysql://u@h/core"),
        ("IONVEIL_ANALYTICS_DSN", "analytics"),
        ("IONVEIL_AUDIT_DSN", "sqlite:///audit.db"),
        ("IONVEIL_REDIS_URL", "memcached://h"),
        ("IONVEIL_NATS_CREDS", "/nonexistent/svc.creds"),
        ("IONVEIL_NATS_TLS_CA", "/nonexistent/ca.pem"),
        ("IONVEIL_NATS_TLS_CERT", "/nonexistent/cert.pem"),
        ("IONVEIL_NATS_TLS_KEY", "/nonexistent/key.pem"),
        ("IONVEIL_LOG_LEVEL", "verbose"),
        ("IONVEIL_LOG_FORMAT", "xml"),
        ("IONVEIL_DB_POOL_MAX", "0"),
        ("IONVEIL_DB_POOL_MAX", "201"),
        ("IONVEIL_DB_POOL_MAX", "many"),
        ("IONVEIL_FETCH_BATCH", "0"),
        ("IONVEIL_FETCH_BATCH", "10001"),
    ],
)
def test_each_invalid_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """An invalid value raises ConfigurationError whose message names the IONVEIL_ variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=f"{variable}:") as info:
        load_settings()
    assert info.value.code == "configuration"


def test_several_invalid_variables_are_all_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every invalid variable is reported in one error, not just the first."""
    monkeypatch.setenv("IONVEIL_LOG_LEVEL", "loud")
    monkeypatch.setenv("IONVEIL_REDIS_URL", "nope")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert "IONVEIL_LOG_LEVEL:" in str(info.value) and "IONVEIL_REDIS_URL:" in str(info.value)


@pytest.mark.parametrize("variable", ["IONVEIL_NATS_URL", "IONVEIL_CORE_DSN", "IONVEIL_REDIS_URL"])
def test_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    """`IONVEIL_X=` (empty, as compose files often leave it) means "not set": embedded server."""
    monkeypatch.setenv(variable, "")
    s = load_settings()
    assert getattr(s, variable.removeprefix("IONVEIL_").lower()) is None


def test_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyword overrides take precedence over the environment and are validated the same way."""
    monkeypatch.setenv("IONVEIL_LOG_LEVEL", "error")
    assert load_settings(log_level="debug").log_level == "debug"
    with pytest.raises(ConfigurationError, match="IONVEIL_FETCH_BATCH:"):
        load_settings(fetch_batch=-1)


def test_unknown_database_is_a_configuration_error() -> None:
    """dsn() of a database that does not exist names it."""
    with pytest.raises(ConfigurationError, match="'reports'"):
        Settings().dsn("reports")
