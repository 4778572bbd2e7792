"""Notification channels: the interface, the real channels and the registry by name.

One module to import from (``services.notifications.channels``), as the seeds name it; each
channel lives in its own module.
"""

from services.notifications.base import (
    MAX_BODY_LENGTH,
    MAX_TITLE_LENGTH,
    DeliveryResult,
    Notification,
    NotificationChannel,
)
from services.notifications.nats_subject import NatsSubjectChannel
from services.notifications.registry import ChannelRegistry
from services.notifications.smtp import EmailChannel
from services.notifications.webhook import WebhookChannel

__all__ = [
    "MAX_BODY_LENGTH",
    "MAX_TITLE_LENGTH",
    "ChannelRegistry",
    "DeliveryResult",
    "EmailChannel",
    "NatsSubjectChannel",
    "Notification",
    "NotificationChannel",
    "WebhookChannel",
]
