"""Dead-letter messages that JetStream gave up on without the worker seeing a last failure.

When a message's final allowed delivery is never answered (the worker was killed mid-batch, or
the handler hung past ``ack_wait``), JetStream stops redelivering it and emits a
``MAX_DELIVERIES`` advisory instead of a message. Without this watcher such a message would sit
in its stream forever, seen by no one. The watcher reads it back by stream sequence and
publishes it to ``ionveil.dlq.<subject>``; the DLQ copy's ``Nats-Msg-Id`` is derived from stream
and sequence, so several replicas reacting to the same advisory store it once.
"""

from __future__ import annotations

import json

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.client import JetStreamContext

from workers.runtime.dlq import DeadLetterReason, dead_letter_raw
from workers.runtime.metrics import ConsumerMetrics

__all__ = ["MaxDeliveriesWatcher", "advisory_subject"]

log = structlog.get_logger(__name__)


def advisory_subject(stream: str, durable: str) -> str:
    """The advisory subject JetStream uses for ``durable`` on ``stream``."""
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}"


class MaxDeliveriesWatcher:
    """Subscribes to one consumer's MAX_DELIVERIES advisories and dead-letters each message."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        *,
        stream: str,
        durable: str,
        metrics: ConsumerMetrics,
    ) -> None:
        self._nc, self._js = nc, js
        self._stream, self._durable = stream, durable
        self._metrics = metrics
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Begin listening (core NATS subscription; every replica listens)."""
        self._sub = await self._nc.subscribe(
            advisory_subject(self._stream, self._durable), cb=self._on_advisory
        )

    async def stop(self) -> None:
        """Stop listening."""
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except nats.errors.Error as exc:
                log.debug("advisory unsubscribe failed", error=repr(exc))
            self._sub = None

    async def _on_advisory(self, msg: Msg) -> None:
        try:
            advisory = json.loads(msg.data)
            seq = int(advisory["stream_seq"])
            deliveries = int(advisory.get("deliveries", 0))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable max-deliveries advisory", error=repr(exc))
            return
        try:
            raw = await self._js.get_msg(self._stream, seq)
        except nats.errors.Error as exc:
            # Already removed (acked on a work queue, or aged out): nothing left to keep.
            log.warning("max-deliveries message not readable", stream_seq=seq, error=repr(exc))
            return
        try:
            await dead_letter_raw(
                self._js,
                raw.subject or "",
                raw.data or b"",
                raw.headers,
                reason=DeadLetterReason.MAX_DELIVERIES,
                error=f"delivery limit reached after {deliveries} unanswered deliveries",
                stream=self._stream,
                consumer=self._durable,
                stream_seq=seq,
                num_delivered=deliveries,
            )
        except nats.errors.Error as exc:
            log.error("dead-lettering after max deliveries failed", stream_seq=seq, error=repr(exc))
            return
        self._metrics.dead_lettered(DeadLetterReason.MAX_DELIVERIES.value)
        log.warning(
            "message dead-lettered after unanswered deliveries",
            stream=self._stream,
            consumer=self._durable,
            stream_seq=seq,
            deliveries=deliveries,
        )
