"""Worker processes for fault tests: ``python -m workers.cli worker NAME`` as a subprocess.

Each process gets its environment (the test's own servers), a fixed HTTP port kept across
restarts and a log file; it can be SIGKILLed mid-batch and started again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from workers.embedded import free_port

__all__ = ["WorkerProcess", "health_status"]

ROOT = Path(__file__).resolve().parents[2]


async def health_status(port: int, timeout_s: float = 3.0) -> tuple[int, dict[str, object]]:
    """``(status, body)`` of ``GET /health`` on ``port``; ``(0, {})`` when nothing answers."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(f"http://127.0.0.1:{port}/health") as response,
        ):
            return response.status, await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return 0, {}


@dataclass
class WorkerProcess:
    """One ``ionveil worker NAME`` process.

    Args:
        name: the worker (policy, dashboard, alerts, simulator).
        env: ``IONVEIL_*`` variables pointing at the test's servers.
        log_dir: where ``<name>-<n>.log`` goes (one file per start).
    """

    name: str
    env: dict[str, str]
    log_dir: Path
    http_port: int = field(default_factory=free_port)
    kills: int = field(default=0, init=False)
    starts: int = field(default=0, init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        """The log of the current (or last) start."""
        return self.log_dir / f"{self.name}-{self.http_port}-{self.starts}.log"

    def start(self) -> None:
        """Start the process (the HTTP port stays the same across restarts)."""
        assert not self.running, f"{self.name} already running"
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "workers.cli", "worker", self.name]
        cmd += ["--http-port", str(self.http_port)]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        """SIGKILL (no drain, nothing flushed): the fault."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGKILL)
                self.kills += 1
            self._proc.wait()
            self._proc = None

    def terminate(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM (drain), then SIGKILL after ``timeout_s``; returns the exit status."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        code = self._proc.returncode
        self._proc = None
        return code

    def tail(self, chars: int = 3000) -> str:
        """The end of the current log (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def wait_health(self, want: int = 200, timeout_s: float = 60.0) -> dict[str, object]:
        """Poll ``/health`` until it answers ``want``; returns the body.

        Raises:
            AssertionError: the process died, or another status persisted past ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        last: tuple[int, dict[str, object]] = (0, {})
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self._proc.returncode}):\n{self.tail()}"
                )
            last = await health_status(self.http_port)
            if last[0] == want:
                return last[1]
            await asyncio.sleep(0.2)
        raise AssertionError(
            f"{self.name} /health not {want} after {timeout_s}s (last {last}):\n{self.tail()}"
        )
