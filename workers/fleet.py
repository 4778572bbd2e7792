"""Several workers in one process, on embedded servers where no URL or DSN is configured.

``ionveil up`` is ``Fleet`` plus a summary: it starts ``EmbeddedNats`` / ``EmbeddedPostgres``
under ``IONVEIL_DATA_DIR`` for whatever is not set, records where they listen
(``<data dir>/servers.json``, read by ``ionveil demo``/``tail``/``worker`` run later), then
runs every worker of ``WORKERS`` whose module imports, each on its contract HTTP port plus
``IONVEIL_HTTP_PORT_OFFSET``. SIGINT/SIGTERM drains every worker, then stops the servers.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import socket
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from ionveil.errors import ConfigurationError
from shared.contracts.contracts import SERVICE_CONTRACTS, topological_order
from workers.embedded import EmbeddedNats, EmbeddedPostgres, free_port, write_ports_summary
from workers.runtime import Worker, WorkerHandle, run_worker
from workers.settings import DATABASES, Settings

__all__ = [
    "DEFAULT_NATS_PORT",
    "SERVERS_FILE",
    "WORKERS",
    "EmbeddedServers",
    "Fleet",
    "WorkerStatus",
    "http_port",
    "load_worker",
    "read_servers_file",
    "with_running_servers",
]

log = structlog.get_logger(__name__)

WORKERS: dict[str, str] = {
    "policy": "workers.policy",
    "analytics": "workers.analytics",
    "simulator": "workers.simulator",
    "dashboard": "workers.dashboard",
    "alerts": "workers.alerts",
}
"""Worker name -> module holding its ``Worker`` subclass (the one whose ``name`` matches)."""

SERVERS_FILE = "servers.json"
DEFAULT_NATS_PORT = 4222


def load_worker(name: str) -> type[Worker]:
    """The ``Worker`` subclass registered as ``name``.

    Raises:
        ConfigurationError: unknown name, or the module has no such worker class.
        ImportError: the module does not import (yet).
    """
    module_path = WORKERS.get(name)
    if module_path is None:
        raise ConfigurationError(f"unknown worker {name!r}; known: {', '.join(sorted(WORKERS))}")
    module = importlib.import_module(module_path)
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if issubclass(cls, Worker) and cls is not Worker and cls.name == name:
            return cls
    raise ConfigurationError(f"{module_path} defines no Worker subclass named {name!r}")


def http_port(name: str, settings: Settings) -> int:
    """The contract port of worker ``name`` plus ``IONVEIL_HTTP_PORT_OFFSET``."""
    return SERVICE_CONTRACTS[name]["port"] + settings.http_port_offset


def read_servers_file(data_dir: Path) -> dict[str, str]:
    """Where a running ``ionveil up`` started its embedded servers (empty if none)."""
    path = data_dir / SERVERS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: str(v) for k, v in data.items() if k.endswith(("_url", "_dsn"))}


def with_running_servers(settings: Settings) -> Settings:
    """``settings`` with unset NATS URL / DSNs taken from a running ``ionveil up``."""
    known = read_servers_file(settings.data_dir)
    missing = {
        key: value
        for key, value in known.items()
        if key in Settings.model_fields and getattr(settings, key) is None
    }
    return settings.model_copy(update=missing) if missing else settings


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class EmbeddedServers:
    """The embedded servers ``ionveil up`` started (none when everything is configured)."""

    settings: Settings
    nats: EmbeddedNats | None = None
    postgres: EmbeddedPostgres | None = None
    started: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, settings: Settings, *, nats_port: int = DEFAULT_NATS_PORT) -> EmbeddedServers:
        """Start what ``settings`` lacks; the returned ``settings`` name every server.

        Args:
            settings: the configuration (``data_dir`` holds the embedded servers' data).
            nats_port: the embedded NATS client port; 0, or a busy port, picks a free one.
        """
        out = cls(settings)
        data_dir = settings.data_dir.resolve()
        update: dict[str, Any] = {}
        try:
            if not settings.nats_url:
                port = nats_port if nats_port and _port_free(nats_port) else free_port()
                out.nats = EmbeddedNats(data_dir / "nats", port=port)
                update["nats_url"] = out.nats.start()
                out.started.append("nats")
            if not all(settings.dsn(db) for db in DATABASES):
                out.postgres = EmbeddedPostgres(data_dir / "pg")
                dsns = out.postgres.start()
                update.update({f"{db}_dsn": dsns[db] for db in DATABASES if not settings.dsn(db)})
                out.started.append("postgres")
        except BaseException:
            out.stop()
            raise
        out.settings = settings.model_copy(update=update)
        if out.started:
            write_ports_summary(
                data_dir / SERVERS_FILE,
                {
                    "pid": os.getpid(),
                    **{k: v for k, v in update.items() if k.endswith(("_url", "_dsn"))},
                },
            )
        return out

    def stop(self) -> None:
        """Stop what was started and forget the servers file."""
        if self.started:
            (self.settings.data_dir.resolve() / SERVERS_FILE).unlink(missing_ok=True)
        if self.nats is not None:
            self.nats.stop()
            self.nats = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None


@dataclass
class WorkerStatus:
    """One worker of the fleet: running (with its HTTP port), skipped or failed (why)."""

    name: str
    state: str  # "running", "skipped" or "failed"
    http_port: int | None = None
    reason: str = ""


class Fleet:
    """Run several workers in one process for the duration of ``async with``.

    Args:
        settings: every server named (see ``EmbeddedServers``).
        names: workers to run (default: every registered one), started in dependency order.
        install_signal_handlers: SIGTERM/SIGINT drain every worker (entry points).
    """

    def __init__(
        self,
        settings: Settings,
        names: list[str] | None = None,
        *,
        install_signal_handlers: bool = False,
    ) -> None:
        unknown = sorted(set(names or []) - set(WORKERS))
        if unknown:
            raise ConfigurationError(f"unknown workers {unknown}; known: {sorted(WORKERS)}")
        self.settings = settings
        wanted = set(names or WORKERS)
        self.names = [n for n in topological_order() if n in wanted]
        self.statuses: list[WorkerStatus] = []
        self.handles: dict[str, WorkerHandle] = {}
        self._signals = install_signal_handlers
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Fleet:
        await self._stack.__aenter__()
        try:
            for name in self.names:
                await self._start(name)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _start(self, name: str) -> None:
        try:
            cls = load_worker(name)
        except ImportError as exc:
            log.warning("worker_skipped", worker=name, reason=repr(exc))
            self.statuses.append(WorkerStatus(name, "skipped", reason=f"does not import: {exc}"))
            return
        port = http_port(name, self.settings)
        try:
            handle = await self._stack.enter_async_context(
                run_worker(
                    cls(),
                    self.settings,
                    http_port=port,
                    install_signal_handlers=self._signals,
                )
            )
        except Exception as exc:  # one broken worker must not take the fleet down; reported
            log.error("worker_failed_to_start", worker=name, exc_info=exc)
            self.statuses.append(
                WorkerStatus(name, "failed", reason=f"{type(exc).__name__}: {exc}")
            )
            return
        self.handles[name] = handle
        self.statuses.append(WorkerStatus(name, "running", http_port=handle.http_port))

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.__aexit__(*exc_info)  # drains in reverse start order

    async def wait_stopped(self) -> None:
        """Until a signal (or ``request_stop``) asks the fleet to stop."""
        if not self.handles:
            return
        handle = next(iter(self.handles.values()))
        await handle.wait_stopped()

    def request_stop(self) -> None:
        """Ask every worker to stop (what SIGTERM does)."""
        for handle in self.handles.values():
            handle.request_stop()
