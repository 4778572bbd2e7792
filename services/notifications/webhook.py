"""Webhook channel: HTTP POST of JSON, for Slack-, PagerDuty- or in-house endpoints."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from ionveil.errors import ValidationError
from services.notifications._retry import backoff_delay, check_channel_settings, total_backoff
from services.notifications.base import DeliveryResult, Notification, NotificationChannel

__all__ = ["WebhookChannel"]

log = structlog.get_logger(__name__)

_MAX_RETRY_AFTER_S = 10.0
_ERROR_BODY_CHARS = 200


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a 429/503 asks us to wait (numeric ``Retry-After`` only), capped."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


class WebhookChannel(NotificationChannel):
    """POSTs each notification as JSON to ``url``.

    Retries connection errors, timeouts, 5xx and 429 answers with exponential back-off
    (``backoff_s``, doubling; a numeric ``Retry-After`` lengthens the pause), up to
    ``max_attempts`` tries. Any other 4xx is the request's fault and is not retried. Every try
    carries ``Idempotency-Key: <n.key>`` so the receiver can drop duplicates of a retry.

    Args:
        url: ``http://`` or ``https://`` endpoint.
        timeout_s: limit of one try (connect, send, answer).
        max_attempts: tries in all, >= 1.
        backoff_s: pause after the first failed try; doubles after each further one.
        headers: extra headers sent on every request (e.g. ``Authorization``).
        name: the channel's name in results and logs.
        payload: builds the JSON body from a notification; defaults to ``Notification.as_dict``
            (give one to match, say, Slack's ``{"text": ...}`` format).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5,
        max_attempts: int = 3,
        backoff_s: float = 0.5,
        headers: Mapping[str, str] | None = None,
        name: str = "webhook",
        payload: Callable[[Notification], Any] | None = None,
    ) -> None:
        check_channel_settings(
            timeout_s=timeout_s, max_attempts=max_attempts, backoff_s=backoff_s, name=name
        )
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValidationError(f"url: must be an http(s) URL, got {url!r}")
        self.url = url
        self.name = name
        self.timeout_s = float(timeout_s)
        self.max_attempts = max_attempts
        self.backoff_s = float(backoff_s)
        self.headers = dict(headers or {})
        self._payload = payload or Notification.as_dict
        self._session: aiohttp.ClientSession | None = None

    @property
    def deadline_s(self) -> float:
        """Every try at its timeout plus the back-off pauses, with a little slack."""
        retry_after = _MAX_RETRY_AFTER_S * (self.max_attempts - 1)
        pauses = max(total_backoff(self.backoff_s, self.max_attempts), retry_after)
        return self.timeout_s * self.max_attempts + pauses + 1.0

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        return self._session

    async def close(self) -> None:
        """Close the pooled HTTP connections."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def send(self, n: Notification) -> DeliveryResult:
        """POST ``n``; retry where that can help; never raises for delivery failures."""
        headers = {**self.headers, "Idempotency-Key": n.key}
        body = self._payload(n)
        started = time.monotonic()
        error: str | None = None
        status: int | None = None
        attempt = 0
        while attempt < self.max_attempts:
            attempt += 1
            pause = backoff_delay(self.backoff_s, attempt)
            try:
                async with self._client().post(self.url, json=body, headers=headers) as resp:
                    status = resp.status
                    if 200 <= resp.status < 300:
                        return DeliveryResult(
                            self.name, True, attempt, None, time.monotonic() - started, status
                        )
                    text = (await resp.text(errors="replace"))[:_ERROR_BODY_CHARS]
                    error = f"HTTP {resp.status}: {text}".rstrip(": ")
                    if resp.status != 429 and resp.status < 500:
                        break  # the request itself is wrong: trying again cannot help
                    pause = max(pause, _retry_after(resp.headers) or 0.0)
            except TimeoutError:
                status = None
                error = f"timed out after {self.timeout_s:g}s"
            except aiohttp.ClientError as exc:
                status = None
                error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "webhook_attempt_failed",
                channel=self.name,
                key=n.key,
                attempt=attempt,
                error=error,
            )
            if attempt < self.max_attempts:
                await asyncio.sleep(pause)
        return DeliveryResult(self.name, False, attempt, error, time.monotonic() - started, status)
