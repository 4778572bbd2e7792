"""The base class every IonVeil worker subclasses (one per service, in ``workers/<name>.py``)."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable

from aiohttp import web

from workers.runtime.context import WorkerContext
from workers.runtime.messages import ConsumerSpec, EndpointSpec

__all__ = ["Worker"]


class Worker(abc.ABC):  # noqa: B024 - every hook has a default; subclassing is the contract
    """A service bound to NATS: its consumers, endpoints, HTTP routes and background loops.

    ``run_worker`` calls ``setup()`` once the connections are open, then starts what
    ``consumers()``, ``endpoints()``, ``routes()`` and ``background()`` return; at exit it drains
    the consumers and calls ``teardown()``.

    Attributes:
        name: the service id (``"dashboard"``); the HTTP port is
            ``SERVICE_CONTRACTS[name]["port"]`` and the micro service ``ionveil-<name>``.
        databases: the databases the worker needs pools for (``("analytics",)``).
        max_concurrent_batches: at most this many consumer batches are handled at once.
        endpoint_timeout_s: a request still unanswered after this gets a 503 error reply.
        fetch_timeout_s: how long an idle fetch waits for messages; bounds the drain delay.
    """

    name: str = ""
    databases: tuple[str, ...] = ()
    max_concurrent_batches: int = 8
    endpoint_timeout_s: float = 60.0
    fetch_timeout_s: float = 1.0

    async def setup(self, ctx: WorkerContext) -> None:  # noqa: B027 - optional hook
        """Migrate schemas and load state; called once before anything is consumed."""

    def consumers(self) -> list[ConsumerSpec]:
        """The durable consumers this worker processes."""
        return []

    def endpoints(self) -> list[EndpointSpec]:
        """The request-reply operations this worker serves."""
        return []

    def routes(self) -> list[web.RouteDef]:
        """Extra HTTP routes next to ``/health`` and ``/metrics`` (e.g. the dashboard page)."""
        return []

    def background(self) -> list[Callable[[], Awaitable[None]]]:
        """Long-running loops started after setup and cancelled at stop."""
        return []

    async def health(self) -> str | None:
        """An extra health check: ``None`` when healthy, else the reason it is not."""
        return None

    async def teardown(self) -> None:  # noqa: B027 - optional hook
        """Flush and checkpoint at drain, after the consumers stopped."""
