"""The worker's HTTP server: ``/health``, ``/metrics`` and the worker's own routes.

``/health`` answers 200 only when every check passes (NATS connected, each pool answers
``SELECT 1`` within 2 s, Redis pings, the worker's own ``health()``), 503 with the reasons
otherwise, so an orchestrator routes traffic and restarts on the truth.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from workers.runtime.metrics import CONTENT_TYPE_LATEST, WorkerMetrics

__all__ = ["HealthCheck", "HttpServer"]

log = structlog.get_logger(__name__)

HealthCheck = Callable[[], Awaitable[list[str]]]
"""Returns the reasons the worker is unhealthy (empty when healthy)."""


class HttpServer:
    """An aiohttp ``AppRunner`` bound to ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        *,
        worker: str,
        replica_id: str,
        metrics: WorkerMetrics,
        check: HealthCheck,
        routes: list[web.RouteDef],
    ) -> None:
        self._worker = worker
        self._replica_id = replica_id
        self._metrics = metrics
        self._check = check
        self._routes = routes
        self._runner: web.AppRunner | None = None
        self.port: int = 0

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_routes(self._routes)
        return app

    async def start(self, host: str, port: int) -> int:
        """Serve on ``host:port``; returns the bound port."""
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else port
        log.info("http serving", worker=self._worker, host=host, port=self.port)
        return self.port

    async def stop(self) -> None:
        """Stop serving and release the port."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, _: web.Request) -> web.Response:
        reasons = await self._check()
        body = {"worker": self._worker, "replica_id": self._replica_id}
        if reasons:
            return web.json_response(
                {"status": "unhealthy", "reasons": reasons, **body}, status=503
            )
        return web.json_response({"status": "ok", **body})

    async def _metrics_page(self, _: web.Request) -> web.Response:
        response = web.Response(body=self._metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
