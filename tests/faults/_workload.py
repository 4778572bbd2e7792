"""A known workload and a publisher that keeps going through faults.

Events carry known ids and values so a test can check exact totals afterwards. The publisher
retries a publish that timed out or found no JetStream leader with the same ``Nats-Msg-Id``:
the stream's duplicate window stores it once however many attempts reached the server.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import nats.errors
from nats.js.api import PubAck
from nats.js.client import JetStreamContext
from nats.js.errors import APIError

from workers.codec import encode_payload

__all__ = [
    "PublishStats",
    "dispatch_events",
    "incident_lifecycle",
    "publish_reliably",
]

REGIONS = ("north", "south", "east", "west")
UNIT_TYPES = ("ambulance", "engine", "patrol")


@dataclass
class PublishStats:
    """What a publisher saw: stored messages, retries and server-reported duplicates."""

    published: int = 0
    retries: int = 0
    duplicates_reported: int = 0
    acks: dict[str, PubAck] = field(default_factory=dict)


async def publish_reliably(
    js: JetStreamContext,
    subject: str,
    payload: Any,
    msg_id: str,
    stats: PublishStats,
    *,
    timeout_s: float = 2.0,
    give_up_s: float = 90.0,
    raw: bytes | None = None,
) -> PubAck:
    """Publish with ``Nats-Msg-Id: msg_id`` until JetStream acknowledges it.

    Raises:
        TimeoutError: not acknowledged within ``give_up_s`` (the test fails: a lost event).
    """
    data = raw if raw is not None else encode_payload(payload)
    deadline = time.monotonic() + give_up_s
    while True:
        try:
            ack = await js.publish(
                subject, data, timeout=timeout_s, headers={"Nats-Msg-Id": msg_id}
            )
        except (nats.errors.Error, APIError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{msg_id} not acknowledged in {give_up_s}s: {exc!r}") from exc
            stats.retries += 1
            await asyncio.sleep(0.2)
            continue
        if ack.duplicate:
            stats.duplicates_reported += 1
        else:
            stats.published += 1
        stats.acks[msg_id] = ack
        return ack


def dispatch_events(
    org: str, count: int, *, start: datetime | None = None, prefix: str = "ev"
) -> list[dict[str, Any]]:
    """``count`` dispatch events with deterministic ids and values.

    Response times are ``1 + i % 20`` minutes; ``sla_met`` is false for every 7th event.
    """
    base = start or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    return [
        {
            "event_id": f"{prefix}-{org}-{i:06d}",
            "org_id": org,
            "dispatch_id": f"d-{org}-{i:06d}",
            "timestamp": (base + timedelta(seconds=i % 600)).isoformat(),
            "severity": 1 + i % 5,
            "response_time_minutes": float(1 + i % 20),
            "distance_km": float(i % 13) / 2,
            "region": REGIONS[i % len(REGIONS)],
            "unit_type": UNIT_TYPES[i % len(UNIT_TYPES)],
            "sla_met": i % 7 != 0,
        }
        for i in range(count)
    ]


def incident_lifecycle(
    org: str, count: int, breaches: int, *, now: datetime | None = None
) -> tuple[list[dict[str, Any]], set[str]]:
    """Incident messages for ``count`` incidents of which the first ``breaches`` breach.

    A breaching incident was dispatched at priority 5 (SLA 8 minutes) 30 minutes ago and never
    arrived; the others were dispatched 1 minute ago at priority 1 (SLA 120 minutes).

    Returns:
        ``(messages, breaching incident ids)``; each message is ``{incident_id, priority,
        status, timestamp, region}``.
    """
    at = now or datetime.now(UTC)
    messages: list[dict[str, Any]] = []
    breaching: set[str] = set()
    for i in range(count):
        incident_id = f"inc-{org}-{i:05d}"
        breach = i < breaches
        if breach:
            breaching.add(incident_id)
        dispatched = at - (timedelta(minutes=30) if breach else timedelta(minutes=1))
        priority = 5 if breach else 1
        region = REGIONS[i % len(REGIONS)]
        for status, when in (
            ("opened", dispatched - timedelta(seconds=30)),
            ("dispatched", dispatched),
        ):
            messages.append(
                {
                    "incident_id": incident_id,
                    "priority": priority,
                    "status": status,
                    "timestamp": when.isoformat(),
                    "region": region,
                }
            )
    return messages, breaching
