"""The analytics worker: records every dispatch outcome in the analytics database.

Bindings (ARCHITECTURE.md, "NATS contract"; subjects.yaml):

- consumes the ``analytics-recorder`` durable on DISPATCH (``ionveil.dispatch.events.<org>``: a
  dispatch event or an array of them) and records each event through ``MetricsCollector``: org
  (the subject's), ``incident_id`` = the event's ``event_id`` (the key every DISPATCH consumer
  deduplicates on, so the recorded history is exactly the outcomes the live policy engine
  counted), priority = ``severity``, ``response_time_minutes``, ``region``, ``recorded_at`` =
  the event's ``timestamp`` and the event's own ``sla_met`` verdict;
- one ``INSERT ... ON CONFLICT DO NOTHING`` per fetched batch (``record_many``): a redelivered
  or republished event is never counted twice;
- a message that fails validation, names another org than its subject's, or arrives on a subject
  without an org is dead-lettered (``ionveil.dlq.<subject>``);
- serves ``ionveil.api.analytics.<org>.statistics`` ``{since?, until?}`` ->
  ``MetricsCollector.calculate_statistics`` (``by_priority`` keyed by the priority as a string).

This history is what the simulator replays (``{"replay": {org_id, start, end}}`` patterns).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import asyncpg
import structlog
from prometheus_client import Counter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    field_validator,
)

from ionveil.errors import TransientError, ValidationError
from ionveil.models import MAX_ID_LENGTH
from services.analytics import MetricsCollector, ResponseRecord
from services.analytics.models import validate_record
from workers._dispatch_payload import events_for_subject_org
from workers.codec import check_not_future, parse_timestamp
from workers.runtime import ConsumerSpec, EndpointSpec, Envelope, Request, Worker, WorkerContext

__all__ = ["DISPATCH_EVENTS", "AnalyticsWorker", "DispatchRecord"]

log = structlog.get_logger(__name__)

MAX_EVENTS_PER_MESSAGE = 10_000
_Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


class DispatchRecord(BaseModel):
    """The fields of a dispatch event the analytics record keeps (others are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: _Id
    org_id: _Id | None = None
    dispatch_id: _Id | None = None
    timestamp: datetime
    severity: Annotated[StrictInt, Field(ge=1, le=5)]
    response_time_minutes: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    region: Annotated[str, Field(max_length=MAX_ID_LENGTH)] = ""
    sla_met: StrictBool

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> datetime:
        return check_not_future(parse_timestamp(value, field="timestamp"))

    @field_validator("response_time_minutes", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number of minutes")
        return value


DISPATCH_EVENTS: TypeAdapter[Any] = TypeAdapter(
    DispatchRecord
    | Annotated[list[DispatchRecord], Field(min_length=1, max_length=MAX_EVENTS_PER_MESSAGE)]
)
"""What a DISPATCH message may carry: one event or a non-empty array of them."""


def _records(envelope: Envelope) -> list[ResponseRecord]:
    """The envelope's records; rejects it (DLQ) when it breaks a rule of the subject."""
    events: list[DispatchRecord] = events_for_subject_org(envelope)
    many = isinstance(envelope.data, list)
    records: list[ResponseRecord] = []
    for index, event in enumerate(events):
        where = f"[{index}]." if many else ""
        record = ResponseRecord(
            org_id=envelope.org,
            incident_id=event.event_id,
            priority=event.severity,
            response_time_minutes=event.response_time_minutes,
            region=event.region,
            recorded_at=event.timestamp,
            reported_sla_met=event.sla_met,
        )
        problems = validate_record(record, where)
        if problems:
            envelope.reject("; ".join(p.replace("incident_id", "event_id") for p in problems))
            return []
        records.append(record)
    return records


class AnalyticsWorker(Worker):
    """Binds ``MetricsCollector`` to NATS (see the module docstring).

    Args:
        batch: Messages fetched (and recorded in one statement) per batch.
    """

    name = "analytics"
    databases = ("analytics",)

    def __init__(self, *, batch: int = 256) -> None:
        self._batch = batch
        self._collector: MetricsCollector | None = None
        self._recorded: Counter | None = None

    @property
    def collector(self) -> MetricsCollector:
        """The metrics collector (available after ``setup``)."""
        if self._collector is None:
            raise TransientError("analytics worker is not set up yet")
        return self._collector

    async def setup(self, ctx: WorkerContext) -> None:
        """Create (or migrate) the response-metrics table; register the record counter."""
        self._collector = MetricsCollector(ctx.pools["analytics"])
        await self._collector.migrate()
        self._recorded = Counter(
            "ionveil_analytics_records_total",
            "Dispatch events seen by the analytics recorder, by outcome.",
            ["outcome"],
            registry=ctx.metrics.registry,
        )

    def consumers(self) -> list[ConsumerSpec]:
        """The ``analytics-recorder`` durable on DISPATCH."""
        return [
            ConsumerSpec(
                stream="DISPATCH",
                durable="analytics-recorder",
                filter_subject="ionveil.dispatch.events.>",
                handler=self._on_events,
                model=DISPATCH_EVENTS,
                batch=self._batch,
            )
        ]

    def endpoints(self) -> list[EndpointSpec]:
        """``statistics`` per org."""
        return [EndpointSpec("statistics", "ionveil.api.analytics.*.statistics", self._statistics)]

    # -- consumer ------------------------------------------------------------------------
    async def _on_events(self, batch: list[Envelope]) -> None:
        records = [record for envelope in batch for record in _records(envelope)]
        if not records:
            return
        try:
            inserted = await self.collector.record_many(records)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise TransientError(f"analytics database: {type(exc).__name__}: {exc}") from exc
        duplicates = len(records) - inserted
        if self._recorded is not None:
            self._recorded.labels("recorded").inc(inserted)
            self._recorded.labels("duplicate").inc(duplicates)
        if duplicates:
            log.info("duplicate_dispatch_events_skipped", count=duplicates)

    # -- endpoints -----------------------------------------------------------------------
    async def _statistics(self, request: Request) -> dict[str, Any]:
        org = request.org
        if not org or len(org) > MAX_ID_LENGTH:
            raise ValidationError("org: missing or too long in the subject")
        bounds: dict[str, datetime | None] = {}
        for name in ("since", "until"):
            value = request.payload.get(name)
            bounds[name] = None if value is None else parse_timestamp(value, field=name)
        stats = await self.collector.calculate_statistics(org, **bounds)
        stats["by_priority"] = {str(p): v for p, v in stats["by_priority"].items()}
        return stats
