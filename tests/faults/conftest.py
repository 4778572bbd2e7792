"""Fixtures of the fault suite: each module starts its OWN servers, because its tests kill them.

Totals across the suite (faults injected, events published, lost, duplicates) are gathered in
``FIGURES`` and printed at the end of the run for the closing note of issue 7.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults._cluster import NatsCluster
from tests.faults._figures import FIGURES
from tests.faults._servers import PrivatePostgres, PrivateRedis, redis_server_binary

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())


@pytest.fixture(scope="module")
def fault_dir() -> Iterator[Path]:
    """A temporary directory for this module's servers and logs."""
    with tempfile.TemporaryDirectory(prefix="ionveil-faults-") as path:
        yield Path(path)


@pytest.fixture(scope="module")
def cluster(fault_dir: Path) -> Iterator[NatsCluster]:
    """A private three-node NATS cluster (R3 streams possible)."""
    nodes = NatsCluster(fault_dir / "cluster")
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(scope="module")
def private_pg(fault_dir: Path) -> Iterator[PrivatePostgres]:
    """This module's own PostgreSQL (core, analytics, audit), stoppable."""
    pg = PrivatePostgres(fault_dir / "pg")
    pg.start()
    try:
        yield pg
    finally:
        pg.close()


@pytest.fixture(scope="module")
def private_redis(fault_dir: Path) -> Iterator[PrivateRedis | None]:
    """This module's own Redis, or ``None`` when ``redis-server`` is not installed."""
    if redis_server_binary() is None:
        yield None
        return
    server = PrivateRedis(fault_dir / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the suite's figures (faults, events, lost, duplicates, bad inputs)."""
    if FIGURES.any() and not FIGURES.printed:
        FIGURES.printed = True
        terminalreporter.write_line(FIGURES.summary())
