"""Session-wide real servers and per-test isolation.

Every test that touches a server gets a clean slate: JetStream streams deleted before it runs,
a fresh PostgreSQL schema in each database (dropped after), and a unique Redis key prefix.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NATS

from tests.infra import Infra, start_infra
from workers.settings import Settings

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """The session's NATS, PostgreSQL (three databases) and optional Redis."""
    base = Path(tempfile.mkdtemp(prefix="ionveil-test-"))
    servers = start_infra(base)
    try:
        yield servers
    finally:
        servers.stop()


async def _delete_all_streams(nc: NATS) -> None:
    js = nc.jetstream()
    for info in await js.streams_info():
        await js.delete_stream(info.config.name)


@pytest.fixture
async def nc(infra: Infra) -> AsyncIterator[NATS]:
    """A NATS connection to a JetStream with no streams left from earlier tests."""
    client = await nats.connect(infra.nats_url, name="ionveil-test")
    await _delete_all_streams(client)
    try:
        yield client
    finally:
        await client.drain()


@pytest.fixture
async def dsns(infra: Infra) -> AsyncIterator[dict[str, str]]:
    """DSNs of the core, analytics and audit databases, each on a fresh empty schema."""
    out = await infra.fresh_schema_dsns()
    try:
        yield out
    finally:
        await infra.drop_schemas()


async def _pool(dsn: str) -> asyncpg.Pool:
    return await asyncpg.create_pool(dsn, min_size=1, max_size=5)


@pytest.fixture
async def core_pool(dsns: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the core database's fresh schema."""
    pool = await _pool(dsns["core"])
    yield pool
    await pool.close()


@pytest.fixture
async def analytics_pool(dsns: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the analytics database's fresh schema."""
    pool = await _pool(dsns["analytics"])
    yield pool
    await pool.close()


@pytest.fixture
async def audit_pool(dsns: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the audit database's fresh schema."""
    pool = await _pool(dsns["audit"])
    yield pool
    await pool.close()


@pytest.fixture
def redis_url(infra: Infra) -> str:
    """The Redis URL (tests needing Redis are skipped when ``IONVEIL_REDIS_URL`` is unset)."""
    if not infra.redis_url:
        pytest.skip("IONVEIL_REDIS_URL not set")
    return infra.redis_url


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses."""
    return f"ionveil-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(infra: Infra, dsns: dict[str, str], tmp_path: Path) -> Settings:
    """Settings pointing a worker at this test's servers and schemas."""
    return Settings(
        nats_url=infra.nats_url,
        core_dsn=dsns["core"],
        analytics_dsn=dsns["analytics"],
        audit_dsn=dsns["audit"],
        redis_url=infra.redis_url,
        data_dir=tmp_path,
        log_format="console",
    )
