"""Sending alert notifications through the channel registry: effectively once per channel.

The guarantee, exactly: for every alert change that is notified (one (alert_id, seq) and one
channel), the channel is *sent at least once while any replica keeps running, and every copy
carries the same idempotency key* ``<alert_id>:<seq>:<channel>`` (``Idempotency-Key`` header of
a webhook, ``Nats-Msg-Id`` on a NATS subject, ``Message-ID`` of an e-mail), so a receiver that
drops repeated keys sees it exactly once. Copies beyond the first are sent only when a sender
vanished after sending but before recording the outcome, or held its claim longer than the
lease; a failed send is retried ``len(retry_backoff_s)`` more times and then given up (recorded
``ok = false`` with the error; nothing is lost silently). Every round's outcome (ok or not,
attempts, error, latency) is in the audit trail.

How: each (alert, seq, channel) is claimed in the store before it is sent (a primary key decides
between replicas), with a lease (``claimed_at``, ``claimed_by``, a claim token) and the alert as
it was, then sent in a background task bounded by a semaphore (a slow or failing channel never
holds up the monitor or the other channels; the channels retry with back-off themselves). The
outcome is recorded under the claim token. ``sweep`` (the monitor's check cycle) takes over,
with one conditional update per claim so that one replica does it, claims whose outcome is
still unknown ``lease_s`` after they were taken (the sender crashed or was cancelled) and
failed sends whose retry time has come, and sends them again. ``lease_s`` must exceed the
longest time a channel takes to send, retries included, or a slow send is duplicated (with the
same key).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, Protocol

import structlog

from services.alerts.models import Alert
from services.alerts.store import AlertStore, Change, NotificationClaim
from services.notifications.base import DeliveryResult, Notification

__all__ = ["ChannelSender", "Notifier", "build_notification"]

log = structlog.get_logger(__name__)

DEFAULT_LEASE_S = 60.0
DEFAULT_RETRY_BACKOFF_S = (30.0, 120.0, 600.0)


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
    """Background, effectively-once-per-channel delivery of alert notifications.

    Args:
        store: claims and outcomes go here (the audit trail included).
        channels: the registry; None means "no channels configured" (nothing is sent).
        clock: time of the audit records.
        max_in_flight: deliveries running at once.
        replica_id: who claims (recorded as ``claimed_by``).
        lease_s: a claim without an outcome after this long is taken over by ``sweep``.
        retry_backoff_s: delays before the retries of a failed send (one retry per entry).
    """

    def __init__(
        self,
        store: AlertStore,
        channels: ChannelSender | None,
        *,
        clock: Callable[[], datetime],
        max_in_flight: int = 32,
        replica_id: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        retry_backoff_s: Sequence[float] = DEFAULT_RETRY_BACKOFF_S,
    ) -> None:
        self._store = store
        self._channels = channels
        self._clock = clock
        self._semaphore = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self.replica_id = replica_id or f"alerts-{uuid.uuid4().hex[:12]}"
        self.lease_s = float(lease_s)
        self.retry_backoff_s = tuple(float(s) for s in retry_backoff_s)

    @property
    def pending(self) -> int:
        """Deliveries not finished yet."""
        return len(self._tasks)

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def dispatch(self, alert: Alert, channels: Sequence[str], kind: str) -> None:
        """Start delivering ``alert`` (its current change) on each channel, in the background."""
        if self._channels is None:
            return
        for channel in dict.fromkeys(channels):
            self._start(self._deliver(alert, channel, kind))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("notification_task_failed", exc_info=task.exception())

    async def _deliver(self, alert: Alert, channel: str, kind: str) -> None:
        claim = await self._store.claim_notification(alert, channel, kind, self.replica_id)
        if claim is None:
            return  # another replica (or an earlier attempt) owns this one
        await self._send(claim)

    async def _send(self, claim: NotificationClaim) -> None:
        assert self._channels is not None
        alert = claim.alert
        notification = build_notification(alert, claim.kind, claim.channel)
        async with self._semaphore:
            (result,) = await self._channels.send([claim.channel], notification)
        retry_in_s = None
        if not result.ok and claim.round < len(self.retry_backoff_s):
            retry_in_s = self.retry_backoff_s[claim.round]
        outcome = {
            "channel": claim.channel,
            "change": claim.kind,
            "seq": alert.seq,
            "ok": result.ok,
            "attempts": result.attempts,
            "error": result.error,
            "latency_s": round(result.latency_s, 6),
            "round": claim.round + 1,
            "retry_in_s": retry_in_s,
        }
        action = "notification.sent" if result.ok else "notification.failed"
        held = await self._store.record_delivery(
            claim,
            outcome,
            Change(self.replica_id, action, self._clock(), after=outcome),
            retry_in_s=retry_in_s,
        )
        log.info(
            "alert_notified",
            alert_id=alert.alert_id,
            channel=claim.channel,
            ok=result.ok,
            attempts=result.attempts,
            round=claim.round + 1,
            claim_held=held,
        )

    async def sweep(self, limit: int = 100) -> int:
        """Re-send claims whose sender vanished and failed sends whose retry time has come.

        Returns:
            How many re-sends were started (in the background, like ``dispatch``).
        """
        if self._channels is None:
            return 0
        claims = await self._store.reclaim_notifications(
            self.replica_id, lease_s=self.lease_s, limit=limit
        )
        for claim in claims:
            log.info(
                "notification_resend",
                alert_id=claim.alert.alert_id,
                seq=claim.alert.seq,
                channel=claim.channel,
                round=claim.round + 1,
            )
            self._start(self._send(claim))
        return len(claims)

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait for deliveries in flight (cancel what is left after ``timeout_s``; a cancelled
        delivery's claim is re-sent by a ``sweep`` once its lease expires)."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
