"""NATS channel: publish each notification on a subject, for machines that listen there."""

from __future__ import annotations

import time

import msgpack
import nats.errors
import structlog
from nats.aio.client import Client as NATS

from ionveil.errors import ValidationError
from services.notifications.base import DeliveryResult, Notification, NotificationChannel

__all__ = ["NatsSubjectChannel"]

log = structlog.get_logger(__name__)


def _valid_subject(subject: object) -> bool:
    if not isinstance(subject, str) or not subject or len(subject) > 512:
        return False
    tokens = subject.split(".")
    return all(t and t not in ("*", ">") and not any(c.isspace() for c in t) for t in tokens)


class NatsSubjectChannel(NotificationChannel):
    """Publishes ``Notification.as_dict()`` as a MessagePack map on ``subject`` (core NATS).

    The message carries ``Nats-Msg-Id: <n.key>``, so if the subject is captured by a JetStream
    stream, a repeat within its duplicate window is dropped. ``send`` flushes the connection,
    so an ``ok`` result means the server has the message, not only the local buffer.

    Args:
        nc: a connected nats-py client (the channel does not own it and never closes it).
        subject: a literal subject (no wildcards).
        name: the channel's name in results and logs.
        timeout_s: limit of the flush round trip.
    """

    def __init__(
        self, nc: NATS, subject: str, *, name: str = "nats", timeout_s: float = 5.0
    ) -> None:
        if not _valid_subject(subject):
            raise ValidationError(f"subject: must be a literal NATS subject, got {subject!r}")
        if not isinstance(name, str) or not name.strip():
            raise ValidationError("name: must be a non-empty string")
        self.nc = nc
        self.subject = subject
        self.name = name
        self.timeout_s = float(timeout_s)

    @property
    def deadline_s(self) -> float:
        """The flush timeout plus a little slack."""
        return self.timeout_s + 1.0

    async def send(self, n: Notification) -> DeliveryResult:
        """Publish ``n`` and flush; never raises for delivery failures."""
        started = time.monotonic()
        data = msgpack.packb(n.as_dict())
        try:
            await self.nc.publish(self.subject, data, headers={"Nats-Msg-Id": n.key})
            await self.nc.flush(timeout=self.timeout_s)
        except (nats.errors.Error, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("nats_notification_failed", channel=self.name, key=n.key, error=error)
            return DeliveryResult(self.name, False, 1, error, time.monotonic() - started)
        return DeliveryResult(self.name, True, 1, None, time.monotonic() - started)
