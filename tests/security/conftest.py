"""Fixtures of the security suite: a nats-server running the shipped access-control config.

The figures (bad inputs tried) are printed at the end of the run with the fault suite's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from tests.faults._figures import FIGURES
from workers.embedded import EmbeddedNats

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "nats-server.conf"
USERS = ("admin", "policy", "analytics", "dashboard", "alerts", "simulator", "publisher")
TENANTS = ("metro", "county")


def user_password(user: str) -> str:
    """The password the test gives ``user`` through the environment."""
    return f"sec-{user}-pw"


@pytest.fixture
def shipped_nats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A nats-server running ``deploy/nats/nats-server.conf``; yields its URL."""
    for user in (*USERS, *(f"tenant-{org}" for org in TENANTS)):
        env = f"IONVEIL_NATS_{user.upper().replace('-', '_')}_PASSWORD"
        monkeypatch.setenv(env, user_password(user))
    server = EmbeddedNats(tmp_path / "nats", config_file=CONFIG)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


class UserSession:
    """A connection as one user, collecting the asynchronous errors the server sends."""

    def __init__(self, nc: NATS, errors: asyncio.Queue[Exception]) -> None:
        self.nc = nc
        self.errors = errors

    async def violation(self, timeout_s: float = 5.0) -> str:
        """The next permissions-violation message (fails the test when none comes)."""
        exc = await asyncio.wait_for(self.errors.get(), timeout_s)
        text = str(exc).lower()
        assert "permissions violation" in text, text
        return text


ConnectAs = Callable[[str], Awaitable[UserSession]]


@pytest.fixture
async def connect_as(shipped_nats: str) -> AsyncIterator[ConnectAs]:
    """Open sessions as named users (tenants with their ``_INBOX.<org>`` prefix)."""
    sessions: list[UserSession] = []

    async def _connect(user: str) -> UserSession:
        errors: asyncio.Queue[Exception] = asyncio.Queue()

        async def on_error(exc: Exception) -> None:
            await errors.put(exc)

        org = user.removeprefix("tenant-")
        extra = {"inbox_prefix": f"_INBOX.{org}"} if user.startswith("tenant-") else {}
        nc = await nats.connect(
            shipped_nats,
            user=user,
            password=user_password(user),
            error_cb=on_error,
            allow_reconnect=False,
            **extra,
        )
        sessions.append(UserSession(nc, errors))
        return sessions[-1]

    yield _connect
    for session in sessions:
        if not session.nc.is_closed:
            await session.nc.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures (bad inputs tried, and the fault suite's if it ran too)."""
    if FIGURES.any() and not FIGURES.printed:
        FIGURES.printed = True
        terminalreporter.write_line(FIGURES.summary())
