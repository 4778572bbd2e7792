"""The demo traffic generator: deterministic, complete lifecycles, the dashboard contract."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest

from ionveil.errors import ValidationError
from ionveil.models import SLA_BY_SEVERITY
from workers.codec import decode_payload, encode_payload
from workers.demo import DemoConfig, DemoMessage, DemoProgress, DemoTraffic

NOW = 1_800_000_000.0
EVENT_FIELDS = {
    "event_id",
    "org_id",
    "dispatch_id",
    "timestamp",
    "severity",
    "response_time_minutes",
    "distance_km",
    "region",
    "unit_type",
    "sla_met",
    "metadata",
}


def _run(config: DemoConfig, ticks: int = 20, per_tick: int = 10) -> list[DemoMessage]:
    traffic = DemoTraffic(config, clock=lambda: NOW)
    out: list[DemoMessage] = []
    for _ in range(ticks):
        out += traffic.tick(per_tick)
    return out + traffic.drain()


def _events(msgs: list[DemoMessage]) -> list[dict]:
    return [m.payload for m in msgs if m.subject.startswith("ionveil.dispatch.events.")]


def test_same_seed_same_messages_other_seed_other_messages() -> None:
    """A seed fixes every message, ids included; another seed changes them."""
    first = _run(DemoConfig(seed=3))
    assert first == _run(DemoConfig(seed=3))
    assert first != _run(DemoConfig(seed=4))


def test_every_incident_goes_through_its_whole_lifecycle_in_order() -> None:
    """Each incident is opened, dispatched, arrived and closed, in that order, once each."""
    msgs = _run(DemoConfig(orgs=("metro", "county", "harbor")))
    statuses: dict[str, list[str]] = {}
    for msg in msgs:
        if msg.subject.startswith("ionveil.incidents."):
            statuses.setdefault(msg.payload["incident_id"], []).append(msg.payload["status"])
    assert len(statuses) == 200
    assert all(s == ["opened", "dispatched", "arrived", "closed"] for s in statuses.values())
    assert len({m.msg_id for m in msgs}) == len(msgs)


def test_dispatch_events_follow_the_dashboard_contract() -> None:
    """Events carry the contract fields, valid values, and sla_met agrees with the SLA table."""
    events = _events(_run(DemoConfig()))
    assert len(events) == 200
    for event in events:
        assert set(event) == EVENT_FIELDS
        assert isinstance(event["timestamp"], datetime) and event["timestamp"].tzinfo
        assert 1 <= event["severity"] <= 5
        assert event["response_time_minutes"] > 0 and event["distance_km"] > 0
        met = event["response_time_minutes"] <= SLA_BY_SEVERITY[event["severity"]]
        assert event["sla_met"] is met
        assert {"lat", "lon"} <= set(event["metadata"])
    wire, _ = decode_payload(encode_payload(events[0]), None)
    assert isinstance(wire["timestamp"], str) and wire["timestamp"].endswith("Z")


def test_priorities_are_weighted_towards_three() -> None:
    """Priority 3 is the most common; every priority 1..5 occurs."""
    counts = Counter(e["severity"] for e in _events(_run(DemoConfig(), ticks=50)))
    assert set(counts) == {1, 2, 3, 4, 5}
    assert counts.most_common(1)[0][0] == 3


def test_miss_org_misses_most_of_its_slas() -> None:
    """The miss org's share of SLA misses is high, the others' low."""
    events = _events(_run(DemoConfig(orgs=("metro", "county"), miss_org="county"), ticks=40))
    share = {
        org: sum(not e["sla_met"] for e in events if e["org_id"] == org)
        / sum(e["org_id"] == org for e in events)
        for org in ("metro", "county")
    }
    assert share["county"] > 0.7 and share["metro"] < 0.15


def test_incident_times_are_in_the_past_and_consistent() -> None:
    """opened <= dispatched <= arrived <= now, and the dispatched-to-arrived gap is the response."""
    msgs = _run(DemoConfig(), ticks=3)
    times: dict[str, dict[str, datetime]] = {}
    for msg in msgs:
        if msg.subject.startswith("ionveil.incidents."):
            p = msg.payload
            times.setdefault(p["incident_id"], {})[p["status"]] = p["timestamp"]
    for event in _events(msgs):
        t = times[event["metadata"]["incident_id"]]
        assert t["opened"] <= t["dispatched"] <= t["arrived"] <= t["closed"]
        assert t["closed"].timestamp() <= NOW
        gap = (t["arrived"] - t["dispatched"]).total_seconds() / 60
        assert gap == pytest.approx(event["response_time_minutes"], abs=0.01)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"orgs": ()}, "orgs"),
        ({"orgs": ("a.b",)}, "orgs"),
        ({"miss_org": "nowhere"}, "miss_org"),
        ({"miss_rate": 1.5}, "miss_rate"),
    ],
)
def test_invalid_config_names_the_field(kwargs: dict, field: str) -> None:
    """A bad demo configuration is refused with the field named."""
    with pytest.raises(ValidationError, match=field):
        DemoConfig(**kwargs)


def test_progress_line_reports_counts_and_miss_shares() -> None:
    """The progress line shows events, updates and each org's miss share."""
    progress = DemoProgress(dispatch_events=10, incident_updates=40)
    progress.events_by_org = {"metro": 8, "county": 2}
    progress.misses = {"county": 2}
    line = progress.line()
    assert "10 dispatch events" in line and "40 incident updates" in line
    assert "county 100%" in line and "metro 0%" in line
