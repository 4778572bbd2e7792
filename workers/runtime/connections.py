"""Opening the connections a worker needs: NATS (reconnecting forever), asyncpg pools, Redis."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import asyncpg
import nats
import redis.asyncio as aioredis
import structlog
from nats.aio.client import Client as NATS

from ionveil.errors import ConfigurationError
from workers.settings import Settings

__all__ = ["close_pools", "connect_nats", "open_pools", "open_redis"]

log = structlog.get_logger(__name__)

_RECONNECT_WAIT_S = 1.0
_CONNECT_TIMEOUT_S = 5.0


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.nats_tls_ca is None and settings.nats_tls_cert is None:
        return None
    context = ssl.create_default_context(
        cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None
    )
    if settings.nats_tls_cert is not None:
        if settings.nats_tls_key is None:
            raise ConfigurationError("IONVEIL_NATS_TLS_KEY: required with IONVEIL_NATS_TLS_CERT")
        context.load_cert_chain(str(settings.nats_tls_cert), str(settings.nats_tls_key))
    return context


async def connect_nats(settings: Settings, name: str) -> NATS:
    """Connect to ``IONVEIL_NATS_URL`` with credentials/TLS from settings; reconnect forever.

    Raises:
        ConfigurationError: ``IONVEIL_NATS_URL`` is not set (embedded servers are started by
            the CLI before the runtime is used).
    """
    if not settings.nats_url:
        raise ConfigurationError("IONVEIL_NATS_URL: not set (start the embedded server first)")
    bound = log.bind(connection=name)

    async def on_error(exc: Exception) -> None:
        bound.warning("nats error", error=repr(exc))

    async def on_disconnect() -> None:
        bound.warning("nats disconnected")

    async def on_reconnect() -> None:
        bound.info("nats reconnected")

    async def on_close() -> None:
        bound.info("nats connection closed")

    options: dict[str, Any] = {
        "servers": [url.strip() for url in settings.nats_url.split(",")],
        "name": name,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": _RECONNECT_WAIT_S,
        "connect_timeout": _CONNECT_TIMEOUT_S,
        "error_cb": on_error,
        "disconnected_cb": on_disconnect,
        "reconnected_cb": on_reconnect,
        "closed_cb": on_close,
    }
    if settings.nats_user is not None:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password or ""
    if settings.nats_token is not None:
        options["token"] = settings.nats_token
    if settings.nats_creds is not None:
        options["user_credentials"] = str(settings.nats_creds)
    tls = _tls_context(settings)
    if tls is not None:
        options["tls"] = tls
    return await nats.connect(**options)


async def open_pools(settings: Settings, databases: tuple[str, ...]) -> dict[str, asyncpg.Pool]:
    """An asyncpg pool per declared database.

    Pools open lazily (``min_size=0``): a database that is down at start makes ``/health``
    answer 503 naming it instead of the worker failing to start; ``setup()`` decides whether
    it can run without it.

    Raises:
        ConfigurationError: a declared database has no DSN (naming ``IONVEIL_<DB>_DSN``).
    """
    pools: dict[str, asyncpg.Pool] = {}
    try:
        for database in databases:
            dsn = settings.dsn(database)
            if not dsn:
                raise ConfigurationError(f"IONVEIL_{database.upper()}_DSN: not set")
            pools[database] = await asyncpg.create_pool(
                dsn, min_size=0, max_size=settings.db_pool_max
            )
    except BaseException:
        await close_pools(pools)
        raise
    return pools


async def close_pools(pools: dict[str, asyncpg.Pool], timeout_s: float = 5.0) -> None:
    """Close every pool, terminating connections still busy after ``timeout_s``."""
    for name, pool in pools.items():
        try:
            await asyncio.wait_for(pool.close(), timeout_s)
        except TimeoutError:
            log.warning("pool did not close in time; terminating", database=name)
            pool.terminate()


def open_redis(settings: Settings) -> aioredis.Redis | None:
    """A Redis client for ``IONVEIL_REDIS_URL``, or ``None`` when it is not set."""
    if not settings.redis_url:
        return None
    return aioredis.from_url(settings.redis_url)
