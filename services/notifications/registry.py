"""``ChannelRegistry``: channels by name, and fan-out of one notification to several."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import structlog

from ionveil.errors import ConflictError, NotFoundError, ValidationError
from services.notifications.base import DeliveryResult, Notification, NotificationChannel

__all__ = ["ChannelRegistry"]

log = structlog.get_logger(__name__)


class ChannelRegistry:
    """Named notification channels (``"email"``, ``"slack"``, ``"pagerduty"`` ...).

    ``send`` delivers to several channels concurrently, each bounded by its own deadline, so a
    slow or broken channel never delays or breaks the others.
    """

    def __init__(self) -> None:
        self._channels: dict[str, NotificationChannel] = {}
        self._timeouts: dict[str, float] = {}

    def register(
        self,
        name: str,
        channel: NotificationChannel,
        *,
        timeout_s: float | None = None,
        replace: bool = False,
    ) -> None:
        """Make ``channel`` reachable as ``name``.

        Args:
            name: the name callers use (an alert rule's ``notification_channels`` entry).
            channel: the channel.
            timeout_s: limit of one ``send`` through the registry; the channel's own
                ``deadline_s`` (all its retries) when omitted.
            replace: allow replacing a channel already registered under ``name``.

        Raises:
            ValidationError: empty name, not a channel, or a bad timeout.
            ConflictError: ``name`` is taken and ``replace`` is false.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValidationError("name: must be a non-empty string")
        if not isinstance(channel, NotificationChannel):
            raise ValidationError(f"channel: must be a NotificationChannel, got {channel!r}")
        if timeout_s is not None and not (
            isinstance(timeout_s, int | float) and not isinstance(timeout_s, bool) and timeout_s > 0
        ):
            raise ValidationError(f"timeout_s: must be a number > 0, got {timeout_s!r}")
        if name in self._channels and not replace:
            raise ConflictError(f"channel {name!r} is already registered")
        self._channels[name] = channel
        self._timeouts[name] = float(timeout_s) if timeout_s is not None else channel.deadline_s

    def unregister(self, name: str) -> NotificationChannel:
        """Remove and return the channel registered as ``name``.

        Raises:
            NotFoundError: (a ``KeyError``) no such channel.
        """
        channel = self.get(name)
        del self._channels[name]
        del self._timeouts[name]
        return channel

    def get(self, name: str) -> NotificationChannel:
        """The channel registered as ``name``.

        Raises:
            NotFoundError: (a ``KeyError``) naming the unknown channel.
        """
        try:
            return self._channels[name]
        except KeyError:
            raise NotFoundError(f"notification channel {name!r} is not registered") from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._channels)

    def __contains__(self, name: object) -> bool:
        return name in self._channels

    def __len__(self) -> int:
        return len(self._channels)

    async def _send_one(self, name: str, n: Notification) -> DeliveryResult:
        channel = self._channels.get(name)
        if channel is None:
            return DeliveryResult(name, False, 0, f"unknown channel {name!r}", 0.0)
        timeout = self._timeouts[name]
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                return await channel.send(n)
        except TimeoutError:
            error = f"timed out after {timeout:g}s"
        except Exception as exc:  # a channel bug must not break the fan-out; logged, reported
            log.exception("notification_channel_crashed", channel=name, key=n.key)
            error = f"channel raised {type(exc).__name__}: {exc}"
        return DeliveryResult(name, False, 1, error, time.monotonic() - started)

    async def send(self, names: Iterable[str], notification: Notification) -> list[DeliveryResult]:
        """Deliver ``notification`` through each named channel, concurrently.

        Returns one result per distinct name, in the order first given; an unknown name gives a
        failed result (``attempts`` 0) rather than an error, so one misconfigured rule cannot
        stop the notifications of the others.
        """
        unique = list(dict.fromkeys(names))
        results = await asyncio.gather(*(self._send_one(name, notification) for name in unique))
        for result in results:
            if not result.ok:
                log.warning(
                    "notification_not_delivered",
                    channel=result.channel,
                    key=notification.key,
                    error=result.error,
                )
        return list(results)

    async def close(self) -> None:
        """Close every registered channel (errors are logged; every channel gets its turn)."""
        results = await asyncio.gather(
            *(c.close() for c in self._channels.values()), return_exceptions=True
        )
        for name, result in zip(self._channels, results, strict=True):
            if isinstance(result, BaseException):
                log.error("notification_channel_close_failed", channel=name, error=repr(result))
