"""Publishing alert state changes from the transactional outbox.

Every change is queued in the store's outbox in the same transaction as the alert row
(``AlertStore.insert_alert`` / ``update_alert``). ``OutboxPublisher.publish`` is the fast path
right after the commit: publish, then remove the entry. Whatever it could not publish (broker
down, process killed between commit and publish) stays queued and ``flush`` publishes it later
(the worker calls it at start, every second and at teardown; several replicas may flush at once,
each takes rows the others have not locked). An entry is removed only after ``publish``
returned, i.e. JetStream acked it; the message id ``<alert_id>-<seq>`` lets the stream's
duplicate window (120 s on ALERTS) drop the rare second copy (a crash after the ack but before
the removal, or the fast path racing a flush). Consumers that must be exact beyond that window
de-duplicate on (alert_id, seq), which every message carries.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog

from services.alerts._serde import alert_from_dict
from services.alerts.models import Alert
from services.alerts.store import AlertStore, OutboxEntry

__all__ = ["FLUSH_MIN_AGE_S", "OutboxPublisher", "Publisher"]

log = structlog.get_logger(__name__)

Publisher = Callable[[Alert], Awaitable[None]]
"""Publishes one alert change; returns once the broker acked it, raises otherwise."""

FLUSH_MIN_AGE_S = 2.0
"""A periodic flush leaves younger entries to the fast path of the replica that wrote them."""


class OutboxPublisher:
    """Publishes queued alert changes through ``publisher`` (see the module docstring).

    Args:
        store: the store holding the outbox.
        publisher: awaited with each alert change; None means nothing is published.
    """

    def __init__(self, store: AlertStore, publisher: Publisher | None) -> None:
        self._store = store
        self._publisher = publisher
        self.failing_since: float | None = None
        """Monotonic time of the first failure since the last success (None: healthy)."""

    @property
    def enabled(self) -> bool:
        """Whether there is a publisher."""
        return self._publisher is not None

    def _failed(self, exc: BaseException, **fields: object) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        log.warning("alert_publish_failed", error=repr(exc), **fields)

    async def publish(self, alert: Alert) -> bool:
        """Publish a just-committed change; False (logged, left queued) when it failed."""
        if self._publisher is None:
            return False
        try:
            await self._publisher(alert)
        except Exception as exc:  # left in the outbox for the next flush; logged
            self._failed(exc, alert_id=alert.alert_id, seq=alert.seq)
            return False
        try:
            await self._store.mark_published(alert.alert_id, alert.seq)
        except Exception as exc:  # published; a flush re-publishes, the stream drops it
            log.warning("alert_outbox_mark_failed", alert_id=alert.alert_id, error=repr(exc))
        self.failing_since = None
        return True

    async def _publish_entry(self, entry: OutboxEntry) -> None:
        assert self._publisher is not None
        await self._publisher(alert_from_dict(entry.payload))

    async def flush(self, *, min_age_s: float = 0.0, limit: int = 500) -> int:
        """Publish queued changes at least ``min_age_s`` old until none is left.

        Returns:
            How many were published; a failure is logged (and counted for ``health``), the
            rest stays queued.
        """
        if self._publisher is None:
            return 0
        total = 0
        try:
            while True:
                done = await self._store.drain_outbox(
                    self._publish_entry, limit=limit, min_age_s=min_age_s
                )
                total += done
                if done < limit:
                    break
        except Exception as exc:  # left queued for the next flush; logged, seen by health
            self._failed(exc, published=total)
            return total
        self.failing_since = None
        if total:
            log.info("alert_outbox_flushed", published=total)
        return total

    async def lag_s(self) -> float | None:
        """Age in seconds of the oldest unpublished change (None when nothing waits)."""
        if self._publisher is None:
            return None
        return await self._store.outbox_lag_s()
