"""The live dashboard page in headless Chromium, driven over the DevTools protocol.

The page loads from the worker (no CDN), connects its Server-Sent Events stream, and a dispatch
event published to JetStream afterwards changes the numbers on the page without a reload.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from workers.codec import encode_payload
from workers.dashboard import DashboardWorker
from workers.runtime import run_worker
from workers.settings import Settings

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_ids = itertools.count(1)


def _event(org: str, minutes_ago: float, rt: float) -> dict[str, Any]:
    n = next(_ids)
    return {
        "event_id": f"web-{n}",
        "org_id": org,
        "dispatch_id": f"d{n}",
        "timestamp": (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat(),
        "severity": 4,
        "response_time_minutes": rt,
        "distance_km": 3.0,
        "region": "north",
        "unit_type": "ambulance",
        "sla_met": rt < 15,
        "metadata": {"lat": 48.85 + n / 100, "lon": 2.35},
    }


class Page:
    """One Chromium tab, evaluated through the DevTools WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def eval(self, expression: str) -> Any:
        call_id = next(self._ids)
        await self._ws.send_json(
            {
                "id": call_id,
                "method": "Runtime.evaluate",
                "params": {"expression": expression, "returnByValue": True},
            }
        )
        async for msg in self._ws:
            data = json.loads(msg.data)
            if data.get("id") == call_id:
                return data["result"]["result"].get("value")
        raise AssertionError("DevTools connection closed")

    async def wait_for(self, expression: str, want: Any, timeout_s: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        value = None
        while asyncio.get_running_loop().time() < deadline:
            value = await self.eval(expression)
            if value == want:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{expression} is {value!r}, wanted {want!r}")


async def _open_page(url: str) -> AsyncIterator[Page]:
    assert CHROMIUM is not None
    profile = Path(tempfile.mkdtemp(prefix="ionveil-chromium-"))
    proc = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            targets: list[dict[str, Any]] = []
            for _ in range(100):
                async with http.get(f"http://127.0.0.1:{port}/json") as resp:
                    targets = [t for t in await resp.json() if t.get("type") == "page"]
                if targets:
                    break
                await asyncio.sleep(0.1)
            async with http.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield Page(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
async def page_for() -> AsyncIterator[Any]:
    opened: list[Any] = []

    async def open_(url: str) -> Page:
        gen = _open_page(url)
        opened.append(gen)
        return await anext(gen)

    yield open_
    for gen in opened:
        await gen.aclose()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
async def test_published_event_changes_the_numbers_on_the_page(
    nc: NATS, settings: Settings, page_for: Any
) -> None:
    """KPIs, table and heatmap render; a newly published event updates them live (SSE)."""
    js = nc.jetstream()
    worker = DashboardWorker(flush_interval_s=0.2)
    async with run_worker(worker, settings, http_port=0) as handle:
        await js.publish(
            "ionveil.dispatch.events.web",
            encode_payload([_event("web", 30, 6.0), _event("web", 20, 10.0)]),
        )
        await js.publish(
            "ionveil.incidents.web",
            encode_payload(
                {
                    "incident_id": "i1",
                    "priority": 4,
                    "status": "dispatched",
                    "timestamp": datetime.now(UTC).isoformat(),
                }
            ),
        )
        await handle.wait_idle(30)
        page = await page_for(f"http://127.0.0.1:{handle.http_port}/?org=web")
        await page.wait_for("document.getElementById('status').textContent", "live")
        await page.wait_for("document.getElementById('kpi-count').textContent", "2")
        assert await page.eval("document.getElementById('kpi-avg').textContent") == "8.0 min"
        assert await page.eval("document.getElementById('kpi-active').textContent") == "1"
        assert await page.eval("document.querySelectorAll('#regions tbody tr').length") == 1
        assert await page.eval("document.querySelectorAll('#heatmap rect').length") == 100
        assert await page.eval("document.querySelectorAll('#trend polyline').length") == 1

        await js.publish("ionveil.dispatch.events.web", encode_payload(_event("web", 1, 20.0)))
        await page.wait_for("document.getElementById('kpi-count').textContent", "3")
        assert await page.eval("document.getElementById('kpi-avg').textContent") == "12.0 min"
        assert await page.eval("document.getElementById('kpi-compliance').textContent") == (
            "66.7 %"
        )
