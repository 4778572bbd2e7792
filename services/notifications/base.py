"""What every notification channel shares: the message, the result and the interface."""

from __future__ import annotations

import abc
import dataclasses
import enum
import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from ionveil.errors import ValidationError

__all__ = [
    "MAX_BODY_LENGTH",
    "MAX_TITLE_LENGTH",
    "DeliveryResult",
    "Notification",
    "NotificationChannel",
]

MAX_TITLE_LENGTH = 512
MAX_BODY_LENGTH = 65_536
_MAX_SHORT = 256


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


@dataclass(frozen=True, slots=True)
class Notification:
    """A message for people or systems, the same for every channel.

    Attributes:
        title: one line, e.g. the alert's title.
        body: the text.
        severity: e.g. ``"info"``, ``"warning"``, ``"critical"``, ``"emergency"``.
        org_id: the org it concerns (``None`` for fleet-wide messages).
        key: idempotency key: the same key means the same notification, so a receiver can drop
            a redelivery (sent as ``Idempotency-Key``, ``Nats-Msg-Id`` and in the e-mail
            Message-ID).
        metadata: extra fields passed through to the receiver.

    Raises:
        ValidationError: a field is empty, too long or of the wrong type (the field named).
    """

    title: str
    body: str
    severity: str
    org_id: str | None
    key: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name, limit, allow_empty in (
            ("title", MAX_TITLE_LENGTH, False),
            ("body", MAX_BODY_LENGTH, True),
            ("severity", _MAX_SHORT, False),
            ("key", _MAX_SHORT, False),
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or (not allow_empty and not value.strip()):
                problems.append(f"{name}: must be a non-empty string")
            elif len(value) > limit:
                problems.append(f"{name}: at most {limit} characters, got {len(value)}")
        if self.org_id is not None and (
            not isinstance(self.org_id, str) or not self.org_id or len(self.org_id) > _MAX_SHORT
        ):
            problems.append(f"org_id: must be None or a string of 1 to {_MAX_SHORT} characters")
        if not isinstance(self.metadata, dict):
            problems.append("metadata: must be a dict")
        if problems:
            raise ValidationError(problems)

    def as_dict(self) -> dict[str, Any]:
        """The notification as plain JSON/MessagePack types (times as ISO 8601 strings)."""
        raw = {
            "title": self.title,
            "body": self.body,
            "severity": self.severity,
            "org_id": self.org_id,
            "key": self.key,
            "metadata": self.metadata,
        }
        return json.loads(json.dumps(raw, default=_jsonable))


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """How one channel fared with one notification.

    Attributes:
        channel: the channel's name.
        ok: delivered (the receiver accepted it).
        attempts: tries made (0 when it never started, e.g. an unknown channel).
        error: why it failed (or a warning on partial success); ``None`` when all went well.
        latency_s: wall time from the first try to the outcome.
        status: the protocol status of the last try where there is one (HTTP or SMTP code).
    """

    channel: str
    ok: bool
    attempts: int
    error: str | None
    latency_s: float
    status: int | None = None


class NotificationChannel(abc.ABC):
    """Somewhere a notification can be delivered.

    ``send`` reports delivery failures in its ``DeliveryResult`` and never raises for them
    (a receiver down, refusing, timing out); only programming errors propagate.
    """

    name: str = "channel"

    @property
    def deadline_s(self) -> float:
        """Longest one ``send`` may take, all retries included (the registry enforces it)."""
        return 30.0

    @abc.abstractmethod
    async def send(self, n: Notification) -> DeliveryResult:
        """Deliver ``n``, retrying where the channel allows, and say how it went."""

    async def close(self) -> None:  # noqa: B027  (optional hook, nothing to do by default)
        """Release connections the channel holds."""
