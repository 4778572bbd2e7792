"""``ionveil up`` end to end, as a user runs it: a subprocess on embedded servers.

The fleet comes up in a temporary data directory (HTTP ports shifted by
``IONVEIL_HTTP_PORT_OFFSET`` so nothing clashes), every running worker answers /health, demo
traffic with a miss org produces a policy transition that ``ionveil tail`` prints, and SIGTERM
drains everything and stops the embedded servers.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.contracts.contracts import SERVICE_CONTRACTS
from workers.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "workers.cli"]


def _offset() -> int:
    """A port offset putting every contract port on a free port."""
    for _ in range(50):
        offset = free_port() - 8101
        if 0 < offset <= 50_000 and all(
            _free(c["port"] + offset) for c in SERVICE_CONTRACTS.values()
        ):
            return offset
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _env(data_dir: Path, offset: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IONVEIL_")}
    env.update(
        IONVEIL_DATA_DIR=str(data_dir),
        IONVEIL_HTTP_PORT_OFFSET=str(offset),
        IONVEIL_LOG_FORMAT="console",
        IONVEIL_LOG_LEVEL="warning",
        PYTHONUNBUFFERED="1",
    )
    return env


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, http.client.HTTPException):
        # Nothing serving HTTP there. A stopped worker's port is in the ephemeral range, so a
        # connect to it can meet itself (TCP self-connect) and read back its own request line.
        return None


class Up:
    """A running `ionveil up` subprocess and what it printed."""

    def __init__(self, data_dir: Path, offset: int) -> None:
        self.env = _env(data_dir, offset)
        self.log = open(data_dir / "up.out", "w+b")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*CLI, "up", "--nats-port", "0"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.data_dir = data_dir

    def output(self) -> str:
        return (self.data_dir / "up.out").read_text(errors="replace")

    def wait_summary(self, timeout_s: float = 120.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.output()
            if "Ctrl-C drains" in text:
                return text
            if self.proc.poll() is not None:
                pytest.fail(f"ionveil up exited {self.proc.returncode}:\n{text}")
            time.sleep(0.2)
        pytest.fail(f"no summary after {timeout_s}s:\n{self.output()}")

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"ionveil up did not stop on SIGTERM:\n{self.output()}")
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def up() -> Iterator[Up]:
    """`ionveil up` in a fresh data directory; always stopped at the end.

    Not pytest's ``tmp_path``: a concurrent pytest session on the same machine prunes old
    ``pytest-of-<user>`` directories, which would delete the running PostgreSQL's data.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="ionveil-up-"))
    fleet = Up(data_dir, _offset())
    try:
        yield fleet
    finally:
        fleet.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _run(up: Up, *args: str, timeout_s: float = 90.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=ROOT, env=up.env, capture_output=True, text=True, timeout=timeout_s
    )


def test_up_demo_tail_and_sigterm(up: Up) -> None:
    """The fleet starts, answers /health, shows a transition from demo traffic, stops cleanly."""
    summary = up.wait_summary()
    running = dict(re.findall(r"^    (\w+)\s+(http://\S+)/health", summary, re.M))
    assert "policy" in running, summary
    for name, base in running.items():
        deadline = time.monotonic() + 30
        while _http_status(f"{base}/health") != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _http_status(f"{base}/health") == 200, f"{name} unhealthy"
    servers = json.loads((up.data_dir / "servers.json").read_text())
    assert servers["nats_url"].startswith("nats://") and servers["core_dsn"]

    demo = _run(
        up,
        "demo",
        "--orgs",
        "metro,county",
        "--miss-org",
        "county",
        "--rate",
        "40",
        "--duration",
        "2",
        "--seed",
        "11",
    )
    assert demo.returncode == 0, demo.stderr
    assert "dispatch events" in demo.stderr and "done:" in demo.stdout

    tail = _run(
        up, "tail", "ionveil.policy.transitions.>", "--replay", "--count", "1", "--timeout", "60"
    )
    assert tail.returncode == 0, tail.stderr
    line = json.loads(tail.stdout.splitlines()[0])
    assert line["subject"] == "ionveil.policy.transitions.county"
    assert line["data"]["org_id"] == "county" and line["data"]["from"] == "normal"
    assert line["headers"]["Nats-Msg-Id"].startswith("county-")

    failed = "FAILED:" in summary
    assert up.stop() == (1 if failed else 0), up.output()
    assert "stopped" in up.output()
    assert not (up.data_dir / "servers.json").exists()
    for base in running.values():
        assert _http_status(f"{base}/health") is None
