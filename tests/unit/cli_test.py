"""The `ionveil` command without servers: registry, parsing, errors, output, fleet helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ionveil.errors import ConfigurationError
from shared.contracts.contracts import topological_order
from workers import fleet
from workers.cli import build_parser, main
from workers.codec import encode_payload
from workers.commands import command_modules
from workers.commands.tail import format_message
from workers.commands.up import mask_dsn, summary
from workers.fleet import (
    EmbeddedServers,
    Fleet,
    WorkerStatus,
    http_port,
    load_worker,
    with_running_servers,
)
from workers.policy import PolicyWorker
from workers.settings import Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No IONVEIL_* from the caller's environment leaks into these tests."""
    import os

    for key in list(os.environ):
        if key.startswith("IONVEIL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("IONVEIL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IONVEIL_LOG_FORMAT", "console")


def test_every_command_module_is_registered() -> None:
    """Subcommands come from workers/commands/ modules: up, worker, contracts, demo, tail."""
    names = {m.__name__.rsplit(".", 1)[1] for m in command_modules()}
    assert {"up", "worker", "contracts", "demo", "tail"} <= names
    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert names <= set(choices)


def test_contracts_prints_services_in_topological_order(capsys: pytest.CaptureFixture) -> None:
    """`ionveil contracts` lists every service with its port, dependencies first."""
    assert main(["contracts"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = [line.split()[1] for line in lines[1:]]
    assert listed == topological_order()
    assert any(" policy " in line and " 8101 " in line for line in lines)


def test_contracts_json(capsys: pytest.CaptureFixture) -> None:
    """`ionveil contracts --json` prints the contracts as a JSON list in the same order."""
    assert main(["contracts", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in data] == topological_order()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--rate", "0"], "--rate"),
        (["demo", "--duration", "-1"], "--duration"),
        (["demo", "--orgs", "a,b", "--miss-org", "c"], "miss_org"),
        (["demo", "--orgs", "a.b"], "orgs"),
    ],
)
def test_bad_demo_options_exit_2_naming_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    """Invalid demo options are refused before connecting, naming the option."""
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_invalid_environment_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A bad IONVEIL_* variable stops a command with its name in the message."""
    monkeypatch.setenv("IONVEIL_NATS_URL", "http://wrong")
    assert main(["tail", "ionveil.>"]) == 2
    assert "IONVEIL_NATS_URL" in capsys.readouterr().err


def test_missing_nats_url_without_a_running_fleet_exits_2(capsys: pytest.CaptureFixture) -> None:
    """With no URL and no `ionveil up` running, tail says IONVEIL_NATS_URL is not set."""
    assert main(["tail", "ionveil.>", "--timeout", "1"]) == 2
    assert "IONVEIL_NATS_URL" in capsys.readouterr().err


def test_unknown_worker_is_a_usage_error() -> None:
    """`ionveil worker nope` is refused by argparse (exit 2)."""
    with pytest.raises(SystemExit) as exc:
        main(["worker", "nope"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("data", "headers", "expected"),
    [
        (encode_payload({"a": 1}), None, {"a": 1}),
        (b'{"b": [1, 2]}', {"Content-Type": "application/json"}, {"b": [1, 2]}),
    ],
)
def test_tail_prints_decoded_payloads(
    data: bytes, headers: dict[str, str] | None, expected: dict
) -> None:
    """tail decodes MessagePack and JSON payloads into one JSON line with the subject."""
    line = json.loads(format_message("ionveil.alerts.metro.critical", data, headers))
    assert line["subject"] == "ionveil.alerts.metro.critical"
    assert line["data"] == expected
    assert ("headers" in line) is bool(headers)


def test_tail_shows_undecodable_payloads_with_the_error() -> None:
    """An undecodable body is printed with the decoder's error and its bytes in hex."""
    line = json.loads(format_message("s", b"\xc1", None))
    assert "payload" in line["error"] and line["raw"] == "c1"


def test_mask_dsn_hides_the_password() -> None:
    """DSNs in the summary never show a password."""
    assert mask_dsn("postgresql://u:secret@h:5432/core") == "postgresql://u:***@h:5432/core"
    assert (
        mask_dsn("postgresql://postgres:@/core?host=/x") == "postgresql://postgres:@/core?host=/x"
    )


def test_load_worker_finds_the_class_by_name() -> None:
    """The registry maps a worker name to its Worker subclass."""
    assert load_worker("policy") is PolicyWorker


def test_load_worker_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown names and modules without the worker raise ConfigurationError; a missing
    module raises ImportError (the fleet skips it)."""
    with pytest.raises(ConfigurationError, match="unknown worker"):
        load_worker("nope")
    monkeypatch.setitem(fleet.WORKERS, "policy", "workers.demo")
    with pytest.raises(ConfigurationError, match="no Worker subclass"):
        load_worker("policy")
    monkeypatch.setitem(fleet.WORKERS, "policy", "workers.not_written_yet")
    with pytest.raises(ImportError):
        load_worker("policy")


def test_fleet_refuses_unknown_workers_and_orders_by_dependencies() -> None:
    """Fleet names must be registered; they start in the contracts' dependency order."""
    with pytest.raises(ConfigurationError, match="unknown workers"):
        Fleet(Settings(), ["policy", "ghost"])
    order = Fleet(Settings()).names
    assert order.index("policy") < order.index("alerts")
    assert order.index("policy") < order.index("simulator")


def test_http_port_adds_the_offset() -> None:
    """Each worker listens on its contract port plus IONVEIL_HTTP_PORT_OFFSET."""
    assert http_port("policy", Settings()) == 8101
    assert http_port("dashboard", Settings(http_port_offset=1000)) == 9111


def test_running_fleet_servers_fill_only_missing_settings(tmp_path: Path) -> None:
    """Commands take NATS/DSNs from a running `ionveil up` unless the environment names them."""
    (tmp_path / "servers.json").write_text(
        json.dumps({"pid": 1, "nats_url": "nats://127.0.0.1:4999", "core_dsn": "postgresql://x/c"})
    )
    filled = with_running_servers(Settings(data_dir=tmp_path))
    assert filled.nats_url == "nats://127.0.0.1:4999" and filled.core_dsn == "postgresql://x/c"
    kept = with_running_servers(Settings(data_dir=tmp_path, nats_url="nats://other:4222"))
    assert kept.nats_url == "nats://other:4222"
    assert with_running_servers(Settings(data_dir=tmp_path / "none")).nats_url is None


def test_summary_lists_servers_workers_and_next_steps(tmp_path: Path) -> None:
    """The summary shows NATS, each DSN (masked), each worker's health URL or why it is not
    running, the dashboard page, and how to publish demo traffic and tail."""
    settings = Settings(
        data_dir=tmp_path,
        nats_url="nats://127.0.0.1:4222",
        core_dsn="postgresql://u:pw@db/core",
        analytics_dsn="postgresql://u:pw@db/analytics",
        audit_dsn="postgresql://u:pw@db/audit",
    )
    servers = EmbeddedServers(settings, started=["nats"])
    running = Fleet(settings)
    running.statuses = [
        WorkerStatus("policy", "running", 8101),
        WorkerStatus("dashboard", "running", 8111),
        WorkerStatus("alerts", "skipped", reason="does not import: no module"),
    ]
    text = summary(servers, running)
    assert "nats://127.0.0.1:4222  (embedded" in text
    assert "postgresql://u:***@db/core  (external)" in text and "pw" not in text
    assert "http://127.0.0.1:8101/health" in text
    assert "page http://127.0.0.1:8111/" in text
    assert "alerts     SKIPPED: does not import" in text
    assert "ionveil demo" in text and "ionveil tail" in text
    assert len(text.splitlines()) <= 25
