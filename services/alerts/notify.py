"""Sending alert notifications through the channel registry, once, without blocking anyone.

Each (alert, change, channel) is claimed in the store before it is sent (a primary key decides
between replicas, so two replicas send it once), then sent in a background task bounded by a
semaphore: a slow or failing channel never holds up the monitor or the other channels. The
channels retry with back-off themselves (``services.notifications``); the final outcome of
every delivery (ok or not, attempts, error, latency) is written to the audit trail.

A claim is taken before sending: a replica that crashes between claim and send loses that one
notification rather than risking a duplicate (at most once per channel; the claim row with
``ok`` still NULL shows which ones).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

import structlog

from services.alerts.models import Alert
from services.alerts.store import AlertStore, Change
from services.notifications.base import DeliveryResult, Notification

__all__ = ["ChannelSender", "Notifier", "build_notification"]

log = structlog.get_logger(__name__)


class ChannelSender(Protocol):
    """What the notifier needs of ``services.notifications.channels.ChannelRegistry``."""

    async def send(self, names: Sequence[str], notification: Notification) -> list[DeliveryResult]:
        """Send ``notification`` on each named channel; never raises per channel."""
        ...


def build_notification(alert: Alert, kind: str, channel: str) -> Notification:
    """The notification for one alert change on one channel (``key`` is its idempotency key)."""
    level = int(alert.escalation_level)
    return Notification(
        title=f"[{alert.severity.value.upper()}] {alert.title}"[:512],
        body=f"{alert.description}\n\nstatus: {alert.status.value}, level: L{level}"[:65_536],
        severity=alert.severity.value,
        org_id=alert.org_id,
        key=f"{alert.alert_id}:{alert.seq}:{channel}",
        metadata={
            "alert_id": alert.alert_id,
            "rule_id": alert.rule_id,
            "incident_id": alert.incident_id,
            "change": kind,
            "seq": alert.seq,
            "escalation_level": level,
        },
    )


class Notifier:
    """Background, exactly-once-per-channel delivery of alert notifications.

    Args:
        store: claims and outcomes go here (the audit trail included).
        channels: the registry; None means "no channels configured" (nothing is sent).
        clock: time of the audit records.
        max_in_flight: deliveries running at once.
    """

    def __init__(
        self,
        store: AlertStore,
        channels: ChannelSender | None,
        *,
        clock: Callable[[], datetime],
        max_in_flight: int = 32,
    ) -> None:
        self._store = store
        self._channels = channels
        self._clock = clock
        self._semaphore = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Deliveries not finished yet."""
        return len(self._tasks)

    def dispatch(self, alert: Alert, channels: Sequence[str], kind: str) -> None:
        """Start delivering ``alert`` (its current change) on each channel, in the background."""
        if self._channels is None:
            return
        for channel in dict.fromkeys(channels):
            task = asyncio.get_running_loop().create_task(self._deliver(alert, channel, kind))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("notification_task_failed", exc_info=task.exception())

    async def _deliver(self, alert: Alert, channel: str, kind: str) -> None:
        assert self._channels is not None
        if not await self._store.claim_notification(alert.alert_id, alert.seq, channel):
            return  # another replica (or an earlier attempt) owns this one
        notification = build_notification(alert, kind, channel)
        async with self._semaphore:
            (result,) = await self._channels.send([channel], notification)
        outcome = {
            "channel": channel,
            "change": kind,
            "seq": alert.seq,
            "ok": result.ok,
            "attempts": result.attempts,
            "error": result.error,
            "latency_s": round(result.latency_s, 6),
        }
        action = "notification.sent" if result.ok else "notification.failed"
        await self._store.record_delivery(
            alert,
            alert.seq,
            channel,
            outcome,
            Change("system", action, self._clock(), after=outcome),
        )
        log.info(
            "alert_notified",
            alert_id=alert.alert_id,
            channel=channel,
            ok=result.ok,
            attempts=result.attempts,
        )

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait for deliveries in flight (cancel what is left after ``timeout_s``)."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
