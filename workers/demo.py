"""Realistic demo traffic: incidents and dispatch events for a few orgs, published to JetStream.

Each incident goes opened -> dispatched -> arrived -> closed over three ticks; when it arrives a
dispatch event (the dashboard contract: ``event_id, org_id, dispatch_id, timestamp, severity,
response_time_minutes, distance_km, region, unit_type, sla_met, metadata{lat, lon}``) reports
the response. Times are set in the recent past so that an SLA miss is already a miss when its
``dispatched`` update arrives (no waiting eight minutes for a demo). Priorities are weighted
towards 3; regions and coordinates lie around each org's city centre. ``miss_org`` makes one
org miss most of its SLAs so its live policy escalates.

Everything random comes from one ``random.Random(seed)``: the same seed and clock give the same
messages, ids included (so re-running a seed inside the streams' duplicate window publishes
nothing new: the ids are de-duplicated by JetStream).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from nats.js.client import JetStreamContext

from ionveil.errors import ValidationError
from ionveil.models import SLA_BY_SEVERITY
from workers.codec import encode_payload

__all__ = [
    "DEFAULT_ORGS",
    "DemoConfig",
    "DemoMessage",
    "DemoProgress",
    "DemoTraffic",
    "publish_demo",
]

log = structlog.get_logger(__name__)

DEFAULT_ORGS: tuple[str, ...] = ("metro", "county")
REGIONS: tuple[str, ...] = ("north", "south", "east", "west", "central")
UNIT_TYPES: tuple[str, ...] = ("ambulance", "engine", "patrol", "rescue")
PRIORITY_WEIGHTS: dict[int, int] = {1: 1, 2: 2, 3: 4, 4: 2, 5: 1}
# Region -> (north-south, east-west) offset in degrees from the city centre.
_REGION_OFFSETS: dict[str, tuple[float, float]] = {
    "north": (0.06, 0.0),
    "south": (-0.06, 0.0),
    "east": (0.0, 0.09),
    "west": (0.0, -0.09),
    "central": (0.0, 0.0),
}
_BASE_CENTRE = (51.5074, -0.1278)


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """What traffic to make.

    Attributes:
        orgs: the orgs publishing.
        miss_org: an org whose SLA misses pile up (``None``: none).
        miss_rate: share of SLA misses of an ordinary org.
        miss_org_rate: share of SLA misses of ``miss_org``.
        seed: the random seed.
        run_id: prefix of every id (default ``s<seed>``).
    """

    orgs: tuple[str, ...] = DEFAULT_ORGS
    miss_org: str | None = None
    miss_rate: float = 0.05
    miss_org_rate: float = 0.85
    seed: int = 1
    run_id: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not self.orgs:
            problems.append("orgs: at least one org is needed")
        for org in self.orgs:
            if not org or not org.replace("-", "").replace("_", "").isalnum():
                problems.append(f"orgs: {org!r} is not a valid subject token")
        if self.miss_org is not None and self.miss_org not in self.orgs:
            problems.append(f"miss_org: {self.miss_org!r} is not one of {list(self.orgs)}")
        for name in ("miss_rate", "miss_org_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name}: must be between 0 and 1")
        if problems:
            raise ValidationError(problems)


@dataclass(frozen=True, slots=True)
class DemoMessage:
    """One message to publish: subject, payload (a map) and its ``Nats-Msg-Id``."""

    subject: str
    payload: dict[str, Any]
    msg_id: str


@dataclass(slots=True)
class DemoProgress:
    """Counts so far, for the progress line."""

    incidents: int = 0
    incident_updates: int = 0
    dispatch_events: int = 0
    misses: dict[str, int] = field(default_factory=dict)
    events_by_org: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        """``published 120 dispatch events (12.0/s), 480 incident updates; misses metro 5% ...``."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        shares = ", ".join(
            f"{org} {100 * self.misses.get(org, 0) / n:.0f}%"
            for org, n in sorted(self.events_by_org.items())
            if n
        )
        return (
            f"published {self.dispatch_events} dispatch events "
            f"({self.dispatch_events / elapsed:.1f}/s), {self.incident_updates} incident "
            f"updates; SLA misses: {shares or '-'}"
        )


@dataclass(slots=True)
class _Incident:
    org: str
    incident_id: str
    priority: int
    region: str
    arrived_at: datetime
    event: dict[str, Any]


class DemoTraffic:
    """Deterministic generator of demo messages, tick by tick.

    Args:
        config: what to generate.
        clock: epoch seconds now (injected so tests are reproducible).
    """

    def __init__(self, config: DemoConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._rng = random.Random(config.seed)
        self._run = config.run_id or f"s{config.seed}"
        self._count = 0
        self._arriving: deque[list[_Incident]] = deque()
        self._closing: deque[list[_Incident]] = deque()
        self._centres = {
            org: (
                _BASE_CENTRE[0] + self._rng.uniform(-2.0, 2.0),
                _BASE_CENTRE[1] + self._rng.uniform(-2.0, 2.0),
            )
            for org in config.orgs
        }

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _miss_rate(self, org: str) -> float:
        cfg = self.config
        return cfg.miss_org_rate if org == cfg.miss_org else cfg.miss_rate

    def _incident(self, now: datetime) -> tuple[_Incident, list[DemoMessage]]:
        rng = self._rng
        self._count += 1
        org = rng.choice(self.config.orgs)
        priority = rng.choices(list(PRIORITY_WEIGHTS), weights=list(PRIORITY_WEIGHTS.values()))[0]
        region = rng.choice(REGIONS)
        unit_type = rng.choice(UNIT_TYPES)
        sla = SLA_BY_SEVERITY[priority]
        met = rng.random() >= self._miss_rate(org)
        response = sla * (rng.uniform(0.25, 0.95) if met else rng.uniform(1.1, 2.0))
        distance = round(max(0.3, response * rng.uniform(0.35, 0.8)), 2)
        queue = rng.uniform(0.5, 3.0)
        d_lat, d_lon = _REGION_OFFSETS[region]
        centre = self._centres[org]
        lat = round(centre[0] + d_lat + rng.gauss(0, 0.015), 5)
        lon = round(centre[1] + d_lon + rng.gauss(0, 0.02), 5)
        arrived_at = now
        dispatched_at = arrived_at - timedelta(minutes=response)
        opened_at = dispatched_at - timedelta(minutes=queue)
        n = self._count
        incident_id = f"{self._run}-{org}-i{n}"
        event = {
            "event_id": f"{self._run}-{org}-e{n}",
            "org_id": org,
            "dispatch_id": f"{self._run}-{org}-d{n}",
            "timestamp": arrived_at,
            "severity": priority,
            "response_time_minutes": round(response, 3),
            "distance_km": distance,
            "region": region,
            "unit_type": unit_type,
            "sla_met": met,
            "metadata": {"lat": lat, "lon": lon, "incident_id": incident_id},
        }
        incident = _Incident(org, incident_id, priority, region, arrived_at, event)
        msgs = [
            self._update(incident, "opened", opened_at),
            self._update(incident, "dispatched", dispatched_at),
        ]
        return incident, msgs

    @staticmethod
    def _update(incident: _Incident, status: str, at: datetime) -> DemoMessage:
        payload = {
            "incident_id": incident.incident_id,
            "priority": incident.priority,
            "status": status,
            "timestamp": at,
            "region": incident.region,
        }
        return DemoMessage(
            f"ionveil.incidents.{incident.org}", payload, f"{incident.incident_id}-{status}"
        )

    def _arrive(self, batch: list[_Incident]) -> list[DemoMessage]:
        out = []
        for incident in batch:
            out.append(self._update(incident, "arrived", incident.arrived_at))
            event = incident.event
            out.append(
                DemoMessage(f"ionveil.dispatch.events.{incident.org}", event, event["event_id"])
            )
        self._closing.append(batch)
        return out

    def _close_all(self, now: datetime) -> list[DemoMessage]:
        out = []
        while self._closing:
            out += [self._update(i, "closed", now) for i in self._closing.popleft()]
        return out

    def tick(self, new_incidents: int) -> list[DemoMessage]:
        """Messages for one tick: closures of the incidents that arrived last tick, arrivals
        (with their dispatch events) of last tick's incidents, and ``new_incidents`` opened and
        dispatched now."""
        now = self._now()
        out = self._close_all(now)
        if self._arriving:
            out += self._arrive(self._arriving.popleft())
        fresh: list[_Incident] = []
        for _ in range(new_incidents):
            incident, msgs = self._incident(now)
            fresh.append(incident)
            out += msgs
        self._arriving.append(fresh)
        return out

    def drain(self) -> list[DemoMessage]:
        """Every remaining step, so that each incident ends closed."""
        out: list[DemoMessage] = []
        while self._arriving:
            out += self._arrive(self._arriving.popleft())
        return out + self._close_all(self._now())


def _count(progress: DemoProgress, msg: DemoMessage) -> None:
    if msg.subject.startswith("ionveil.dispatch.events."):
        org = msg.payload["org_id"]
        progress.dispatch_events += 1
        progress.events_by_org[org] = progress.events_by_org.get(org, 0) + 1
        if not msg.payload["sla_met"]:
            progress.misses[org] = progress.misses.get(org, 0) + 1
    else:
        progress.incident_updates += 1
        if msg.payload["status"] == "opened":
            progress.incidents += 1


async def _publish(js: JetStreamContext, msgs: list[DemoMessage], progress: DemoProgress) -> None:
    for start in range(0, len(msgs), 256):
        chunk = msgs[start : start + 256]
        await asyncio.gather(
            *(
                js.publish(m.subject, encode_payload(m.payload), headers={"Nats-Msg-Id": m.msg_id})
                for m in chunk
            )
        )
        for msg in chunk:
            _count(progress, msg)


async def publish_demo(
    js: JetStreamContext,
    traffic: DemoTraffic,
    *,
    rate: float,
    duration_s: float | None,
    interval_s: float = 0.5,
    on_progress: Callable[[DemoProgress], None] | None = None,
    stop: asyncio.Event | None = None,
) -> DemoProgress:
    """Publish ``rate`` new incidents per second until ``duration_s`` passes or ``stop`` is set.

    At the end every incident still in flight is completed (arrived, closed), so the counts
    are whole. Each message goes through JetStream with its ``Nats-Msg-Id`` and is acknowledged
    by the stream before it is counted.

    Raises:
        ValidationError: ``rate`` or ``interval_s`` is not positive.
    """
    if rate <= 0 or interval_s <= 0:
        raise ValidationError("rate/interval_s: must be positive")
    progress = DemoProgress()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    owed = 0.0
    next_tick = started
    while not stop.is_set():
        if duration_s is not None and loop.time() - started >= duration_s:
            break
        owed += rate * interval_s
        new = int(owed)
        owed -= new
        await _publish(js, traffic.tick(new), progress)
        if on_progress is not None:
            on_progress(progress)
        next_tick += interval_s
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, next_tick - loop.time()))
        except TimeoutError:
            continue
    await _publish(js, traffic.drain(), progress)
    if on_progress is not None:
        on_progress(progress)
    log.info(
        "demo_finished",
        incidents=progress.incidents,
        dispatch_events=progress.dispatch_events,
        incident_updates=progress.incident_updates,
    )
    return progress
