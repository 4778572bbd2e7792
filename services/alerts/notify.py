"""Sending alert notifications through the channel registry: effectively once per channel.

The guarantee, exactly: every alert change that is notified (one (alert_id, seq), and each of
its channels) is *owed durably from the moment the change is stored*: the rows saying so
(notification intents) are written in the change's own transaction (``notify=`` on
``AlertStore.insert_alert`` / ``update_alert``), so a change is never stored without them. An
owed notification is then *sent at least once while any replica keeps running, and every copy
carries the same idempotency key* ``<alert_id>:<seq>:<channel>`` (``Idempotency-Key`` header
of a webhook, ``Nats-Msg-Id`` on a NATS subject, ``Message-ID`` of an e-mail), so a receiver
that drops repeated keys sees it exactly once. A PostgreSQL outage or a crash between the
commit and the send delays a notification, never loses it. Copies beyond the first are sent
only when a sender vanished after sending but before recording the outcome, or held its claim
longer than the lease; a failed send is retried ``len(retry_backoff_s)`` more times and then
given up (recorded ``ok = false`` with the error; nothing is lost silently). Every round's
outcome (ok or not, attempts, error, latency) is in the audit trail.

How: right after the commit, ``dispatch`` claims each intent in the store (a primary key and a
conditional update decide between replicas), with a lease (``claimed_at``, ``claimed_by``, a
claim token), then sends it in a background task bounded by a semaphore (a slow or failing
channel never holds up the monitor or the other channels; the channels retry with back-off
themselves). A claim that fails because the database is unreachable is retried in the task
with capped back-off (``claim_backoff_s``) until it succeeds or the notifier is drained. The
outcome is recorded under the claim token. ``sweep`` (the monitor's check cycle) takes over,
with one conditional update per row so that one replica does it, intents still unclaimed
``intent_grace_s`` after they were written (the process died or lost the database after the
commit), claims whose outcome is still unknown ``lease_s`` after they were taken (the sender
crashed or was cancelled) and failed sends whose retry time has come, and sends them.
``lease_s`` must exceed the longest time a channel takes to send, retries included, or a slow
send is duplicated (with the same key).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, Protocol

import structlog

from services.alerts.models import Alert
from services.alerts.store import (
    INTENT_GRACE_S,
    STORE_ERRORS,
    AlertStore,
    Change,
    NotificationClaim,
    Notify,
)
from services.notifications.base import DeliveryResult, Notification

__all__ = ["ChannelSender", "Notifier", "build_notification"]

log = structlog.get_logger(__name__)

DEFAULT_LEASE_S = 60.0
DEFAULT_RETRY_BACKOFF_S = (30.0, 120.0, 600.0)
DEFAULT_CLAIM_BACKOFF_S = (0.5, 5.0)
_GAVE_UP = object()


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
        intent_grace_s: an intent nobody claimed this long after it was written is sent by
            ``sweep``.
        claim_backoff_s: (first, longest) delay between the attempts of a claim that failed
            because the store was unreachable (doubling from the first).
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
        intent_grace_s: float = INTENT_GRACE_S,
        claim_backoff_s: tuple[float, float] = DEFAULT_CLAIM_BACKOFF_S,
    ) -> None:
        self._store = store
        self._channels = channels
        self._clock = clock
        self._semaphore = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self.replica_id = replica_id or f"alerts-{uuid.uuid4().hex[:12]}"
        self.lease_s = float(lease_s)
        self.retry_backoff_s = tuple(float(s) for s in retry_backoff_s)
        self.intent_grace_s = float(intent_grace_s)
        self.claim_backoff_s = claim_backoff_s
        self._draining = asyncio.Event()

    @property
    def pending(self) -> int:
        """Deliveries not finished yet."""
        return len(self._tasks)

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def owed(self, kind: str, channels: Sequence[str]) -> Notify | None:
        """The ``notify=`` argument of the store call that makes a change of ``kind`` owed on
        ``channels`` (None when nothing would be sent: no registry, or no channel)."""
        if self._channels is None or not channels:
            return None
        return kind, tuple(dict.fromkeys(channels))

    def dispatch(self, alert: Alert, channels: Sequence[str], kind: str) -> None:
        """Start delivering ``alert`` (its current change) on each channel, in the background
        (claiming the intents stored with the change, see ``owed``)."""
        if self._channels is None:
            return
        for channel in dict.fromkeys(channels):
            self._start(self._deliver(alert, channel, kind))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("notification_task_failed", exc_info=task.exception())

    async def _deliver(self, alert: Alert, channel: str, kind: str) -> None:
        claim = await self._claim(alert, channel, kind)
        if claim is None:
            return  # another replica (or an earlier attempt) owns this one, or a sweep will
        await self._send(claim)

    async def _claim(self, alert: Alert, channel: str, kind: str) -> NotificationClaim | None:
        """Claim, retrying while the store is unreachable; None when someone else holds the
        claim or ``drain`` stopped the retries (the intent stays owed and a ``sweep`` sends
        it)."""
        claimed = await self._retrying(
            "claim",
            alert,
            channel,
            lambda: self._store.claim_notification(alert, channel, kind, self.replica_id),
        )
        return None if claimed is _GAVE_UP else claimed

    async def _retrying(
        self,
        step: str,
        alert: Alert,
        channel: str,
        call: Callable[[], Coroutine[Any, Any, Any]],
    ) -> Any:
        """``await call()``, retried with capped back-off (``claim_backoff_s``) while the store
        is unreachable; ``_GAVE_UP`` once ``drain`` stops the retries."""
        delay, longest = self.claim_backoff_s
        attempt = 1
        while True:
            try:
                return await call()
            except STORE_ERRORS as exc:
                log.warning(
                    f"notification_{step}_failed",
                    alert_id=alert.alert_id,
                    seq=alert.seq,
                    channel=channel,
                    attempt=attempt,
                    retry_in_s=delay,
                    error=repr(exc),
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._draining.wait(), delay)
            if self._draining.is_set():
                log.info(
                    "notification_left_to_sweep",
                    alert_id=alert.alert_id,
                    seq=alert.seq,
                    channel=channel,
                    step=step,
                )
                return _GAVE_UP
            delay = min(delay * 2, longest)
            attempt += 1

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
        # Not recorded = re-sent (same key) after the lease: retried while the store is away.
        change = Change(self.replica_id, action, self._clock(), after=outcome)
        held = await self._retrying(
            "record",
            alert,
            claim.channel,
            lambda: self._store.record_delivery(claim, outcome, change, retry_in_s=retry_in_s),
        )
        log.info(
            "alert_notified",
            alert_id=alert.alert_id,
            channel=claim.channel,
            ok=result.ok,
            attempts=result.attempts,
            round=claim.round + 1,
            claim_held=None if held is _GAVE_UP else held,
        )

    async def sweep(self, limit: int = 100) -> int:
        """Send intents nobody claimed in time, re-send claims whose sender vanished and failed
        sends whose retry time has come.

        Returns:
            How many re-sends were started (in the background, like ``dispatch``).
        """
        if self._channels is None:
            return 0
        claims = await self._store.reclaim_notifications(
            self.replica_id, lease_s=self.lease_s, intent_grace_s=self.intent_grace_s, limit=limit
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
        delivery's claim is re-sent by a ``sweep`` once its lease expires). Claims being
        retried stop at once: their intents are left to a ``sweep``."""
        if not self._tasks:
            return
        self._draining.set()
        try:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            self._draining.clear()
