"""Fan-out of live metric updates to subscribers that must never slow ingestion down.

Each subscriber has a bounded queue; when it is full the oldest update is dropped and the
subscriber's next read is an ``updates_dropped`` marker carrying how many were lost, so a slow
consumer knows its view skipped. Flushes may run on another thread (``flush()`` is sync), so a
push wakes the subscriber's loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import structlog

from services.dashboard.models import AggregatedMetric

__all__ = ["DROPPED_METRIC", "Subscription", "UpdateHub"]

DROPPED_METRIC = "updates_dropped"
log = structlog.get_logger(__name__)

UpdateListener = Callable[[str, AggregatedMetric], None]


class Subscription:
    """One subscriber's bounded queue of updates."""

    def __init__(self, org_id: str, metrics: Iterable[str], maxsize: int) -> None:
        self.org_id = org_id
        self.metrics = frozenset(metrics)
        self._queue: deque[AggregatedMetric] = deque()
        self._maxsize = maxsize
        self._dropped = 0
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._ready = asyncio.Event()

    def push(self, metric: AggregatedMetric) -> None:
        """Queue an update (from any thread), dropping the oldest when full."""
        with self._lock:
            if len(self._queue) >= self._maxsize:
                self._queue.popleft()
                self._dropped += 1
            self._queue.append(metric)
        if threading.get_ident() == self._thread:
            self._ready.set()
        else:
            self._loop.call_soon_threadsafe(self._ready.set)

    async def get(self) -> AggregatedMetric:
        """The next update, or an ``updates_dropped`` marker when some were lost."""
        while True:
            with self._lock:
                if self._dropped:
                    dropped, self._dropped = self._dropped, 0
                    now = datetime.now(UTC)
                    return AggregatedMetric(DROPPED_METRIC, float(dropped), now, now, {}, dropped)
                if self._queue:
                    return self._queue.popleft()
                self._ready.clear()
            await self._ready.wait()


class UpdateHub:
    """Subscribers per org, plus listeners that see every org's updates (the worker)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._subs: dict[str, set[Subscription]] = {}
        self._listeners: list[UpdateListener] = []
        self._lock = threading.Lock()

    def subscribe(self, org_id: str, metrics: Iterable[str]) -> Subscription:
        """Register a subscriber (call from inside the subscriber's event loop)."""
        sub = Subscription(org_id, metrics, self.maxsize)
        with self._lock:
            self._subs.setdefault(org_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscriber."""
        with self._lock:
            subs = self._subs.get(sub.org_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.org_id]

    def add_listener(self, listener: UpdateListener) -> None:
        """Call ``listener(org_id, metric)`` for every update of every org."""
        self._listeners.append(listener)

    def remove_listener(self, listener: UpdateListener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def wanted(self, org_id: str) -> bool:
        """Whether anybody would receive an update for ``org_id``."""
        return bool(self._listeners) or org_id in self._subs

    def publish(self, org_id: str, metrics: list[AggregatedMetric]) -> None:
        """Deliver updates to the org's subscribers (by metric name) and to every listener."""
        with self._lock:
            subs = list(self._subs.get(org_id, ()))
        for metric in metrics:
            for sub in subs:
                if metric.metric_name in sub.metrics:
                    sub.push(metric)
            for listener in self._listeners:
                try:
                    listener(org_id, metric)
                except Exception:  # a broken listener must not stop the flush; it is logged
                    log.exception("dashboard.update_listener_failed", org_id=org_id)
