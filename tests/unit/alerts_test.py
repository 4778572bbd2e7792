"""Unit tests of the alerting service (services/alerts), in-process: no servers needed."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ionveil.errors import NotFoundError, ValidationError
from services.alerts import (
    POLICY_RULE_ID,
    TRANSITIONS,
    Alert,
    AlertRule,
    AlertSeverity,
    AlertStatus,
    AlertSuppressionManager,
    EscalationLevel,
    EscalationManager,
    EscalationPolicy,
    InMemoryAlertStore,
    InProcessHotState,
    SLAMonitorService,
    notify,
    validate_rule,
)
from services.alerts._serde import alert_from_dict, alert_to_dict, policy_from_dict, rule_from_dict
from services.alerts.rules import incident_rule_fires
from services.alerts.store import NotificationClaim
from services.audit import AuditLogger, InMemoryAuditStore
from services.notifications.base import DeliveryResult, Notification
from tests.support import ManualClock

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class SpyChannels:
    """A channel registry stand-in that records sends; ``fail`` names channels that fail."""

    def __init__(self, fail: Sequence[str] = (), slow: Sequence[str] = ()) -> None:
        self.sent: list[tuple[str, Notification]] = []
        self.fail = set(fail)
        self.slow = set(slow)

    async def send(self, names: Sequence[str], notification: Notification) -> list[DeliveryResult]:
        out = []
        for name in names:
            if name in self.slow:
                await asyncio.sleep(0.5)
            self.sent.append((name, notification))
            ok = name not in self.fail
            out.append(
                DeliveryResult(name, ok, 3 if not ok else 1, None if ok else "refused", 0.01)
            )
        return out


def rule(
    rule_id: str = "breach", kind: str = "sla_breach", cfg: dict | None = None, **kw: object
) -> AlertRule:
    defaults: dict[str, object] = {
        "severity": AlertSeverity.CRITICAL,
        "notification_channels": ["email"],
    }
    defaults.update(kw)
    return AlertRule(rule_id, rule_id.title(), "", kind, cfg or {}, **defaults)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> ManualClock:
    """A fresh injected clock at T0."""
    return ManualClock(T0)


@pytest.fixture
def spy() -> SpyChannels:
    """A spy channel registry."""
    return SpyChannels()


@pytest.fixture
def monitor(clock: ManualClock, spy: SpyChannels) -> SLAMonitorService:
    """An in-process monitor with a breach and a 25 % warning rule."""
    m = SLAMonitorService(check_interval_seconds=0.05, clock=clock, channels=spy)
    m.add_rule(rule())
    m.add_rule(
        rule("warn", "sla_warning", {"sla_remaining_pct": 25}, severity=AlertSeverity.WARNING)
    )
    return m


async def _breach_alert(
    m: SLAMonitorService, clock: ManualClock, incident: str = "i1", org: str = "org1"
) -> Alert:
    alerts = await m.check_incident(incident, org, 5, clock() - timedelta(minutes=9))
    return next(a for a in alerts if a.rule_id == "breach")


# --------------------------------------------------------------------------- rules
@pytest.mark.parametrize(
    "candidate",
    [
        rule(),
        rule(cfg={"min_magnitude": 1.5, "priorities": [4, 5]}),
        rule("w", "sla_warning", {"sla_remaining_pct": 100}),
        rule("t", "threshold", {"metric": "open_breaches", "max": 0}),
        rule("c", "threshold", {"metric": "compliance_rate", "min": 0.9, "window_minutes": 30}),
        rule("p", "pattern", {"consecutive_breaches": 3, "scope": "region"}, org_id="org1"),
        rule(escalation_after_minutes=10, suppression_window_minutes=0, enabled=False),
    ],
)
def test_valid_rules_are_accepted(candidate: AlertRule) -> None:
    """Each condition type with a complete, in-range config validates."""
    validate_rule(candidate)


@pytest.mark.parametrize(
    ("candidate", "field"),
    [
        (rule(kind="nonsense"), "condition_type"),
        (rule("w", "sla_warning", {}), "threshold_config.sla_remaining_pct"),
        (rule("w", "sla_warning", {"sla_remaining_pct": 0}), "threshold_config.sla_remaining_pct"),
        (
            rule("w", "sla_warning", {"sla_remaining_pct": 150}),
            "threshold_config.sla_remaining_pct",
        ),
        (rule(cfg={"min_magnitude": 0.5}), "threshold_config.min_magnitude"),
        (rule(cfg={"priorities": [0, 9]}), "threshold_config.priorities"),
        (rule("t", "threshold", {"metric": "load"}), "threshold_config.metric"),
        (rule("t", "threshold", {"metric": "open_breaches", "max": -1}), "threshold_config.max"),
        (rule("t", "threshold", {"metric": "compliance_rate", "min": 2}), "threshold_config.min"),
        (
            rule("t", "threshold", {"metric": "compliance_rate", "min": 0.5, "window_minutes": -5}),
            "threshold_config.window_minutes",
        ),
        (rule("p", "pattern", {}), "threshold_config.consecutive_breaches"),
        (
            rule("p", "pattern", {"consecutive_breaches": 2, "scope": "planet"}),
            "threshold_config.scope",
        ),
        (rule(notification_channels=[]), "notification_channels"),
        (rule(escalation_after_minutes=-5), "escalation_after_minutes"),
        (rule(suppression_window_minutes=-1), "suppression_window_minutes"),
        (rule(""), "rule_id"),
        (rule(severity="loud"), "severity"),
        (rule(org_id=""), "org_id"),
    ],
)
def test_invalid_rules_are_rejected_naming_the_field(candidate: AlertRule, field: str) -> None:
    """An invalid rule raises ValidationError whose message names the offending field."""
    with pytest.raises(ValidationError) as info:
        validate_rule(candidate)
    assert any(p.startswith(field) for p in info.value.problems), info.value.problems


def test_add_rule_validates_and_get_rules_filters_by_org(monitor: SLAMonitorService) -> None:
    """add_rule refuses a bad rule; get_rules(org) returns every-org rules plus the org's own."""
    with pytest.raises(ValidationError):
        monitor.add_rule(rule(kind="bogus"))
    monitor.add_rule(rule("only-a", org_id="org-a"))
    assert [r.rule_id for r in monitor.get_rules("org-a")] == ["breach", "only-a", "warn"]
    assert [r.rule_id for r in monitor.get_rules("org-b")] == ["breach", "warn"]
    assert len(monitor.get_rules()) == 3
    assert monitor.remove_rule("only-a") is True
    assert monitor.remove_rule("only-a") is False


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"rule_id": "x"}, "name"),
        (
            {
                "rule_id": "x",
                "name": "n",
                "condition_type": "sla_breach",
                "severity": "loud",
                "notification_channels": ["e"],
            },
            "severity",
        ),
        ("not a map", "rule"),
    ],
)
def test_rule_from_dict_reports_bad_fields(data: object, field: str) -> None:
    """Parsing a rule from the wire names what is missing or wrong."""
    with pytest.raises(ValidationError) as info:
        rule_from_dict(data)
    assert field in str(info.value)


def test_wire_round_trips() -> None:
    """Alerts and policies survive to_dict/from_dict unchanged."""
    alert = Alert(
        "a",
        "r",
        "o",
        "i",
        AlertSeverity.INFO,
        AlertStatus.OPEN,
        "t",
        "d",
        T0,
        T0,
        resolved_at=T0,
        escalation_level=EscalationLevel.L3_MANAGER,
    )
    assert alert_from_dict(alert_to_dict(alert)) == alert
    with pytest.raises(ValidationError, match="levels"):
        policy_from_dict({"policy_id": "p", "name": "n"})
    with pytest.raises(ValidationError, match="levels"):
        policy_from_dict(
            {
                "policy_id": "p",
                "name": "n",
                "levels": [
                    {"level": 2, "timeout_minutes": 1, "channels": []},
                    {"level": 1, "timeout_minutes": 1, "channels": []},
                ],
            }
        )


# --------------------------------------------------------------------------- SLA thresholds
@pytest.mark.parametrize(
    ("kind", "cfg", "priority", "elapsed", "fires"),
    [
        ("sla_breach", {}, 5, 8.0, False),  # exactly on target is met
        ("sla_breach", {}, 5, 8.01, True),
        ("sla_breach", {}, 1, 119.0, False),
        ("sla_breach", {}, 1, 121.0, True),
        ("sla_breach", {"min_magnitude": 1.5}, 4, 22.0, False),
        ("sla_breach", {"min_magnitude": 1.5}, 4, 22.6, True),
        ("sla_breach", {"priorities": [5]}, 4, 100.0, False),
        ("sla_warning", {"sla_remaining_pct": 25}, 3, 22.4, False),  # 25.3 % left
        ("sla_warning", {"sla_remaining_pct": 25}, 3, 22.5, True),  # exactly 25 % left
        ("sla_warning", {"sla_remaining_pct": 25}, 3, 40.0, True),  # past target still warns
        ("sla_warning", {"sla_remaining_pct": 100}, 2, 0.0, True),
    ],
)
def test_incident_rule_thresholds(
    kind: str, cfg: dict, priority: int, elapsed: float, fires: bool
) -> None:
    """Breach fires strictly past target x min_magnitude; warning at or below remaining %."""
    from ionveil.models import SLA_BY_SEVERITY

    cfg = {"sla_remaining_pct": 25, **cfg} if kind == "sla_warning" else cfg
    assert (
        incident_rule_fires(rule("r", kind, cfg), priority, SLA_BY_SEVERITY[priority], elapsed)
        is fires
    )


async def test_check_incident_raises_with_sla_figures(
    monitor: SLAMonitorService, clock: ManualClock, spy: SpyChannels
) -> None:
    """A P5 incident 12 min after dispatch gets breach + warning alerts with SLA details."""
    alerts = await monitor.check_incident("i1", "org1", 5, clock() - timedelta(minutes=12))
    by_rule = {a.rule_id: a for a in alerts}
    assert set(by_rule) == {"breach", "warn"}
    breach = by_rule["breach"]
    assert breach.status is AlertStatus.OPEN and breach.severity is AlertSeverity.CRITICAL
    violation = breach.metadata["violation"]
    assert violation["sla_target_minutes"] == 8
    assert violation["breach_magnitude"] == pytest.approx(1.5)
    assert breach.metadata["remaining_pct"] == pytest.approx(-50.0)
    await monitor.notifier.drain()
    assert sorted(n.metadata["rule_id"] for _, n in spy.sent) == ["breach", "warn"]


async def test_check_incident_refuses_bad_input(monitor: SLAMonitorService) -> None:
    """An out-of-scale priority or a naive time is a ValidationError, not a crash."""
    with pytest.raises(ValidationError, match="priority"):
        await monitor.check_incident("i", "o", 9, T0)
    with pytest.raises(ValidationError, match="dispatch_time"):
        await monitor.check_incident("i", "o", 3, datetime(2025, 1, 1), T0)


# --------------------------------------------------------------------------- lifecycle
async def _alert_in(
    status: AlertStatus, clock: ManualClock
) -> tuple[SLAMonitorService, Alert, EscalationManager]:
    m = SLAMonitorService(clock=clock)
    m.add_rule(rule())
    manager = EscalationManager(m)
    if status is AlertStatus.SUPPRESSED:
        m.suppressions.add_suppression("org1", "breach", 60, "maintenance", "ops")
    alert = await _breach_alert(m, clock)
    if status is AlertStatus.ACKNOWLEDGED:
        alert = await m.acknowledge_alert(alert.alert_id, "ann")
    elif status is AlertStatus.ESCALATED:
        alert = await manager.escalate_alert(alert.alert_id, "manual")
    elif status is AlertStatus.RESOLVED:
        alert = await m.resolve_alert(alert.alert_id, "ann", "fixed")
    assert alert.status is status
    return m, alert, manager


_EXPECTED = {
    # (from status, action) -> resulting status, or None when illegal (ValueError)
    (AlertStatus.OPEN, "acknowledge"): AlertStatus.ACKNOWLEDGED,
    (AlertStatus.OPEN, "escalate"): AlertStatus.ESCALATED,
    (AlertStatus.OPEN, "resolve"): AlertStatus.RESOLVED,
    (AlertStatus.ACKNOWLEDGED, "acknowledge"): None,
    (AlertStatus.ACKNOWLEDGED, "escalate"): AlertStatus.ESCALATED,
    (AlertStatus.ACKNOWLEDGED, "resolve"): AlertStatus.RESOLVED,
    (AlertStatus.ESCALATED, "acknowledge"): AlertStatus.ACKNOWLEDGED,
    (AlertStatus.ESCALATED, "escalate"): AlertStatus.ESCALATED,
    (AlertStatus.ESCALATED, "resolve"): AlertStatus.RESOLVED,
    (AlertStatus.RESOLVED, "acknowledge"): None,
    (AlertStatus.RESOLVED, "escalate"): None,
    (AlertStatus.RESOLVED, "resolve"): None,
    (AlertStatus.SUPPRESSED, "acknowledge"): None,
    (AlertStatus.SUPPRESSED, "escalate"): None,
    (AlertStatus.SUPPRESSED, "resolve"): AlertStatus.RESOLVED,
}


def test_transition_table_matches_expectations() -> None:
    """The one transition table says exactly what the lifecycle tests expect."""
    for (status, action), target in _EXPECTED.items():
        sources, _ = TRANSITIONS[action]
        assert (status in sources) is (target is not None), (status, action)


@pytest.mark.parametrize(("start", "action"), list(_EXPECTED))
async def test_every_transition(start: AlertStatus, action: str, clock: ManualClock) -> None:
    """Every (status, action) pair: legal ones land in the right status and are audited,
    illegal ones raise ValueError and change nothing."""
    m, alert, manager = await _alert_in(start, clock)
    expected = _EXPECTED[(start, action)]
    calls = {
        "acknowledge": lambda: m.acknowledge_alert(alert.alert_id, "bob", "seen"),
        "escalate": lambda: manager.escalate_alert(alert.alert_id, "manual"),
        "resolve": lambda: m.resolve_alert(alert.alert_id, "bob", "done"),
    }
    if expected is None:
        with pytest.raises(ValueError):
            await calls[action]()
        assert (await m.get_alert(alert.alert_id)).seq == alert.seq
        return
    after = await calls[action]()
    assert after.status is expected
    assert after.seq == alert.seq + 1
    assert after.metadata["history"][-1]["to"] == expected.value
    records = await m.audit.for_entity("alert", alert.alert_id)
    assert records[-1].before["status"] == start.value
    assert records[-1].after["status"] == expected.value
    assert (await m.audit.verify_chain()).ok


@pytest.mark.parametrize("action", ["acknowledge", "resolve", "escalate", "get"])
async def test_unknown_alert_is_key_error(action: str, monitor: SLAMonitorService) -> None:
    """Every operation on an unknown alert id raises KeyError."""
    manager = EscalationManager(monitor)
    calls = {
        "acknowledge": lambda: monitor.acknowledge_alert("nope", "u"),
        "resolve": lambda: monitor.resolve_alert("nope", "u", "n"),
        "escalate": lambda: manager.escalate_alert("nope"),
        "get": lambda: monitor.get_alert("nope"),
    }
    with pytest.raises(KeyError):
        await calls[action]()


async def test_ack_and_resolve_record_who_and_when(
    monitor: SLAMonitorService, clock: ManualClock
) -> None:
    """Acknowledge and resolve fill the contract's fields; resolve needs a note."""
    alert = await _breach_alert(monitor, clock)
    clock.advance(1)
    acked = await monitor.acknowledge_alert(alert.alert_id, "ann", "on it")
    assert (acked.acknowledged_by, acked.acknowledged_at) == ("ann", clock())
    with pytest.raises(ValidationError, match="resolution_note"):
        await monitor.resolve_alert(alert.alert_id, "ann", "  ")
    with pytest.raises(ValidationError, match="user_id"):
        await monitor.acknowledge_alert(alert.alert_id, "")
    clock.advance(1)
    done = await monitor.resolve_alert(alert.alert_id, "bob", "unit arrived")
    assert (done.resolved_by, done.resolved_at) == ("bob", clock())
    assert [h["action"] for h in done.metadata["history"]] == ["opened", "acknowledge", "resolve"]


async def test_one_open_alert_per_rule_and_incident_and_cooldown(
    monitor: SLAMonitorService, clock: ManualClock
) -> None:
    """A second check does not duplicate; after resolve the rule cools down for its window."""
    dispatched = clock() - timedelta(minutes=9)
    first = await monitor.check_incident("i1", "org1", 5, dispatched)
    assert len(first) == 2
    assert await monitor.check_incident("i1", "org1", 5, dispatched) == []
    breach = next(a for a in first if a.rule_id == "breach")
    await monitor.resolve_alert(breach.alert_id, "ann", "handled")
    clock.advance(4.9)  # the default window is 5 minutes
    assert await monitor.check_incident("i1", "org1", 5, dispatched) == []
    clock.advance(0.2)
    again = await monitor.check_incident("i1", "org1", 5, dispatched)
    assert [a.rule_id for a in again] == ["breach"]
    assert len(await monitor.get_active_alerts("org1")) == 2


async def test_active_alert_filters(monitor: SLAMonitorService, clock: ManualClock) -> None:
    """get_active_alerts filters by severity and status and hides other orgs' alerts."""
    await monitor.check_incident("i1", "org1", 5, clock() - timedelta(minutes=9))
    await monitor.check_incident("i2", "org2", 5, clock() - timedelta(minutes=9))
    crit = await monitor.get_active_alerts("org1", severity=AlertSeverity.CRITICAL)
    assert [a.rule_id for a in crit] == ["breach"]
    await monitor.resolve_alert(crit[0].alert_id, "u", "n")
    assert [a.rule_id for a in await monitor.get_active_alerts("org1")] == ["warn"]
    resolved = await monitor.get_active_alerts("org1", status=AlertStatus.RESOLVED)
    assert [a.alert_id for a in resolved] == [crit[0].alert_id]
    assert all(a.org_id == "org2" for a in await monitor.get_active_alerts("org2"))


@pytest.mark.parametrize("status", ["arrived", "closed", "cancelled"])
async def test_incident_end_auto_resolves_as_system(
    status: str, monitor: SLAMonitorService, clock: ManualClock
) -> None:
    """When an incident arrives, closes or is cancelled its SLA alerts resolve as 'system'."""
    await monitor.on_incident_event("org1", "i1", 5, "dispatched", clock() - timedelta(minutes=9))
    raised = await monitor.run_cycle()
    assert len(raised) == 2 and len(monitor.incidents) == 1
    changed = await monitor.on_incident_event("org1", "i1", 5, status, clock())
    assert {a.status for a in changed} == {AlertStatus.RESOLVED}
    assert {a.resolved_by for a in changed} == {"system"}
    assert await monitor.get_active_alerts("org1") == []
    assert len(monitor.incidents) == 0
    assert await monitor.on_incident_event("org1", "i1", 5, status, clock()) == []


async def test_incident_event_validation(monitor: SLAMonitorService) -> None:
    """Bad incident events are ValidationErrors naming the field; 'opened' does nothing."""
    with pytest.raises(ValidationError, match="status"):
        await monitor.on_incident_event("o", "i", 3, "exploded", T0)
    with pytest.raises(ValidationError, match="timestamp"):
        await monitor.on_incident_event("o", "i", 3, "dispatched", "yesterday")
    with pytest.raises(ValidationError, match="priority"):
        await monitor.on_incident_event("o", "i", 0, "dispatched", T0)
    assert await monitor.on_incident_event("o", "i", 3, "opened", T0) == []


# --------------------------------------------------------------------------- batch cycle
async def test_cycle_raises_exactly_what_per_incident_checks_raise(clock: ManualClock) -> None:
    """The vectorised cycle and check_incident on each incident produce the same alerts."""
    rng = random.Random(7)
    incidents = [
        (
            f"org{rng.randint(1, 3)}",
            f"i{n}",
            rng.randint(1, 5),
            clock() - timedelta(minutes=rng.uniform(0, 150)),
        )
        for n in range(600)
    ]

    def build() -> SLAMonitorService:
        m = SLAMonitorService(clock=clock)
        m.add_rule(rule())
        m.add_rule(rule("warn", "sla_warning", {"sla_remaining_pct": 40, "priorities": [3, 4]}))
        m.add_rule(rule("org2-only", "sla_breach", {"min_magnitude": 1.2}, org_id="org2"))
        return m

    batch, single = build(), build()
    for org, iid, priority, dispatched in incidents:
        await batch.track_incident(org, iid, priority, dispatched)
    got = await batch.check_active_incidents()
    want = []
    for org, iid, priority, dispatched in incidents:
        want.extend(await single.check_incident(iid, org, priority, dispatched))
    key = sorted((a.org_id, a.rule_id, a.incident_id) for a in got)
    assert key == sorted((a.org_id, a.rule_id, a.incident_id) for a in want)
    assert len(key) > 100
    assert await batch.check_active_incidents() == []  # nothing new the second time


# --------------------------------------------------------------------------- org rules
async def test_threshold_open_breaches_raises_and_clears(clock: ManualClock) -> None:
    """open_breaches > max raises one org alert; it resolves itself once breaches clear."""
    m = SLAMonitorService(clock=clock)
    m.add_rule(rule("too-many", "threshold", {"metric": "open_breaches", "max": 1}))
    for n in range(2):
        await m.track_incident("org1", f"i{n}", 5, clock() - timedelta(minutes=10))
    raised = await m.run_cycle()
    assert [(a.rule_id, a.incident_id, a.metadata["measure"]) for a in raised] == [
        ("too-many", None, {"open_breaches": 2.0})
    ]
    assert await m.run_cycle() == []
    await m.on_incident_event("org1", "i0", 5, "arrived", clock())
    await m.run_cycle()
    (alert,) = await m.get_active_alerts("org1", status=AlertStatus.RESOLVED)
    assert alert.resolved_by == "system"


async def test_threshold_compliance_rate(clock: ManualClock) -> None:
    """A compliance rate over the window below 'min' raises an org alert."""
    m = SLAMonitorService(clock=clock)
    m.add_rule(rule("rate", "threshold", {"metric": "compliance_rate", "min": 0.75}))
    changed = []
    for n, minutes in enumerate([5, 5, 5, 20, 20]):  # P5 target 8 min: three met, two missed
        await m.track_incident("org1", f"i{n}", 5, clock() - timedelta(minutes=minutes))
        changed.append(await m.on_incident_event("org1", f"i{n}", 5, "arrived", clock()))
    assert [[a.rule_id for a in c] for c in changed] == [[], [], [], [], ["rate"]]
    assert changed[-1][0].metadata["measure"] == {"compliance_rate": 0.6}
    clock.advance(61)  # the arrivals leave the one-hour window: rate back to 1.0
    (done,) = await m.run_cycle()
    assert (done.status, done.resolved_by) == (AlertStatus.RESOLVED, "system")


@pytest.mark.parametrize("scope", ["org", "region"])
async def test_pattern_consecutive_breaches(scope: str, clock: ManualClock) -> None:
    """N breaches in a row (org-wide or per region) raise; a met SLA resolves it."""
    m = SLAMonitorService(clock=clock)
    m.add_rule(rule("streak", "pattern", {"consecutive_breaches": 3, "scope": scope}))
    for n in range(3):
        await m.track_incident("org1", f"i{n}", 5, clock() - timedelta(minutes=9), "north")
    if scope == "region":
        await m.track_incident("org1", "s0", 5, clock() - timedelta(minutes=9), "south")
    raised = await m.run_cycle()
    subjects = [a.metadata["subject_key"] for a in raised]
    assert subjects == (["org"] if scope == "org" else ["region:north"])
    await m.track_incident("org1", "ok", 5, clock() - timedelta(minutes=1), "north")
    changed = await m.on_incident_event("org1", "ok", 5, "arrived", clock())
    assert [a.status for a in changed if a.rule_id == "streak"] == [AlertStatus.RESOLVED]


async def test_check_incident_evaluates_pattern_on_new_breach(clock: ManualClock) -> None:
    """check_incident counts each incident's breach once towards a pattern rule."""
    m = SLAMonitorService(clock=clock)
    m.add_rule(rule("streak", "pattern", {"consecutive_breaches": 2}))
    late = clock() - timedelta(minutes=9)
    assert await m.check_incident("a", "org1", 5, late) == []
    assert await m.check_incident("a", "org1", 5, late) == []  # same incident: no new count
    assert [a.rule_id for a in await m.check_incident("b", "org1", 5, late)] == ["streak"]


# --------------------------------------------------------------------------- policy alignment
@pytest.mark.parametrize(
    ("policy", "severity"),
    [
        ("watch", AlertSeverity.WARNING),
        ("restricted", AlertSeverity.CRITICAL),
        ("halted", AlertSeverity.EMERGENCY),
        ("custom", AlertSeverity.WARNING),
    ],
)
async def test_policy_transition_severity_mapping(
    policy: str, severity: AlertSeverity, monitor: SLAMonitorService
) -> None:
    """A transition away from normal raises an org alert with the mapped severity."""
    alert = await monitor.on_policy_transition(
        "org1", {"from": "normal", "to": policy, "timestamp": T0.isoformat(), "sequence": 1}
    )
    assert alert is not None
    assert (alert.rule_id, alert.severity, alert.incident_id) == (POLICY_RULE_ID, severity, None)


async def test_policy_alert_follows_the_live_policy(
    monitor: SLAMonitorService, spy: SpyChannels
) -> None:
    """Escalating policy updates the alert's severity; back to normal resolves it; a stale
    (redelivered) transition is ignored."""
    monitor.default_channels = ["ops"]
    seq = iter(range(1, 10))

    async def move(frm: str, to: str) -> Alert | None:
        return await monitor.on_policy_transition(
            "org1", {"from": frm, "to": to, "timestamp": 1_700_000_000, "sequence": next(seq)}
        )

    assert await move("normal", "normal") is None
    first = await move("normal", "watch")
    second = await move("watch", "halted")
    assert second is not None and first is not None
    assert second.alert_id == first.alert_id and second.severity is AlertSeverity.EMERGENCY
    assert await monitor.on_policy_transition("org1", {"to": "watch", "sequence": 2}) is None
    done = await move("halted", "normal")
    assert done is not None and (done.status, done.resolved_by) == (AlertStatus.RESOLVED, "system")
    await monitor.notifier.drain()
    assert [n.metadata["change"] for _, n in spy.sent] == ["opened", "severity_raised"]
    with pytest.raises(ValidationError, match="to"):
        await monitor.on_policy_transition("org1", {"from": "normal"})


# --------------------------------------------------------------------------- suppression
@pytest.mark.parametrize(
    ("pattern", "rule_id", "suppressed"),
    [
        ("breach", "breach", True),
        ("breach", "breach-2", False),  # full match, not search
        ("sla-.*", "sla-p5", True),
        ("sla-.*", "xsla-p5", False),
        ("a|b", "b", True),
        ("(a+)+$", "a" * 50_000, True),
    ],
)
def test_suppression_fullmatch(pattern: str, rule_id: str, suppressed: bool) -> None:
    """rule_pattern must match the whole rule id (RE2 fullmatch)."""
    manager = AlertSuppressionManager()
    manager.add_suppression("org1", pattern, 10, "maintenance", "ops")
    assert manager.is_suppressed("org1", rule_id) is suppressed
    assert manager.is_suppressed("org2", rule_id) is False


def test_catastrophic_pattern_returns_promptly() -> None:
    """(a+)+$ against a long non-matching input is linear on RE2 (well under a second)."""
    manager = AlertSuppressionManager()
    manager.add_suppression("org1", "(a+)+$", 10, "r", "u")
    started = time.perf_counter()
    assert manager.is_suppressed("org1", "a" * 100_000 + "!") is False
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rule_pattern": "(?<=a)b"}, "rule_pattern"),  # look-behind: RE2 refuses
        ({"rule_pattern": r"(a)\1"}, "rule_pattern"),  # back-reference
        ({"rule_pattern": "x" * 600}, "rule_pattern"),
        ({"rule_pattern": ""}, "rule_pattern"),
        ({"duration_minutes": 0}, "duration_minutes"),
        ({"duration_minutes": 10**9}, "duration_minutes"),
        ({"reason": ""}, "reason"),
        ({"org_id": ""}, "org_id"),
    ],
)
def test_bad_suppressions_are_rejected(kwargs: dict, field: str) -> None:
    """A pattern RE2 rejects, or another bad field, is a ValidationError naming it."""
    args = {
        "org_id": "org1",
        "rule_pattern": "r.*",
        "duration_minutes": 5,
        "reason": "r",
        "created_by": "u",
        **kwargs,
    }
    with pytest.raises(ValidationError, match=field):
        AlertSuppressionManager().add_suppression(**args)


def test_suppression_expiry_and_early_removal(clock: ManualClock) -> None:
    """Suppressions expire on their own (injected clock) and can be removed early."""
    manager = AlertSuppressionManager(clock=clock)
    sid = manager.add_suppression("org1", "breach", 30, "maintenance", "ops")
    other = manager.add_suppression("org1", "warn", 10, "maintenance", "ops")
    assert [s["suppression_id"] for s in manager.get_active_suppressions("org1")] == [sid, other]
    assert manager.remove_suppression(other) is True
    assert manager.remove_suppression(other) is False
    clock.advance(29.9)
    assert manager.is_suppressed("org1", "breach")
    clock.advance(0.2)
    assert not manager.is_suppressed("org1", "breach")
    assert manager.remove_suppression(sid) is False  # expired
    assert manager.get_active_suppressions("org1") == []


async def test_suppressed_alert_is_recorded_not_notified(
    monitor: SLAMonitorService, clock: ManualClock, spy: SpyChannels
) -> None:
    """A raise under a matching suppression is stored as suppressed; no callback, no send."""
    seen: list[Alert] = []
    monitor._callback = seen.append
    sid = await monitor.suppressions.add("org1", "breach|warn", 15, "drill", "ops")
    alerts = await monitor.check_incident("i1", "org1", 5, clock() - timedelta(minutes=9))
    assert {a.status for a in alerts} == {AlertStatus.SUPPRESSED}
    await monitor.notifier.drain()
    assert seen == [] and spy.sent == []
    assert monitor.store.deliveries() == {}  # type: ignore[attr-defined]  # nothing owed
    assert await monitor.suppressions.remove(sid) is True
    records = await monitor.audit.query(action="alert.suppressed")
    assert len(records) == 2


# --------------------------------------------------------------------------- escalation
def _policy(**kw: object) -> EscalationPolicy:
    levels = [
        {"level": 1, "timeout_minutes": 10, "channels": ["email"]},
        {"level": 2, "timeout_minutes": 15, "channels": ["sms"]},
        {"level": 3, "timeout_minutes": 30, "channels": ["pager"]},
    ]
    return EscalationPolicy("p1", "default", levels, **kw)  # type: ignore[arg-type]


async def test_escalation_timing_with_injected_clock(
    monitor: SLAMonitorService, clock: ManualClock, spy: SpyChannels
) -> None:
    """Unacknowledged alerts climb one level when their level's timeout passes, never early,
    notified through the new level's channels; the chain stops at the top."""
    levels: list[EscalationLevel] = []
    manager = EscalationManager(monitor, lambda a, lvl: levels.append(lvl))
    manager.set_policy("org1", _policy())
    assert manager.get_policy("org1") is not None and manager.get_policy("x") is None
    alert = await _breach_alert(monitor, clock)
    await monitor.acknowledge_alert(
        next(a for a in await monitor.get_active_alerts("org1") if a.rule_id == "warn").alert_id,
        "ann",
    )
    clock.advance(9.9)
    assert await manager.check_escalations() == []
    clock.advance(0.1)
    (up,) = await manager.check_escalations()
    assert (up.alert_id, up.escalation_level, up.status) == (
        alert.alert_id,
        EscalationLevel.L2_SUPERVISOR,
        AlertStatus.ESCALATED,
    )
    assert await manager.check_escalations() == []  # never twice
    clock.advance(15)
    (up,) = await manager.check_escalations()
    assert up.escalation_level is EscalationLevel.L3_MANAGER
    clock.advance(120)
    assert await manager.check_escalations() == []  # top of the chain, no repeat configured
    assert levels == [EscalationLevel.L2_SUPERVISOR, EscalationLevel.L3_MANAGER]
    assert [(h["from_level"], h["to_level"]) for h in up.escalation_history] == [(1, 2), (2, 3)]
    with pytest.raises(ValueError, match="top"):
        await manager.escalate_alert(alert.alert_id)
    await monitor.notifier.drain()
    escalations = [
        (c, n.metadata["escalation_level"])
        for c, n in spy.sent
        if n.metadata["change"] == "escalated"
    ]
    assert escalations == [("sms", 2), ("pager", 3)]


async def test_repeat_and_max_escalations(monitor: SLAMonitorService, clock: ManualClock) -> None:
    """At the top level the alert is re-notified every repeat_after_minutes, up to
    max_escalations automatic steps in all."""
    manager = EscalationManager(monitor)
    single = EscalationPolicy(
        "p",
        "one level",
        [{"level": 1, "timeout_minutes": 5, "channels": ["email"]}],
        repeat_after_minutes=10,
        max_escalations=2,
    )
    manager.set_policy("org1", single)
    await _breach_alert(monitor, clock)
    steps = []
    for _ in range(5):
        clock.advance(10)
        steps.extend(await manager.check_escalations())
    assert [h["action"] for h in steps[-1].escalation_history] == ["repeat", "repeat"]
    assert len({a.rule_id for a in steps}) == 2 and len(steps) == 4  # both alerts, twice each
    assert steps[-1].status is AlertStatus.OPEN


async def test_rule_timed_escalation_without_policy(clock: ManualClock) -> None:
    """Without an org policy the rule's escalation_after_minutes times each level."""
    m = SLAMonitorService(clock=clock)
    m.add_rule(rule(escalation_after_minutes=5))
    manager = EscalationManager(m)
    await _breach_alert(m, clock)
    clock.advance(5)
    (up,) = await manager.check_escalations()
    assert up.escalation_level is EscalationLevel.L2_SUPERVISOR
    await m.acknowledge_alert(up.alert_id, "ann")
    clock.advance(60)
    assert await manager.check_escalations() == []  # acknowledged: no automatic escalation
    up = await manager.escalate_alert(up.alert_id, "needs a manager", actor="ann")
    assert up.escalation_level is EscalationLevel.L3_MANAGER
    assert up.escalation_history[-1]["automatic"] is False


async def test_policy_alert_channels_follow_org_policy(
    monitor: SLAMonitorService, spy: SpyChannels
) -> None:
    """An org-level policy alert is sent to the org policy's first-level channels."""
    manager = EscalationManager(monitor)
    manager.set_policy("org1", _policy())
    await monitor.on_policy_transition("org1", {"from": "normal", "to": "restricted"})
    await monitor.notifier.drain()
    assert [c for c, _ in spy.sent] == ["email"]


# --------------------------------------------------------------------------- notification
async def test_failing_or_slow_channel_blocks_nothing_and_is_audited(clock: ManualClock) -> None:
    """A failing channel and a slow one neither block the monitor nor each other; every
    delivery outcome is in the audit trail; the same change is never sent twice."""
    spy = SpyChannels(fail=["broken"], slow=["slow"])
    m = SLAMonitorService(clock=clock, channels=spy)
    m.add_rule(rule(notification_channels=["broken", "slow", "email"]))
    started = time.perf_counter()
    alert = await _breach_alert(m, clock)
    assert time.perf_counter() - started < 0.4  # did not wait for the slow channel
    assert m.notifier.pending == 3
    await m.notifier.drain()
    outcomes = {
        r.after["channel"]: (r.action, r.after["ok"])
        for r in await m.audit.for_entity("alert", alert.alert_id)
        if r.action.startswith("notification.")
    }
    assert outcomes == {
        "broken": ("notification.failed", False),
        "slow": ("notification.sent", True),
        "email": ("notification.sent", True),
    }
    m.notifier.dispatch(alert, ["email"], "opened")  # a repeat of the same change
    await m.notifier.drain()
    assert [c for c, _ in spy.sent].count("email") == 1
    assert (await m.audit.verify_chain()).ok


async def test_callback_errors_do_not_break_the_monitor(clock: ManualClock) -> None:
    """An exception in the seed's notification_callback is logged, the alert still raised."""

    def boom(alert: Alert) -> None:
        raise RuntimeError("callback bug")

    m = SLAMonitorService(notification_callback=boom, clock=clock)
    m.add_rule(rule())
    assert len(await m.check_incident("i", "o", 5, clock() - timedelta(minutes=9))) == 1


# --------------------------------------------------------------------------- loop, hot state
async def test_bare_constructor_and_background_loop() -> None:
    """The seed's bare constructor works; start() runs cycles until stop()."""
    m = SLAMonitorService(check_interval_seconds=0.01)
    m.add_rule(rule())
    seen = asyncio.Event()
    m._callback = lambda alert: seen.set()
    await m.track_incident("org1", "i1", 5, datetime.now(UTC) - timedelta(minutes=30))
    await m.start()
    await m.start()  # idempotent
    await asyncio.wait_for(seen.wait(), 5)
    await m.stop()
    assert m._task is None
    with pytest.raises(ValidationError):
        SLAMonitorService(check_interval_seconds=0)


async def test_in_process_hot_state() -> None:
    """The in-process hot state keeps deadlines and records like Redis would."""
    hot = InProcessHotState()
    assert await hot.get_deadline("k") is None
    await hot.set_deadline("k", 123.5, ttl_s=60)
    assert await hot.get_deadline("k") == 123.5
    await hot.put_record("ns", "a", {"x": 1}, 60)
    assert await hot.records("ns") == {"a": {"x": 1}}
    assert await hot.drop_record("ns", "a") is True
    assert await hot.drop_record("ns", "a") is False


async def test_not_found_error_is_key_error(monitor: SLAMonitorService) -> None:
    """The contract's KeyError is an IonVeil NotFoundError (404 on the API)."""
    with pytest.raises(NotFoundError):
        await monitor.get_alert("")


# --------------------------------------------------------------------------- delivery (in-process)
async def test_in_process_outbox_publishes_each_change_once(clock: ManualClock) -> None:
    """A publisher that fails leaves every change queued (lag_s reports it); once it works, a
    flush publishes each queued change once, and later changes go straight out."""
    published: list[tuple[str, int]] = []
    failing = True

    async def publish(alert: Alert) -> None:
        if failing:
            raise ConnectionError("broker down")
        published.append((alert.alert_id, alert.seq))

    m = SLAMonitorService(clock=clock, publisher=publish)
    m.add_rule(rule())
    alert = await _breach_alert(m, clock)
    await m.acknowledge_alert(alert.alert_id, "ann")
    assert published == [] and m.outbox.failing_since is not None
    assert await m.flush_outbox() == 0
    assert (await m.outbox.lag_s() or 0.0) >= 0.0
    failing = False
    assert await m.flush_outbox(min_age_s=3600) == 0  # too young for a periodic flush
    assert await m.flush_outbox() == 2 and await m.flush_outbox() == 0
    await m.resolve_alert(alert.alert_id, "ann", "done")
    assert published == [(alert.alert_id, 1), (alert.alert_id, 2), (alert.alert_id, 3)]
    assert await m.outbox.lag_s() is None and m.outbox.failing_since is None
    bare = SLAMonitorService(clock=clock)
    assert not bare.outbox.enabled and await bare.flush_outbox() == 0
    assert await bare.outbox.lag_s() is None


async def test_in_process_claims_are_leased_and_retried(clock: ManualClock) -> None:
    """In one process too: a claim without an outcome is taken over after its lease, an outcome
    under a superseded claim token is not recorded, and a failed send is retried until the
    back-off list is used up."""
    spy = SpyChannels(fail=["broken"])
    m = SLAMonitorService(clock=clock, channels=spy)
    m.notifier.lease_s = 0.0
    m.notifier.retry_backoff_s = (0.0,)
    m.add_rule(rule(notification_channels=["broken"]))
    alert = await _breach_alert(m, clock)
    store = m.store
    assert await store.claim_notification(alert, "ops", "opened", "gone") is not None
    assert await store.claim_notification(alert, "ops", "opened", "again") is None
    (stale,) = [
        c for c in await store.reclaim_notifications("x", lease_s=0.0) if c.channel == "ops"
    ]
    assert [c.channel for c in await store.reclaim_notifications("y", lease_s=0.0)] == ["ops"]
    assert not await store.record_delivery(
        stale, {"ok": True}, m._change_record("x", "t"), retry_in_s=None
    )
    await m.notifier.drain()
    await m.run_cycle()  # the sweep re-sends the failed 'broken' once more, then gives up
    await m.notifier.drain()
    await m.run_cycle()
    await m.notifier.drain()
    assert sorted(c for c, _ in spy.sent) == ["broken", "broken", "ops"]
    states = store.deliveries()  # type: ignore[attr-defined]
    assert states[(alert.alert_id, 1, "broken")]["rounds"] == 2
    assert states[(alert.alert_id, 1, "broken")]["retry_at"] is None


async def test_in_process_store_round_trips(clock: ManualClock) -> None:
    """The in-memory store keeps rules, policies, suppressions and incidents like PostgreSQL."""
    m = SLAMonitorService(clock=clock)
    await m.save_rule(rule())
    assert [r.rule_id for r in await m.store.load_rules()] == ["breach"]
    assert await m.delete_rule("breach") is True and await m.delete_rule("breach") is False
    manager = EscalationManager(m)
    await manager.save_policy("org1", _policy())
    assert list(await m.store.load_policies()) == ["org1"]
    record = {"suppression_id": "s1", "org_id": "org1", "expires_at": clock().timestamp() + 60}
    await m.store.save_suppression(record, m._change_record("ops", "suppression.added"))
    assert await m.store.load_suppressions(clock()) == [record]
    change = m._change_record("ops", "suppression.removed")
    assert await m.store.delete_suppression("s1", change) is True
    assert await m.store.delete_suppression("s1", change) is False
    await m.track_incident("org1", "i1", 5, clock())
    await m.store.delete_incident(("org1", "i1"))
    assert await m.store.load_incidents() == []
    assert await m.store.prune_outcomes(0.0) == 0
    assert await m.store.claim_policy_seq("org1", 2) and not await m.store.claim_policy_seq(
        "org1", 2
    )


# --------------------------------------------------------------------------- notification intents
class _Unreachable(InMemoryAlertStore):
    """The in-memory store whose next ``claims`` claims and ``records`` outcome records fail
    as if its database were away."""

    def __init__(self, *, claims: int = 0, records: int = 0) -> None:
        super().__init__(AuditLogger(InMemoryAuditStore()), outbox=False)
        self.fail = {"claims": claims, "records": records}

    def _maybe_fail(self, what: str) -> None:
        if self.fail[what] > 0:
            self.fail[what] -= 1
            raise OSError("connection refused")

    async def claim_notification(
        self, alert: Alert, channel: str, kind: str, claimant: str
    ) -> NotificationClaim | None:
        self._maybe_fail("claims")
        return await super().claim_notification(alert, channel, kind, claimant)

    async def record_delivery(self, *args: Any, **kwargs: Any) -> bool:
        self._maybe_fail("records")
        return await super().record_delivery(*args, **kwargs)


class _Log:
    """Records what the notifier logs: (event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def warning(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))

    info = error = warning


async def _breach_on(
    store: _Unreachable,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    backoff_s: tuple[float, float] = (0.01, 0.02),
) -> tuple[SLAMonitorService, SpyChannels, _Log, Alert]:
    """A monitor on ``store`` with a spy channel and a captured log, and one breach alert."""
    logged = _Log()
    monkeypatch.setattr(notify, "log", logged)
    spy = SpyChannels()
    m = SLAMonitorService(clock=clock, channels=spy, store=store)
    m.notifier.claim_backoff_s = backoff_s
    m.add_rule(rule())
    return m, spy, logged, await _breach_alert(m, clock)


async def test_claim_is_retried_while_the_store_is_unreachable(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim failing with a database error is retried with doubling, capped back-off (each
    failure logged with the alert id), then the notification is sent once."""
    m, spy, logged, alert = await _breach_on(_Unreachable(claims=3), clock, monkeypatch)
    async with asyncio.timeout(5):
        while not spy.sent:
            await asyncio.sleep(0.01)
    await m.notifier.drain()
    failed = [f for e, f in logged.events if e == "notification_claim_failed"]
    assert [(f["alert_id"], f["attempt"], f["retry_in_s"]) for f in failed] == [
        (alert.alert_id, 1, 0.01),
        (alert.alert_id, 2, 0.02),
        (alert.alert_id, 3, 0.02),
    ]
    assert [c for c, _ in spy.sent] == ["email"]


async def test_outcome_record_is_retried_so_the_send_is_not_repeated(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sent notification whose outcome cannot be recorded (database away) has the record
    retried, not the send: one send, then the outcome is stored and nothing is left due."""
    store = _Unreachable(records=2)
    m, spy, logged, alert = await _breach_on(store, clock, monkeypatch)
    async with asyncio.timeout(5):
        while store.fail["records"] or m.notifier.pending:
            await asyncio.sleep(0.01)
    await m.notifier.drain()
    failed = [f["attempt"] for e, f in logged.events if e == "notification_record_failed"]
    assert failed == [1, 2]
    assert [c for c, _ in spy.sent] == ["email"]
    clock.advance(3600)
    assert await m.notifier.sweep() == 0  # recorded: nothing to re-send
    (row,) = store.deliveries().values()  # type: ignore[attr-defined]
    assert row["ok"] is True, (alert.alert_id, row)


async def test_drain_stops_claim_retries_and_a_sweep_sends_the_intent(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``drain`` ends a claim's retries at once (not after the back-off); the intent stays
    owed, and once the store answers again a sweep past the grace sends it, once."""
    store = _Unreachable(claims=1_000)
    m, spy, logged, alert = await _breach_on(store, clock, monkeypatch, (30.0, 30.0))
    await asyncio.sleep(0.01)  # the first claim fails; the retry waits 30 s
    started = time.perf_counter()
    await m.notifier.drain()
    assert time.perf_counter() - started < 1.0 and m.notifier.pending == 0
    assert [e for e, _ in logged.events] == [
        "notification_claim_failed",
        "notification_left_to_sweep",
    ]
    store.fail["claims"] = 0
    assert await m.notifier.sweep() == 0  # within the grace: left to the dispatcher
    m.notifier.intent_grace_s = 0.0
    assert await m.notifier.sweep() == 1
    await m.notifier.drain()
    assert await m.notifier.sweep() == 0
    assert [(c, n.key) for c, n in spy.sent] == [("email", f"{alert.alert_id}:1:email")]
    (state,) = store.deliveries().values()
    assert (state["ok"], state["rounds"], state["claimed_by"]) == (True, 1, m.notifier.replica_id)


async def test_every_notified_change_is_owed_with_the_change(
    monitor: SLAMonitorService,
    clock: ManualClock,
    spy: SpyChannels,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Raises, escalations and policy severity raises store their intents with the change (on
    the channels decided before it); other changes owe nothing; with no dispatch at all
    (the process died after the commit) a sweep sends each once."""
    monkeypatch.setattr(monitor.notifier, "dispatch", lambda *args: None)
    manager = EscalationManager(monitor)
    manager.set_policy("org1", _policy())
    alert = await _breach_alert(monitor, clock)
    await manager.escalate_alert(alert.alert_id, "by hand", actor="ann")
    await monitor.acknowledge_alert(alert.alert_id, "ann")
    for seq, (frm, to) in enumerate(
        [("normal", "watch"), ("watch", "halted"), ("halted", "normal")]
    ):
        await monitor.on_policy_transition("org1", {"from": frm, "to": to, "sequence": seq})
    owed = monitor.store.deliveries()  # type: ignore[attr-defined]
    rule_of = {
        a.alert_id: a.rule_id for a in await monitor.store.list_alerts(None, active_only=False)
    }
    assert sorted((rule_of[k[0]], k[1], k[2], v["kind"]) for k, v in owed.items()) == [
        ("breach", 1, "email", "opened"),
        ("breach", 2, "sms", "escalated"),
        (POLICY_RULE_ID, 1, "email", "opened"),
        (POLICY_RULE_ID, 2, "email", "severity_raised"),
        ("warn", 1, "email", "opened"),
    ]
    assert {v["claimed_by"] for v in owed.values()} == {None}
    monitor.notifier.intent_grace_s = 0.0
    assert await monitor.notifier.sweep() == 5
    await monitor.notifier.drain()
    assert await monitor.notifier.sweep() == 0
    assert sorted(n.metadata["change"] for _, n in spy.sent) == [
        "escalated",
        "opened",
        "opened",
        "opened",
        "severity_raised",
    ]
    assert monitor.notifier.owed("opened", []) is None
    assert SLAMonitorService(clock=clock).notifier.owed("opened", ["email"]) is None
