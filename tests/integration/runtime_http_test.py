"""The worker's HTTP server (/health, /metrics, extra routes) and its lifecycle, for real."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from nats.aio.client import Client as NATS

from ionveil.errors import ConfigurationError
from workers.codec import encode_payload
from workers.embedded import free_port
from workers.runtime import ConsumerSpec, Envelope, Worker, WorkerContext, run_worker
from workers.runtime import runner as runner_module
from workers.settings import Settings


class HttpWorker(Worker):
    """A worker with a database, a page of its own, a background loop and a health verdict."""

    name = "rt-http"
    databases = ("core",)

    def __init__(self, handler: Callable[[list[Envelope]], Awaitable[None]] | None = None) -> None:
        self.unhealthy: str | None = None
        self.ticks = 0
        self.handler = handler
        self.torn_down = False
        self.ctx: WorkerContext | None = None

    async def setup(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        await ctx.pools["core"].execute("CREATE TABLE IF NOT EXISTS seen (n INT)")

    def consumers(self) -> list[ConsumerSpec]:
        if self.handler is None:
            return []
        return [
            ConsumerSpec(
                stream="DISPATCH",
                durable="rt-http",
                filter_subject="ionveil.dispatch.events.>",
                handler=self.handler,
                ack_wait_s=5.0,
            )
        ]

    def routes(self) -> list[web.RouteDef]:
        async def page(_: web.Request) -> web.Response:
            return web.Response(text="dashboard page")

        return [web.get("/", page)]

    def background(self) -> list[Callable[[], Awaitable[None]]]:
        async def tick() -> None:
            while True:
                self.ticks += 1
                await asyncio.sleep(0.01)

        return [tick]

    async def health(self) -> str | None:
        return self.unhealthy

    async def teardown(self) -> None:
        self.torn_down = True


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, await resp.text()


async def get_json(port: int, path: str) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, await resp.json()


async def test_health_ok_metrics_and_routes(settings: Settings, nc: NATS) -> None:
    """/health answers 200 when NATS, the database and Redis answer; /metrics serves the
    Prometheus text with the runtime's counters; the worker's own route and background loop
    run; teardown runs at exit."""
    processed = asyncio.Event()

    async def handler(batch: list[Envelope]) -> None:
        processed.set()

    worker = HttpWorker(handler)
    async with run_worker(worker, settings, http_port=0) as handle:
        assert handle.http_port > 0
        status, body = await get_json(handle.http_port, "/health")
        assert (status, body["status"], body["worker"]) == (200, "ok", "rt-http")
        assert body["replica_id"] == handle.ctx.replica_id
        await nc.jetstream().publish("ionveil.dispatch.events.acme", encode_payload({"a": 1}))
        await asyncio.wait_for(processed.wait(), 10)
        await handle.wait_idle(timeout_s=10)
        status, text = await get(handle.http_port, "/metrics")
        assert status == 200
        for name in (
            "ionveil_messages_processed_total",
            "ionveil_messages_failed_total",
            "ionveil_batch_seconds_bucket",
            "ionveil_consumer_lag",
        ):
            assert f'{name}{{consumer="rt-http"' in text
        assert await get(handle.http_port, "/") == (200, "dashboard page")
        assert worker.ticks > 0
    assert worker.torn_down


async def test_health_503_when_worker_reports_a_problem(settings: Settings) -> None:
    """A reason returned by worker.health() turns /health into 503 naming it."""
    worker = HttpWorker()
    async with run_worker(worker, settings, http_port=0) as handle:
        worker.unhealthy = "aggregates not loaded"
        status, body = await get_json(handle.http_port, "/health")
    assert status == 503
    assert body["status"] == "unhealthy"
    assert body["reasons"] == ["worker: aggregates not loaded"]


async def test_health_503_when_database_unreachable(settings: Settings) -> None:
    """A pool whose database does not answer (DSN to a closed port) makes /health 503 naming
    the database; the worker still starts (its setup does not need the database here)."""

    class NoSetupWorker(HttpWorker):
        async def setup(self, ctx: WorkerContext) -> None:
            self.ctx = ctx

    dead = settings.model_copy(
        update={"core_dsn": f"postgresql://nobody@127.0.0.1:{free_port()}/core"}
    )
    async with run_worker(NoSetupWorker(), dead, http_port=0) as handle:
        status, body = await get_json(handle.http_port, "/health")
    assert status == 503
    assert len(body["reasons"]) == 1
    assert body["reasons"][0].startswith("database core:")


async def test_health_503_when_nats_disconnected(settings: Settings) -> None:
    """With the NATS connection gone, /health says so with 503."""
    async with run_worker(HttpWorker(), settings, http_port=0) as handle:
        await handle.ctx.nc.close()
        status, body = await get_json(handle.http_port, "/health")
    assert status == 503
    assert "nats: not connected" in body["reasons"]


async def test_missing_dsn_is_a_configuration_error(settings: Settings) -> None:
    """A declared database without DSN fails the start with an error naming the variable."""
    missing = settings.model_copy(update={"core_dsn": None})
    with pytest.raises(ConfigurationError, match="IONVEIL_CORE_DSN"):
        async with run_worker(HttpWorker(), missing, http_port=0):
            pytest.fail("started without a DSN")


async def test_missing_nats_url_and_unknown_port_are_configuration_errors(
    settings: Settings,
) -> None:
    """No NATS URL, or a worker without contract port and no http_port, fail clearly."""
    with pytest.raises(ConfigurationError, match="IONVEIL_NATS_URL"):
        async with run_worker(
            HttpWorker(), settings.model_copy(update={"nats_url": None}), http_port=0
        ):
            pytest.fail("started without NATS")
    with pytest.raises(ConfigurationError, match="SERVICE_CONTRACTS"):
        async with run_worker(HttpWorker(), settings):
            pytest.fail("started without a port")


async def test_sigterm_drains_and_wakes_wait_stopped(settings: Settings) -> None:
    """With install_signal_handlers, SIGTERM drains the worker (teardown runs) and wakes
    wait_stopped(), so an entry point's body returns."""
    worker = HttpWorker()
    async with run_worker(worker, settings, http_port=0, install_signal_handlers=True) as handle:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(handle.wait_stopped(), 10)
        for _ in range(200):
            if worker.torn_down:
                break
            await asyncio.sleep(0.02)
        assert worker.torn_down
    assert not runner_module._SIGNAL_TARGETS


async def test_contract_port_is_used_by_default(settings: Settings) -> None:
    """Without http_port the worker serves on its SERVICE_CONTRACTS port."""

    class Audit(HttpWorker):
        name = "audit"  # port 8106 in the contracts

    import socket

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8106)) == 0:
            pytest.skip("port 8106 is taken by another process on this machine")

    async with run_worker(Audit(), settings) as handle:
        assert handle.http_port == 8106
        status, _ = await get(handle.http_port, "/health")
        assert status == 200


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_configure_logging_renders_bound_context(fmt: str, capsys: pytest.CaptureFixture) -> None:
    """configure_logging routes structlog to stderr as JSON lines (or console text) with the
    context bound per message; bad levels and formats are refused."""
    import json as jsonlib
    import logging

    import structlog

    from workers.runtime import configure_logging

    root = logging.getLogger()
    before_handlers, before_level = list(root.handlers), root.level
    try:
        configure_logging("info", fmt)
        logger = structlog.get_logger("ionveil.test")
        with structlog.contextvars.bound_contextvars(subject="ionveil.incidents.acme", msg_id="m1"):
            logger.info("message handled", count=2)
        logger.debug("hidden at info")
        err = capsys.readouterr().err
        assert "hidden at info" not in err
        if fmt == "json":
            record = jsonlib.loads(err.strip().splitlines()[-1])
            assert record["event"] == "message handled"
            assert record["msg_id"] == "m1"
            assert record["subject"] == "ionveil.incidents.acme"
            assert record["level"] == "info"
        else:
            assert "message handled" in err and "msg_id=m1" in err
        with pytest.raises(ValueError, match="level"):
            configure_logging("loud")
        with pytest.raises(ValueError, match="format"):
            configure_logging("info", "xml")
    finally:
        structlog.reset_defaults()
        for handler in list(root.handlers):
            if handler not in before_handlers:
                root.removeHandler(handler)
        root.setLevel(before_level)
