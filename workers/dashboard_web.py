"""The dashboard worker's web side: the live page, its JSON read, and Server-Sent Events.

``GET /?org=ORG`` is a self-contained page (``services/dashboard/static``: vanilla JS, inline
SVG, no CDN). It reads ``GET /api/view?org=ORG`` (snapshot, response-time trend with forecast,
regions, heatmap, coverage in one JSON) and re-reads it whenever ``GET /events?org=ORG`` (SSE)
says the org's numbers changed. Each SSE client has a small bounded queue: a slow browser misses
intermediate updates, never slows the worker (the page re-reads the whole view anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from ionveil.errors import IonVeilError
from services.dashboard import AggregatedMetric, TimeWindow
from workers.codec import to_wire

if TYPE_CHECKING:
    from workers.dashboard import DashboardWorker

__all__ = ["DashboardWeb"]

log = structlog.get_logger(__name__)
_ASSETS = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}
_KEEPALIVE_S = 15.0
_CLIENT_QUEUE = 64


class _Client:
    def __init__(self, org: str) -> None:
        self.org = org
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(_CLIENT_QUEUE)


class DashboardWeb:
    """Routes for the page and the per-client SSE fan-out."""

    def __init__(self, worker: DashboardWorker) -> None:
        self._worker = worker
        self._clients: set[_Client] = set()

    def routes(self) -> list[web.RouteDef]:
        """``/``, ``/static/{name}``, ``/api/view``, ``/events``."""
        return [
            web.get("/", self._index),
            web.get("/static/{name}", self._asset),
            web.get("/api/view", self._view),
            web.get("/events", self._events),
        ]

    def notify(self, org: str, metric: AggregatedMetric) -> None:
        """Tell the org's SSE clients (drops for a client whose queue is full)."""
        if not self._clients:
            return
        item = {
            "metric": metric.metric_name,
            "value": metric.value,
            "window_start": metric.window_start.isoformat(),
        }
        for client in list(self._clients):
            if client.org == org:
                with contextlib.suppress(asyncio.QueueFull):
                    client.queue.put_nowait(item)

    def close(self) -> None:
        """End every SSE stream (at drain, so the HTTP server can stop at once)."""
        for client in list(self._clients):
            with contextlib.suppress(asyncio.QueueFull):
                client.queue.put_nowait(None)

    @staticmethod
    def _read_asset(name: str) -> bytes:
        return resources.files("services.dashboard").joinpath("static", name).read_bytes()

    async def _index(self, _: web.Request) -> web.Response:
        return web.Response(body=self._read_asset("index.html"), content_type="text/html")

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _ASSETS:
            raise web.HTTPNotFound()
        return web.Response(body=self._read_asset(name), content_type=_ASSETS[name])

    async def _view(self, request: web.Request) -> web.Response:
        org = request.query.get("org", "")
        try:
            body = await self.view(org)
        except IonVeilError as exc:
            return web.json_response({"error": {"code": exc.code, "message": str(exc)}}, status=400)
        return web.json_response(body, dumps=_dumps)

    async def view(self, org: str) -> dict[str, Any]:
        """Everything the page shows for ``org``, as plain data."""
        worker = self._worker
        agg = worker.aggregator
        snapshot = await agg.get_dashboard_snapshot(org)
        trend = await worker.trends.analyze_trend(org, "response_time", TimeWindow.MINUTE_5, 24)
        now = datetime.fromtimestamp(agg.now(), UTC)
        regions = await worker.geography.get_regional_summary(
            org, now - timedelta(hours=1), now + timedelta(minutes=1)
        )
        heatmap = await worker.geography.get_heatmap_data(org, "dispatch_count", (10, 10))
        p90 = next(
            (
                m.value
                for m in snapshot.metrics
                if m.metric_name == "response_time" and m.dimensions.get("aggregation") == "p90"
            ),
            0.0,
        )
        count = next(
            (m.sample_count for m in snapshot.metrics if m.metric_name == "dispatch_count"), 0
        )
        return to_wire(
            {
                "org": org,
                "snapshot": snapshot,
                "kpis": {
                    "active": snapshot.active_dispatches,
                    "pending": snapshot.pending_dispatches,
                    "compliance": snapshot.sla_compliance_rate,
                    "avg_response": snapshot.average_response_time,
                    "p90_response": p90,
                    "dispatches_last_hour": count,
                },
                "trend": trend,
                "regions": [{"region": r, **v} for r, v in regions.items()],
                "heatmap": heatmap,
                "coverage": worker.geography.get_coverage(org),
            }
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        org = request.query.get("org", "")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        client = _Client(org)
        self._clients.add(client)
        try:
            await response.write(b"event: hello\ndata: {}\n\n")
            while True:
                try:
                    item = await asyncio.wait_for(client.queue.get(), _KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if item is None:
                    break
                await response.write(f"event: update\ndata: {_dumps(item)}\n\n".encode())
        except ConnectionResetError:
            log.debug("dashboard.sse_client_gone", org=org)
        finally:
            self._clients.discard(client)
        return response


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
