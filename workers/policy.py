"""The live policy worker: one ``PolicyEngine`` per org, fed by ``ionveil.dispatch.events.<org>``.

Bindings (ARCHITECTURE.md, "NATS contract"; subjects.yaml):

- consumes the ``policy-engine`` durable on DISPATCH: a dispatch event or an array of them;
  ``sla_met`` false is a failure, the event's ``timestamp`` is the outcome time, the subject's
  ``<org>`` is the org (an event naming another ``org_id`` is dead-lettered);
- applies each batch exactly once per event id in the core database (``PostgresPolicyStore``),
  the transitions committed in the same transaction (an outbox);
- publishes them on ``ionveil.policy.transitions.<org>`` with ``Nats-Msg-Id`` ``<org>-<sequence>``
  after the commit, and again from the outbox after a crash (the stream drops the repeat);
- serves ``ionveil.api.policy.<org>.state`` and ``ionveil.api.policy.<org>.configure``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import nats.errors
import structlog
from pydantic import BaseModel, ConfigDict, Field, StrictBool, TypeAdapter, field_validator

from ionveil.errors import TransientError, ValidationError
from ionveil.models import MAX_ID_LENGTH
from services.policy import LiveOutcome, LivePolicyService, OutboxEntry, PostgresPolicyStore
from workers._dispatch_payload import events_for_subject_org
from workers.codec import check_not_future, encode_payload, parse_timestamp
from workers.runtime import ConsumerSpec, EndpointSpec, Envelope, Request, Worker, WorkerContext

__all__ = ["DispatchOutcome", "PolicyWorker"]

log = structlog.get_logger(__name__)

TRANSITIONS_SUBJECT = "ionveil.policy.transitions.{org}"
MAX_EVENTS_PER_MESSAGE = 10_000
FLUSH_INTERVAL_S = 1.0
PRUNE_INTERVAL_S = 3600.0
# Applied event ids are kept longer than DISPATCH keeps messages (168 h in subjects.yaml), so
# even a consumer replaying the whole stream cannot count an event twice.
APPLIED_RETENTION_S = 8 * 24 * 3600.0
OUTBOX_STALE_S = 60.0


class DispatchOutcome(BaseModel):
    """The fields of a dispatch event the policy engine needs (others are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
    org_id: Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)] | None = None
    timestamp: datetime
    sla_met: StrictBool

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> datetime:
        return check_not_future(parse_timestamp(value, field="timestamp"))


DISPATCH_PAYLOAD: TypeAdapter[Any] = TypeAdapter(
    DispatchOutcome
    | Annotated[list[DispatchOutcome], Field(min_length=1, max_length=MAX_EVENTS_PER_MESSAGE)]
)


def _outcomes(envelope: Envelope) -> list[LiveOutcome]:
    """The envelope's outcomes; rejects it (DLQ) when it breaks a rule of the subject."""
    events = events_for_subject_org(envelope)
    return [
        LiveOutcome(
            org=envelope.org,
            event_id=event.event_id,
            stream_seq=envelope.stream_seq,
            at=event.timestamp.timestamp(),
            success=event.sla_met,
        )
        for event in events
    ]


class PolicyWorker(Worker):
    """Binds ``LivePolicyService`` to NATS (see the module docstring)."""

    name = "policy"
    databases = ("core",)

    def __init__(self) -> None:
        self._ctx: WorkerContext | None = None
        self._service: LivePolicyService | None = None
        self._flush_lock = asyncio.Lock()
        self._outbox_failing_since: float | None = None

    @property
    def service(self) -> LivePolicyService:
        """The live policy service (available after ``setup``)."""
        if self._service is None:
            raise TransientError("policy worker is not set up yet")
        return self._service

    async def setup(self, ctx: WorkerContext) -> None:
        """Create the schema and publish transitions a previous run left in the outbox."""
        self._ctx = ctx
        self._service = LivePolicyService(PostgresPolicyStore(ctx.pools["core"]))
        await self._service.start()
        await self.flush_outbox()

    def consumers(self) -> list[ConsumerSpec]:
        """The ``policy-engine`` durable on DISPATCH."""
        return [
            ConsumerSpec(
                stream="DISPATCH",
                durable="policy-engine",
                filter_subject="ionveil.dispatch.events.>",
                handler=self._on_events,
                model=DISPATCH_PAYLOAD,
            )
        ]

    def endpoints(self) -> list[EndpointSpec]:
        """``state`` and ``configure`` per org."""
        return [
            EndpointSpec("state", "ionveil.api.policy.*.state", self._state),
            EndpointSpec("configure", "ionveil.api.policy.*.configure", self._configure),
        ]

    def background(self) -> list[Callable[[], Awaitable[None]]]:
        """The outbox flusher and the pruning of old applied event ids."""
        return [self._flush_loop, self._prune_loop]

    async def health(self) -> str | None:
        """Unhealthy when transitions could not be published for a minute."""
        since = self._outbox_failing_since
        if since is not None and time.monotonic() - since > OUTBOX_STALE_S:
            return f"transitions unpublished for {time.monotonic() - since:.0f}s"
        return None

    async def teardown(self) -> None:
        """Publish what the last batches committed."""
        await self.flush_outbox()

    # -- consumer ------------------------------------------------------------------------
    async def _on_events(self, batch: list[Envelope]) -> None:
        outcomes = [outcome for envelope in batch for outcome in _outcomes(envelope)]
        try:
            result = await self.service.apply(outcomes)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise TransientError(f"core database: {type(exc).__name__}: {exc}") from exc
        if result.duplicates:
            log.info("duplicate_outcomes_skipped", count=result.duplicates)
        if result.transitions:
            await self.flush_outbox()

    # -- publishing ----------------------------------------------------------------------
    async def flush_outbox(self) -> int:
        """Publish every committed, unpublished transition; returns how many were published.

        A failure is logged and left for the next flush: the transitions stay in the outbox.
        """
        if self._ctx is None or self._service is None:
            return 0
        async with self._flush_lock:
            published: list[OutboxEntry] = []
            try:
                for entry in await self._service.pending():
                    await self._ctx.js.publish(
                        TRANSITIONS_SUBJECT.format(org=entry.org),
                        encode_payload(entry.payload),
                        headers={"Nats-Msg-Id": entry.msg_id},
                    )
                    published.append(entry)
                self._outbox_failing_since = None
            except (
                nats.errors.Error,
                TimeoutError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                OSError,
            ) as exc:
                if self._outbox_failing_since is None:
                    self._outbox_failing_since = time.monotonic()
                log.warning("transitions_not_published", error=repr(exc))
            finally:
                if published:
                    await self._service.mark_published(published)
            return len(published)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await self.flush_outbox()

    async def _prune_loop(self) -> None:
        while True:
            try:
                pruned = await self.service.prune(APPLIED_RETENTION_S)
                if pruned:
                    log.info("applied_event_ids_pruned", count=pruned)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.warning("prune_failed", error=repr(exc))
            await asyncio.sleep(PRUNE_INTERVAL_S)

    # -- endpoints -----------------------------------------------------------------------
    @staticmethod
    def _org(request: Request) -> str:
        if not request.org or len(request.org) > MAX_ID_LENGTH:
            raise ValidationError("org: missing or too long in the subject")
        return request.org

    async def _state(self, request: Request) -> dict[str, Any]:
        limit = request.payload.get("limit", 20)
        return await self.service.state(self._org(request), limit)

    async def _configure(self, request: Request) -> dict[str, Any]:
        return await self.service.configure(self._org(request), request.payload)
