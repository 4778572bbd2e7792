"""Private PostgreSQL and Redis servers that fault tests may stop and start.

Never the session's shared servers: a fault test kills what it uses, so it starts its own in a
temporary directory (``EmbeddedPostgres`` with ``pg_ctl``; ``redis-server`` when installed).
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from workers.embedded import EmbeddedPostgres, free_port

__all__ = ["PrivatePostgres", "PrivateRedis", "redis_server_binary"]


@dataclass
class PrivatePostgres:
    """An embedded PostgreSQL (core, analytics, audit) that can be stopped and started."""

    data_dir: Path
    dsns: dict[str, str] = field(default_factory=dict, init=False)
    faults: int = field(default=0, init=False)
    _pg: EmbeddedPostgres | None = field(default=None, init=False, repr=False)
    _options: str = field(default="", init=False, repr=False)

    def start(self) -> dict[str, str]:
        """Create (or reopen) the cluster and its databases; returns their DSNs."""
        self._pg = EmbeddedPostgres(self.data_dir)
        self.dsns = self._pg.start()
        # The postmaster's own options (socket directory, no TCP) to start it the same way.
        opts = shlex.split((self.data_dir / "postmaster.opts").read_text())
        self._options = " ".join(shlex.quote(part) for part in opts[3:])
        return self.dsns

    @property
    def running(self) -> bool:
        """Whether ``postmaster.pid`` exists (PostgreSQL removes it at a clean stop)."""
        return (self.data_dir / "postmaster.pid").exists()

    def stop_server(self) -> None:
        """Stop PostgreSQL (fast shutdown: open connections are cut, as in an outage)."""
        assert self._pg is not None, "start() first"
        self._pg.pg_ctl("stop", "-m", "fast")
        self.faults += 1

    def start_server(self) -> None:
        """Start PostgreSQL again with the same data and socket directory."""
        assert self._pg is not None, "start() first"
        self._pg.pg_ctl("-o", self._options, "-l", str(self.data_dir / "log"), "start")

    def close(self) -> None:
        """Stop the server whatever state it is in."""
        if self._pg is None:
            return
        if self.faults and self.running:
            # Restarted by us: pgserver's handle still points at the first postmaster, so stop
            # this one ourselves (CalledProcessError: it stopped between check and call).
            with contextlib.suppress(subprocess.CalledProcessError):
                self._pg.pg_ctl("stop", "-m", "fast")
        self._pg.stop()
        self._pg = None


def redis_server_binary() -> str | None:
    """Path of ``redis-server``, or ``None`` when it is not installed."""
    return shutil.which("redis-server")


@dataclass
class PrivateRedis:
    """A ``redis-server`` on a free loopback port, no persistence, stoppable and restartable."""

    work_dir: Path
    port: int = 0
    faults: int = field(default=0, init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> str:
        """Start (again, on the same port); returns the URL."""
        binary = redis_server_binary()
        assert binary is not None, "redis-server is not installed"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        cmd += ["--appendonly", "no", "--dir", str(self.work_dir)]
        with open(self.work_dir / "redis.log", "ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self.url
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"redis-server did not answer on {self.port} in {timeout_s}s")

    def kill(self) -> None:
        """SIGKILL the server (its data is gone: no persistence)."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
                self.faults += 1
            self._proc.wait()
            self._proc = None

    def stop(self) -> None:
        """Terminate the server (end of the test)."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
