"""Hot state shared by replicas: cool-down deadlines and active suppressions.

Redis holds it when ``IONVEIL_REDIS_URL`` is set (``RedisHotState``); otherwise
``InProcessHotState`` serves the same interface from a dict. Deadlines are stored as epoch
seconds of the *service clock* (which tests inject), and Redis TTLs are only a clean-up bound,
so an injected clock and Redis agree on what has expired. PostgreSQL stays the record of truth:
losing the hot state only costs a database round trip.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

import redis.asyncio as aioredis

__all__ = ["HotState", "InProcessHotState", "RedisHotState"]

_MIN_TTL_S = 1.0


class HotState(Protocol):
    """What the alerting service keeps hot."""

    shared: bool
    """True when other replicas see the same state (Redis)."""

    async def get_deadline(self, key: str) -> float | None:
        """The deadline stored under ``key`` (epoch seconds), if any."""
        ...

    async def set_deadline(self, key: str, until: float, ttl_s: float) -> None:
        """Store ``until`` under ``key``; the entry may be dropped after ``ttl_s`` seconds."""
        ...

    async def put_record(
        self, namespace: str, name: str, value: dict[str, Any], ttl_s: float
    ) -> None:
        """Store ``value`` as ``name`` in ``namespace`` (kept for at least ``ttl_s``)."""
        ...

    async def records(self, namespace: str) -> dict[str, dict[str, Any]]:
        """Every record of ``namespace``."""
        ...

    async def drop_record(self, namespace: str, name: str) -> bool:
        """Remove one record; True when it was there."""
        ...


class InProcessHotState:
    """``HotState`` in this process only (one replica, tests, the seed's bare constructor)."""

    shared = False

    def __init__(self) -> None:
        self._deadlines: dict[str, tuple[float, float]] = {}
        self._records: dict[str, dict[str, dict[str, Any]]] = {}

    async def get_deadline(self, key: str) -> float | None:
        """See ``HotState.get_deadline``."""
        entry = self._deadlines.get(key)
        if entry is None:
            return None
        until, drop_at = entry
        if time.monotonic() >= drop_at:
            del self._deadlines[key]
            return None
        return until

    async def set_deadline(self, key: str, until: float, ttl_s: float) -> None:
        """See ``HotState.set_deadline``."""
        self._deadlines[key] = (until, time.monotonic() + max(ttl_s, _MIN_TTL_S))

    async def put_record(
        self, namespace: str, name: str, value: dict[str, Any], ttl_s: float
    ) -> None:
        """See ``HotState.put_record``."""
        self._records.setdefault(namespace, {})[name] = dict(value)

    async def records(self, namespace: str) -> dict[str, dict[str, Any]]:
        """See ``HotState.records``."""
        return {k: dict(v) for k, v in self._records.get(namespace, {}).items()}

    async def drop_record(self, namespace: str, name: str) -> bool:
        """See ``HotState.drop_record``."""
        return self._records.get(namespace, {}).pop(name, None) is not None


class RedisHotState:
    """``HotState`` in Redis, under ``prefix`` (so tests and deployments do not collide)."""

    shared = True

    def __init__(self, client: aioredis.Redis, *, prefix: str = "ionveil:alerts") -> None:
        self._redis = client
        self._prefix = prefix

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    async def get_deadline(self, key: str) -> float | None:
        """See ``HotState.get_deadline``."""
        raw = await self._redis.get(self._key("deadline", key))
        return None if raw is None else float(raw)

    async def set_deadline(self, key: str, until: float, ttl_s: float) -> None:
        """See ``HotState.set_deadline``."""
        ttl_ms = int(max(ttl_s, _MIN_TTL_S) * 1000)
        await self._redis.set(self._key("deadline", key), repr(until), px=ttl_ms)

    async def put_record(
        self, namespace: str, name: str, value: dict[str, Any], ttl_s: float
    ) -> None:
        """See ``HotState.put_record`` (a hash per namespace; its TTL covers the longest)."""
        key = self._key("records", namespace)
        ttl_ms = int(max(ttl_s, _MIN_TTL_S) * 1000)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, name, json.dumps(value))
            pipe.pexpire(key, ttl_ms, gt=True)
            pipe.pexpire(key, ttl_ms, nx=True)
            await pipe.execute()

    async def records(self, namespace: str) -> dict[str, dict[str, Any]]:
        """See ``HotState.records``."""
        raw = await self._redis.hgetall(self._key("records", namespace))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    async def drop_record(self, namespace: str, name: str) -> bool:
        """See ``HotState.drop_record``."""
        return bool(await self._redis.hdel(self._key("records", namespace), name))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
