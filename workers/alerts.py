"""The alerts worker: binds ``SLAMonitorService`` to NATS.

Bindings (ARCHITECTURE.md, "NATS contract"; subjects.yaml):

- consumes ``alerts-incidents`` on INCIDENTS (``ionveil.incidents.<org>``:
  ``{incident_id, priority, status, timestamp, region?}``; ``dispatched`` starts the SLA clock,
  ``arrived``/``closed``/``cancelled`` stop it and resolve the incident's SLA alerts) and
  ``alerts-policy`` on POLICY (``ionveil.policy.transitions.<org>``: raises, updates or resolves
  the org's policy alert);
- runs the check cycle every ``IONVEIL_ALERTS_CHECK_INTERVAL_S`` (incidents, org rules, then
  escalations);
- publishes every alert state change, the whole alert, on ``ionveil.alerts.<org>.<severity>``
  with ``Nats-Msg-Id: <alert_id>-<seq>``, from a transactional outbox in the audit database:
  right after the commit, then again at start, every second and at teardown for whatever was
  not acked (``/health`` turns 503 when a change stays unpublished for a minute);
- serves ``ionveil.api.alerts.<org>.{active,get,ack,resolve,escalate,suppress,unsuppress,
  suppressions,policy}`` and ``ionveil.api.alerts.rules.{add,remove,list}``.

State lives in the audit database (``PostgresAlertStore``), hot cool-down/suppression keys in
Redis when configured; two replicas side by side raise each alert and send each notification
once (see ``services.alerts.postgres``); a notification whose sender died is re-sent by the
check loop of any replica (``services.alerts.notify`` states the exact guarantee).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator
from redis.exceptions import RedisError

from ionveil.errors import ConfigurationError, NotFoundError, TransientError, ValidationError
from ionveil.models import MAX_ID_LENGTH
from services.alerts import (
    Alert,
    AlertSeverity,
    AlertStatus,
    EscalationManager,
    InProcessHotState,
    PostgresAlertStore,
    RedisHotState,
    SLAMonitorService,
)
from services.alerts._serde import alert_to_dict, policy_from_dict, rule_from_dict, rule_to_dict
from services.alerts.outbox import FLUSH_MIN_AGE_S
from services.audit import AuditLogger, PostgresAuditStore
from services.notifications import (
    ChannelRegistry,
    EmailChannel,
    NatsSubjectChannel,
    WebhookChannel,
)
from workers.codec import check_not_future, encode_payload, parse_timestamp
from workers.runtime import ConsumerSpec, EndpointSpec, Envelope, Request, Worker, WorkerContext
from workers.settings import Settings

__all__ = ["AlertsWorker", "IncidentEvent", "PolicyTransitionEvent", "build_channels"]

log = structlog.get_logger(__name__)

ALERTS_SUBJECT = "ionveil.alerts.{org}.{severity}"
OUTBOX_FLUSH_INTERVAL_S = 1.0
OUTBOX_STALE_S = 60.0
# Storage away (PostgreSQL, or Redis: its errors are not OSErrors): the check loop tries again
# next cycle, the consumers nak and retry.
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, RedisError)

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


class IncidentEvent(BaseModel):
    """An ``ionveil.incidents.<org>`` message (unknown fields ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    incident_id: Id
    priority: Annotated[int, Field(ge=1, le=5, strict=True)]
    status: str
    timestamp: datetime
    region: Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)] | None = None

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> datetime:
        # A dispatch time in the future would hold the SLA clock back: refused.
        return check_not_future(parse_timestamp(value, field="timestamp"))


class PolicyTransitionEvent(BaseModel):
    """An ``ionveil.policy.transitions.<org>`` message (``PolicyTransition.as_dict()``)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    from_policy: Annotated[str | None, Field(alias="from", max_length=MAX_ID_LENGTH)] = None
    to: Id
    timestamp: Any = None
    reason: Annotated[str, Field(max_length=4096)] = ""
    sequence: int | None = None
    org_id: Id | None = None


def build_channels(settings: Settings, nc: Any) -> ChannelRegistry:
    """The notification registry named in ``IONVEIL_ALERTS_CHANNELS``.

    Raises:
        ConfigurationError: a channel target is not a webhook URL, ``nats:`` or ``smtp://``.
    """
    registry = ChannelRegistry()
    for name, target in settings.alerts_channels.items():
        try:
            if target.startswith(("http://", "https://")):
                registry.register(name, WebhookChannel(target, name=name))
            elif target.startswith("nats:"):
                registry.register(name, NatsSubjectChannel(nc, target[5:], name=name))
            elif target.startswith("smtp://"):
                parts = urlsplit(target)
                query = parse_qs(parts.query)
                registry.register(
                    name,
                    EmailChannel(
                        parts.hostname or "localhost",
                        parts.port or 25,
                        query["from"][0],
                        query["to"][0].split(","),
                        name=name,
                    ),
                )
            else:
                raise ValidationError("target: must be http(s)://, nats:<subject> or smtp://")
        except (ValidationError, KeyError) as exc:
            raise ConfigurationError(f"IONVEIL_ALERTS_CHANNELS[{name}]: {exc}") from None
    return registry


def _field(payload: dict[str, Any], name: str, *, required: bool = True) -> Any:
    value = payload.get(name)
    if required and (not isinstance(value, str) or not value.strip()):
        raise ValidationError(f"{name}: required (a non-empty string)")
    return value


class AlertsWorker(Worker):
    """Binds ``SLAMonitorService`` to NATS (see the module docstring)."""

    name = "alerts"
    databases = ("audit",)

    def __init__(self, *, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock
        self._ctx: WorkerContext | None = None
        self._monitor: SLAMonitorService | None = None
        self._channels: ChannelRegistry | None = None
        self.escalation: EscalationManager | None = None
        self.outbox_stale_s = OUTBOX_STALE_S
        self.outbox_flush_interval_s = OUTBOX_FLUSH_INTERVAL_S

    @property
    def monitor(self) -> SLAMonitorService:
        """The monitor (available after ``setup``)."""
        if self._monitor is None:
            raise TransientError("alerts worker is not set up yet")
        return self._monitor

    async def setup(self, ctx: WorkerContext) -> None:
        """Build the monitor on the audit database and load its state."""
        self._ctx = ctx
        pool = ctx.pools["audit"]
        store = PostgresAlertStore(pool, AuditLogger(PostgresAuditStore(pool)))
        hot = (
            RedisHotState(ctx.redis, prefix=ctx.settings.alerts_redis_prefix)
            if ctx.redis is not None
            else InProcessHotState()
        )
        self._channels = build_channels(ctx.settings, ctx.nc)
        self._monitor = SLAMonitorService(
            ctx.settings.alerts_check_interval_s,
            store=store,
            channels=self._channels,
            hot_state=hot,
            clock=self._clock,
            publisher=self._publish,
            default_channels=ctx.settings.alerts_default_channels,
            replica_id=ctx.replica_id,
        )
        self.escalation = EscalationManager(self._monitor)
        await self._monitor.load_state()
        await self._monitor.flush_outbox()  # what a previous run committed but never published

    async def _publish(self, alert: Alert) -> None:
        assert self._ctx is not None
        await self._ctx.js.publish(
            ALERTS_SUBJECT.format(org=alert.org_id, severity=alert.severity.value),
            encode_payload(alert_to_dict(alert)),
            headers={"Nats-Msg-Id": f"{alert.alert_id}-{alert.seq}"},
        )

    def consumers(self) -> list[ConsumerSpec]:
        """``alerts-incidents`` and ``alerts-policy``."""
        return [
            ConsumerSpec(
                "INCIDENTS",
                "alerts-incidents",
                "ionveil.incidents.>",
                self._on_incidents,
                model=IncidentEvent,
            ),
            ConsumerSpec(
                "POLICY",
                "alerts-policy",
                "ionveil.policy.transitions.>",
                self._on_transitions,
                model=PolicyTransitionEvent,
            ),
        ]

    def background(self) -> list[Callable[[], Awaitable[None]]]:
        """The check loop and the outbox flusher."""
        return [self._check_loop, self._outbox_loop]

    async def health(self) -> str | None:
        """Unhealthy while an alert change has waited in the outbox for over a minute."""
        lag = await self.monitor.outbox.lag_s()
        if lag is not None and lag > self.outbox_stale_s:
            return f"alert changes unpublished for {lag:.0f}s"
        return None

    async def teardown(self) -> None:
        """Let notifications in flight finish, publish what is left, close the channels."""
        if self._monitor is not None:
            await self._monitor.notifier.drain()
            await self._monitor.flush_outbox()
        if self._channels is not None:
            await self._channels.close()

    async def _outbox_loop(self) -> None:
        while True:
            await asyncio.sleep(self.outbox_flush_interval_s)
            await self.monitor.flush_outbox(min_age_s=FLUSH_MIN_AGE_S)

    async def _check_loop(self) -> None:
        while True:
            try:
                await self.monitor.run_cycle()
            except _DB_ERRORS as exc:
                log.warning("alerts_cycle_failed", error=repr(exc))
            await asyncio.sleep(self.monitor.check_interval_seconds)

    # -- consumers -----------------------------------------------------------------------
    async def _on_incidents(self, batch: list[Envelope]) -> None:
        for envelope in batch:
            event: IncidentEvent = envelope.data
            if not envelope.org:
                envelope.reject("subject: expected ionveil.incidents.<org>")
                continue
            try:
                await self.monitor.on_incident_event(
                    envelope.org,
                    event.incident_id,
                    event.priority,
                    event.status,
                    event.timestamp,
                    event.region,
                )
            except ValidationError as exc:
                envelope.reject(str(exc))
            except _DB_ERRORS as exc:
                raise TransientError(f"audit database: {exc!r}") from exc

    async def _on_transitions(self, batch: list[Envelope]) -> None:
        for envelope in batch:
            event: PolicyTransitionEvent = envelope.data
            if not envelope.org or (event.org_id and event.org_id != envelope.org):
                envelope.reject("org_id: does not match the subject's org")
                continue
            payload = {
                "from": event.from_policy,
                "to": event.to,
                "reason": event.reason,
                "sequence": event.sequence,
            }
            if event.timestamp is not None:
                payload["timestamp"] = event.timestamp
            try:
                await self.monitor.on_policy_transition(envelope.org, payload)
            except ValidationError as exc:
                envelope.reject(str(exc))
            except _DB_ERRORS as exc:
                raise TransientError(f"audit database: {exc!r}") from exc

    # -- endpoints -----------------------------------------------------------------------
    def endpoints(self) -> list[EndpointSpec]:
        """The per-org alert operations and the rule operations."""
        org_ops: dict[str, Callable[[Request], Awaitable[Any]]] = {
            "active": self._active,
            "get": self._get,
            "ack": self._ack,
            "resolve": self._resolve,
            "escalate": self._escalate,
            "suppress": self._suppress,
            "unsuppress": self._unsuppress,
            "suppressions": self._suppressions,
            "policy": self._set_policy,
        }
        specs = [EndpointSpec(op, f"ionveil.api.alerts.*.{op}", fn) for op, fn in org_ops.items()]
        specs += [
            EndpointSpec("rules-add", "ionveil.api.alerts.rules.add", self._rules_add),
            EndpointSpec("rules-remove", "ionveil.api.alerts.rules.remove", self._rules_remove),
            EndpointSpec("rules-list", "ionveil.api.alerts.rules.list", self._rules_list),
        ]
        return specs

    async def _own_alert(self, request: Request) -> Alert:
        """The alert named in the request, only if it belongs to the request's org."""
        alert = await self.monitor.get_alert(_field(request.payload, "alert_id"))
        if alert.org_id != request.org:
            raise NotFoundError(f"alert {alert.alert_id!r} not found")  # no cross-org reads
        return alert

    async def _active(self, request: Request) -> list[dict[str, Any]]:
        severity = request.payload.get("severity")
        status = request.payload.get("status")
        try:
            sev = AlertSeverity(severity) if severity is not None else None
            st = AlertStatus(status) if status is not None else None
        except ValueError as exc:
            raise ValidationError(f"severity/status: {exc}") from None
        alerts = await self.monitor.get_active_alerts(str(request.org), sev, st)
        return [alert_to_dict(a) for a in alerts]

    async def _get(self, request: Request) -> dict[str, Any]:
        return alert_to_dict(await self._own_alert(request))

    async def _ack(self, request: Request) -> dict[str, Any]:
        alert = await self._own_alert(request)
        done = await self.monitor.acknowledge_alert(
            alert.alert_id, _field(request.payload, "user"), request.payload.get("note")
        )
        return alert_to_dict(done)

    async def _resolve(self, request: Request) -> dict[str, Any]:
        alert = await self._own_alert(request)
        note = request.payload.get("note") or "resolved by operator"
        done = await self.monitor.resolve_alert(
            alert.alert_id, _field(request.payload, "user"), note
        )
        return alert_to_dict(done)

    async def _escalate(self, request: Request) -> dict[str, Any]:
        alert = await self._own_alert(request)
        assert self.escalation is not None
        done = await self.escalation.escalate_alert(
            alert.alert_id,
            str(request.payload.get("reason") or "manual"),
            actor=str(request.payload.get("user") or "operator"),
        )
        return alert_to_dict(done)

    async def _suppress(self, request: Request) -> dict[str, Any]:
        p = request.payload
        sid = await self.monitor.suppressions.add(
            str(request.org),
            p.get("rule_pattern"),
            p.get("duration_minutes"),
            p.get("reason"),
            p.get("user") or "operator",
        )
        return {"suppression_id": sid}

    async def _unsuppress(self, request: Request) -> dict[str, Any]:
        sid = _field(request.payload, "suppression_id")
        active = {
            s["suppression_id"]
            for s in self.monitor.suppressions.get_active_suppressions(str(request.org))
        }
        if sid not in active:
            return {"removed": False}
        removed = await self.monitor.suppressions.remove(
            sid, actor=str(request.payload.get("user") or "operator")
        )
        return {"removed": removed}

    async def _suppressions(self, request: Request) -> list[dict[str, Any]]:
        await self.monitor.suppressions.refresh()
        return self.monitor.suppressions.get_active_suppressions(str(request.org))

    async def _set_policy(self, request: Request) -> dict[str, Any]:
        policy = policy_from_dict(request.payload.get("policy"))
        assert self.escalation is not None
        await self.escalation.save_policy(
            str(request.org), policy, actor=str(request.payload.get("user") or "operator")
        )
        return {"org_id": request.org, "policy_id": policy.policy_id}

    async def _rules_add(self, request: Request) -> dict[str, Any]:
        rule = rule_from_dict(request.payload.get("rule", request.payload))
        await self.monitor.save_rule(rule, actor=str(request.payload.get("user") or "operator"))
        return rule_to_dict(rule)

    async def _rules_remove(self, request: Request) -> dict[str, Any]:
        removed = await self.monitor.delete_rule(_field(request.payload, "rule_id"))
        return {"removed": removed}

    async def _rules_list(self, request: Request) -> list[dict[str, Any]]:
        await self.monitor.refresh()
        org = request.payload.get("org_id")
        return [rule_to_dict(r) for r in self.monitor.get_rules(org)]
