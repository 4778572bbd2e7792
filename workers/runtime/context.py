"""What a worker's ``setup()`` receives: its connections and identity."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from workers.runtime.metrics import WorkerMetrics
from workers.settings import Settings

__all__ = ["WorkerContext"]


@dataclass
class WorkerContext:
    """A running worker's settings, connections and metrics.

    Attributes:
        settings: the process settings.
        nc: the NATS connection (reconnects forever); use ``nc.publish`` for core subjects.
        js: JetStream on ``nc``; use ``js.publish`` (with ``Nats-Msg-Id``) for stream subjects.
        pools: an asyncpg pool per database the worker declared (``"core"``, ...).
        redis: a Redis client, or ``None`` when ``IONVEIL_REDIS_URL`` is unset.
        metrics: the worker's metrics; ``metrics.registry`` takes extra collectors.
        replica_id: unique per process, for per-replica durables and fencing tokens.
    """

    settings: Settings
    nc: NATS
    js: JetStreamContext
    pools: dict[str, asyncpg.Pool]
    redis: aioredis.Redis | None
    metrics: WorkerMetrics
    replica_id: str
