"""The `ionveil` commands in process, against the suite's servers (configured, not embedded).

`ionveil up` runs in the main thread (it installs SIGTERM/SIGINT handlers) while a helper
thread waits for /health, runs `demo` and `tail`, and finally sends SIGTERM to the process.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.infra import Infra
from workers.cli import main
from workers.embedded import free_port


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return False  # not serving yet (a free port can even self-connect: a bad status line)


class _Stopper:
    """A helper thread that waits for a worker's /health, runs ``body``, then SIGTERMs this
    process, unless the command under test already returned (then it must not kill a later
    test)."""

    def __init__(self, port: int, body: Callable[[], None]) -> None:
        self.errors: list[BaseException] = []
        self._port, self._body = port, body
        self._returned = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            deadline = time.monotonic() + 60
            while not _healthy(self._port):
                if self._returned.is_set():
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nothing healthy on {self._port}")
                time.sleep(0.1)
            self._body()
        except BaseException as exc:  # reported by the test in the main thread
            self.errors.append(exc)
        finally:
            with self._lock:
                if not self._returned.is_set():
                    os.kill(os.getpid(), signal.SIGTERM)

    def returned(self) -> None:
        """The command returned: never signal after this; wait for the thread to end."""
        with self._lock:
            self._returned.set()
        self._thread.join(timeout=90)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, infra: Infra, dsns: dict[str, str], tmp_path: Path) -> int:
    """IONVEIL_* pointing at the suite's servers; returns the HTTP port offset used."""
    for key in list(os.environ):
        if key.startswith("IONVEIL_"):
            monkeypatch.delenv(key)
    offset = next(o for o in (free_port() - 8101 for _ in range(100)) if 0 < o <= 50_000)
    server_url = infra.nats_url  # the suite's real server, handed to the commands
    monkeypatch.setenv("IONVEIL_NATS_URL", server_url)
    for db, dsn in dsns.items():
        monkeypatch.setenv(f"IONVEIL_{db.upper()}_DSN", dsn)
    monkeypatch.setenv("IONVEIL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IONVEIL_HTTP_PORT_OFFSET", str(offset))
    monkeypatch.setenv("IONVEIL_LOG_FORMAT", "console")
    monkeypatch.setenv("IONVEIL_LOG_LEVEL", "warning")
    return offset


def test_up_on_external_servers_with_demo_and_tail(
    env: int, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    """`up --only policy` uses the configured servers (starts none); demo traffic with a miss
    org yields a transition that `tail --replay` prints; SIGTERM drains and exits 0."""
    results: dict[str, int] = {}

    def body() -> None:
        results["demo"] = main(
            [
                "demo",
                "--orgs",
                "north,south",
                "--miss-org",
                "south",
                "--rate",
                "50",
                "--duration",
                "1",
                "--seed",
                "3",
            ]
        )
        results["tail"] = main(
            ["tail", "ionveil.policy.transitions.>", "--replay", "--count", "1", "--timeout", "30"]
        )

    stopper = _Stopper(8101 + env, body)
    code = main(["up", "--only", "policy"])
    stopper.returned()
    out = capsys.readouterr()
    assert not stopper.errors, stopper.errors
    assert code == 0
    assert "(external, JetStream)" in out.out and "(external)" in out.out
    assert results == {"demo": 0, "tail": 0}
    transition = json.loads(next(line for line in out.out.splitlines() if line.startswith("{")))
    assert transition["subject"] == "ionveil.policy.transitions.south"
    assert "stopped" in out.out
    assert not (tmp_path / "servers.json").exists()


def test_worker_command_runs_one_worker_until_sigterm(
    env: int, capsys: pytest.CaptureFixture
) -> None:
    """`ionveil worker policy --http-port N` serves /health on N and drains on SIGTERM."""
    port = free_port()
    stopper = _Stopper(port, lambda: None)
    code = main(["worker", "policy", "--http-port", str(port)])
    stopper.returned()
    assert code == 0
    assert not stopper.errors, stopper.errors
    assert f"policy running: http://127.0.0.1:{port}/health" in capsys.readouterr().out


def test_tail_times_out_with_status_1_when_count_not_reached(
    env: int, capsys: pytest.CaptureFixture
) -> None:
    """`tail --count 1 --timeout 0.5` on a silent subject exits 1 after the timeout."""
    assert main(["tail", "ionveil.nothing.here", "--count", "1", "--timeout", "0.5"]) == 1
    assert "# tailing ionveil.nothing.here" in capsys.readouterr().err


def test_demo_without_streams_explains_what_to_do(
    env: int, capsys: pytest.CaptureFixture, nc: object
) -> None:
    """With no stream to take the traffic, demo exits 1 and says to start the fleet."""
    assert main(["demo", "--duration", "0.2", "--seed", "1"]) == 1
    assert "ionveil up" in capsys.readouterr().err


def test_embedded_servers_start_only_what_is_missing(tmp_path: Path, dsns: dict[str, str]) -> None:
    """With DSNs configured only NATS is embedded (on a free port when the asked one is busy);
    servers.json records it for later commands and goes away at stop."""
    import socket

    from workers.fleet import EmbeddedServers, read_servers_file
    from workers.settings import Settings

    settings = Settings(data_dir=tmp_path, **{f"{db}_dsn": dsn for db, dsn in dsns.items()})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        servers = EmbeddedServers.start(settings, nats_port=taken)
    try:
        assert servers.started == ["nats"] and servers.postgres is None
        assert servers.settings.nats_url and not servers.settings.nats_url.endswith(f":{taken}")
        assert servers.settings.core_dsn == dsns["core"]
        assert read_servers_file(tmp_path) == {"nats_url": servers.settings.nats_url}
    finally:
        servers.stop()
    assert read_servers_file(tmp_path) == {}


async def test_fleet_reports_failed_and_skipped_workers(
    settings: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose module does not import is skipped, one that cannot start is reported
    failed, and the others run; request_stop wakes wait_stopped."""
    from workers import fleet as fleet_module
    from workers.fleet import Fleet

    monkeypatch.setitem(fleet_module.WORKERS, "dashboard", "workers.not_written_yet")
    broken = settings.model_copy(update={"core_dsn": None})  # type: ignore[attr-defined]
    async with Fleet(broken, ["policy", "dashboard"]) as down:
        states = {s.name: s.state for s in down.statuses}
        assert states == {"policy": "failed", "dashboard": "skipped"}
        assert "IONVEIL_CORE_DSN" in down.statuses[0].reason
        await down.wait_stopped()  # nothing runs: returns at once
    ok = settings.model_copy(update={"http_port_offset": free_port() - 8101})  # type: ignore[attr-defined]
    async with Fleet(ok, ["policy"]) as up:
        assert [s.state for s in up.statuses] == ["running"]
        up.request_stop()
        await up.wait_stopped()
