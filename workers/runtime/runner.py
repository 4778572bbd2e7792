"""``run_worker``: start a worker, hand back a handle, drain it in order at exit.

Start: connect NATS -> provision streams from ``subjects.yaml`` -> open pools and Redis ->
``worker.setup(ctx)`` -> consumers (provisioned, bound, looping) -> micro service endpoints ->
background loops -> HTTP. Drain (on leaving the context, or on SIGTERM/SIGINT when asked):
stop fetching -> in-flight batches finish and are acked (grace 10 s, then cancelled, unacked)
-> background loops cancelled -> ``worker.teardown()`` -> micro service stopped -> NATS drained
-> pools and Redis closed -> HTTP stopped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager

import nats.errors
import structlog

from ionveil.errors import ConfigurationError
from shared.contracts.contracts import SERVICE_CONTRACTS
from workers.runtime.catalogue import Catalogue
from workers.runtime.connections import close_pools, connect_nats, open_pools, open_redis
from workers.runtime.consumer import ConsumerLoop
from workers.runtime.context import WorkerContext
from workers.runtime.endpoints import EndpointServer
from workers.runtime.http import HttpServer
from workers.runtime.metrics import WorkerMetrics
from workers.runtime.provisioning import consumer_settings, ensure_streams, load_catalogue
from workers.runtime.worker import Worker
from workers.settings import Settings

__all__ = ["DRAIN_GRACE_S", "WorkerHandle", "make_replica_id", "run_worker"]

log = structlog.get_logger(__name__)

DRAIN_GRACE_S = 10.0
_HEALTH_TIMEOUT_S = 2.0
_LAG_REFRESH_S = 5.0
_LOOP_RESTART_PAUSE_S = 1.0

# Runtimes that asked for signal handling: one SIGTERM drains every worker of the process.
_SIGNAL_TARGETS: set[_Runtime] = set()


def make_replica_id() -> str:
    """``<host>-<pid>-<random>``, safe inside a durable name (only ``[A-Za-z0-9-]``)."""
    host = "".join(c if c.isalnum() else "-" for c in socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class WorkerHandle:
    """What the body of ``async with run_worker(...)`` gets.

    Attributes:
        http_port: the port ``/health`` and ``/metrics`` are served on.
        ctx: the worker's context (connections, metrics, replica id).
        worker: the worker itself.
    """

    def __init__(self, runtime: _Runtime) -> None:
        self._runtime = runtime
        self.worker = runtime.worker
        self.http_port: int = 0
        self.ctx: WorkerContext = None  # type: ignore[assignment] # set before it is yielded

    async def wait_idle(self, timeout_s: float = 30.0) -> None:
        """Return once every consumer of the worker has nothing pending nor unacknowledged.

        Raises:
            TimeoutError: still busy after ``timeout_s`` (the message says which consumer).
        """
        deadline = time.monotonic() + timeout_s
        busy = ""
        while True:
            busy = ""
            for loop in self._runtime.loops:
                pending, ack_pending = await loop.consumer_info()
                if pending or ack_pending:
                    busy = f"{loop.durable}: {pending} pending, {ack_pending} unacknowledged"
                    break
            if not busy:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"worker {self.worker.name} not idle after {timeout_s}s: {busy}")
            await asyncio.sleep(0.05)

    def request_stop(self) -> None:
        """Ask the process to stop: wakes ``wait_stopped()`` (what SIGTERM does too)."""
        self._runtime.stop_requested.set()

    async def wait_stopped(self) -> None:
        """Wait until a stop is requested (signal or ``request_stop()``); for entry points."""
        await self._runtime.stop_requested.wait()

    @property
    def micro_service(self) -> object | None:
        """The worker's ``nats.micro.Service`` (``None`` without endpoints)."""
        endpoints = self._runtime.endpoints
        return endpoints.service if endpoints is not None else None


class _Runtime:
    """The state of one running worker; owns startup and the ordered drain."""

    def __init__(self, worker: Worker, settings: Settings, http_port: int | None) -> None:
        if not worker.name:
            raise ConfigurationError(f"{type(worker).__name__}.name is empty")
        self.worker = worker
        self.settings = settings
        self.http_port = http_port
        self.replica_id = make_replica_id()
        self.metrics = WorkerMetrics(worker.name)
        self.handle = WorkerHandle(self)
        self.loops: list[ConsumerLoop] = []
        self.loop_tasks: list[asyncio.Task[None]] = []
        self.background: list[asyncio.Task[None]] = []
        self.endpoints: EndpointServer | None = None
        self.http: HttpServer | None = None
        self.stop_requested = asyncio.Event()
        self.ctx: WorkerContext | None = None
        self._drained: asyncio.Future[None] | None = None
        self._set_up = False
        self._log = log.bind(worker=worker.name, replica_id=self.replica_id)

    def _port(self) -> int:
        if self.http_port is not None:
            return self.http_port
        contract = SERVICE_CONTRACTS.get(self.worker.name)
        if contract is None:
            raise ConfigurationError(
                f"worker {self.worker.name!r} has no SERVICE_CONTRACTS entry; pass http_port"
            )
        return contract["port"]

    async def start(self) -> None:
        worker = self.worker
        catalogue: Catalogue = load_catalogue()
        port = self._port()
        nc = await connect_nats(self.settings, f"ionveil-{worker.name}-{self.replica_id}")
        js = nc.jetstream()
        self.ctx = WorkerContext(
            settings=self.settings,
            nc=nc,
            js=js,
            pools={},
            redis=None,
            metrics=self.metrics,
            replica_id=self.replica_id,
        )
        self.handle.ctx = self.ctx
        await ensure_streams(js, catalogue)
        self.ctx.pools.update(await open_pools(self.settings, tuple(worker.databases)))
        self.ctx.redis = open_redis(self.settings)
        await worker.setup(self.ctx)
        self._set_up = True

        semaphore = asyncio.Semaphore(max(1, worker.max_concurrent_batches))
        for spec in worker.consumers():
            loop = ConsumerLoop(
                spec,
                consumer_settings(spec, catalogue),
                js=js,
                catalogue=catalogue,
                metrics=self.metrics.consumer(spec.durable),
                semaphore=semaphore,
                fetch_timeout_s=worker.fetch_timeout_s,
                nc=nc,
            )
            await loop.start()
            self.loops.append(loop)
        for loop in self.loops:
            self.loop_tasks.append(self._spawn(self._supervise(loop), f"consumer {loop.durable}"))

        self.endpoints = EndpointServer(
            worker.name,
            worker.endpoints(),
            nc=nc,
            metrics=self.metrics,
            timeout_s=worker.endpoint_timeout_s,
            description=SERVICE_CONTRACTS.get(worker.name, {}).get("description", ""),
        )
        await self.endpoints.start()
        for index, factory in enumerate(worker.background()):
            self.background.append(self._spawn(factory(), f"background {index}"))
        if self.loops:
            self.background.append(self._spawn(self._refresh_lag(), "lag refresh"))

        self.http = HttpServer(
            worker=worker.name,
            replica_id=self.replica_id,
            metrics=self.metrics,
            check=self.health_reasons,
            routes=worker.routes(),
        )
        self.handle.http_port = await self.http.start(self.settings.http_host, port)
        self._log.info(
            "worker started",
            consumers=[loop.durable for loop in self.loops],
            endpoints=[spec.name for spec in worker.endpoints()],
            http_port=self.handle.http_port,
        )

    def _spawn(self, coro: Awaitable[None], what: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.worker.name}: {what}")
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.error("worker task crashed", task=task.get_name(), exc_info=exc)

    async def _supervise(self, loop: ConsumerLoop) -> None:
        """Run a consumer loop; restart it after an unexpected error (a bug, logged)."""
        while True:
            try:
                await loop.run()
                return
            except Exception:
                self._log.exception("consumer loop crashed; restarting", consumer=loop.durable)
                await asyncio.sleep(_LOOP_RESTART_PAUSE_S)

    async def _refresh_lag(self) -> None:
        while True:
            for loop in self.loops:
                try:
                    await loop.consumer_info()
                except nats.errors.Error as exc:
                    self._log.debug("lag not refreshed", consumer=loop.durable, error=repr(exc))
            await asyncio.sleep(_LAG_REFRESH_S)

    async def health_reasons(self) -> list[str]:
        """Why the worker is unhealthy right now (empty list: healthy)."""
        ctx = self.ctx
        if ctx is None:
            return ["starting"]
        checks: list[Awaitable[str | None]] = []
        for name, pool in ctx.pools.items():
            checks.append(self._check(f"database {name}", pool.fetchval("SELECT 1")))
        if ctx.redis is not None:
            checks.append(self._check("redis", ctx.redis.ping()))
        checks.append(self._check("worker", self.worker.health(), expect_reason=True))
        reasons = [r for r in await asyncio.gather(*checks) if r]
        if not ctx.nc.is_connected:
            reasons.insert(0, "nats: not connected")
        for task in self.loop_tasks + self.background:
            if task.done() and not task.cancelled() and task.exception() is not None:
                reasons.append(f"{task.get_name()}: crashed: {task.exception()!r}")
        return reasons

    @staticmethod
    async def _check(
        what: str, probe: Awaitable[object], *, expect_reason: bool = False
    ) -> str | None:
        try:
            result = await asyncio.wait_for(probe, _HEALTH_TIMEOUT_S)
        except TimeoutError:
            return f"{what}: no answer within {_HEALTH_TIMEOUT_S:g}s"
        except Exception as exc:  # a failed probe is the answer, not an error of /health
            return f"{what}: {type(exc).__name__}: {exc}"
        if expect_reason and result:
            return f"{what}: {result}"
        return None

    async def drain(self) -> None:
        """The ordered shutdown; idempotent (a signal and the context exit may both call it)."""
        if self._drained is not None:
            await asyncio.shield(self._drained)
            return
        self._drained = asyncio.get_running_loop().create_future()
        try:
            await self._drain()
        finally:
            self._drained.set_result(None)

    async def _drain(self) -> None:
        self.stop_requested.set()
        started = time.monotonic()
        for loop in self.loops:
            loop.stop()
        if self.loop_tasks:
            _, late = await asyncio.wait(self.loop_tasks, timeout=DRAIN_GRACE_S)
            await _cancel(late)
            if late:
                self._log.warning("in-flight batches cancelled after grace", count=len(late))
        await _cancel(self.background)
        if self._set_up:
            try:
                await self.worker.teardown()
            except Exception:
                self._log.exception("worker teardown failed")
        if self.endpoints is not None:
            await self.endpoints.stop(DRAIN_GRACE_S)
        for loop in self.loops:
            await loop.close()
        if self.ctx is not None:
            await self._close_connections(self.ctx)
        if self.http is not None:
            await self.http.stop()
        self._log.info("worker drained", seconds=round(time.monotonic() - started, 3))

    async def _close_connections(self, ctx: WorkerContext) -> None:
        if not ctx.nc.is_closed:
            try:
                await ctx.nc.drain()
            except (nats.errors.Error, TimeoutError) as exc:
                self._log.warning("nats drain incomplete; closing", error=repr(exc))
                await ctx.nc.close()
        await close_pools(ctx.pools)
        if ctx.redis is not None:
            await ctx.redis.aclose()


async def _cancel(tasks: Iterable[asyncio.Task[None]]) -> None:
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)


def _install_signal_handlers(runtime: _Runtime) -> Callable[[], None]:
    """SIGTERM/SIGINT drain every signal-enabled worker; returns the uninstaller."""
    loop = asyncio.get_running_loop()
    _SIGNAL_TARGETS.add(runtime)
    drains: set[asyncio.Task[None]] = set()

    def on_signal(signum: int) -> None:
        log.info("signal received; draining", signal=signal.Signals(signum).name)
        for target in list(_SIGNAL_TARGETS):
            target.stop_requested.set()
            task = loop.create_task(target.drain())
            drains.add(task)
            task.add_done_callback(drains.discard)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    def uninstall() -> None:
        _SIGNAL_TARGETS.discard(runtime)
        if not _SIGNAL_TARGETS:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    return uninstall


@asynccontextmanager
async def run_worker(
    worker: Worker,
    settings: Settings,
    *,
    http_port: int | None = None,
    install_signal_handlers: bool = False,
) -> AsyncIterator[WorkerHandle]:
    """Run ``worker`` for the duration of the ``async with`` block.

    Args:
        worker: the worker to run.
        settings: where NATS, the databases and Redis are.
        http_port: ``None`` for the contract port of ``worker.name``, ``0`` for a free port.
        install_signal_handlers: make SIGTERM/SIGINT drain the worker and wake
            ``handle.wait_stopped()`` (for entry points; tests leave it off).

    Yields:
        The ``WorkerHandle`` (``http_port``, ``ctx``, ``wait_idle()``).

    Raises:
        ConfigurationError: missing URL/DSN, a bad catalogue, a consumer clashing with it.
    """
    runtime = _Runtime(worker, settings, http_port)
    uninstall: Callable[[], None] | None = None
    try:
        await runtime.start()
        if install_signal_handlers:
            uninstall = _install_signal_handlers(runtime)
        yield runtime.handle
    finally:
        try:
            await runtime.drain()
        finally:
            if uninstall is not None:
                uninstall()
