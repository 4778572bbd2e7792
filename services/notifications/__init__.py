"""Notifications: webhook, e-mail and NATS channels and a registry by name."""

from services.notifications.channels import (
    MAX_BODY_LENGTH,
    MAX_TITLE_LENGTH,
    ChannelRegistry,
    DeliveryResult,
    EmailChannel,
    NatsSubjectChannel,
    Notification,
    NotificationChannel,
    WebhookChannel,
)

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
