"""Hostile payloads for every stream subject a worker consumes and every API endpoint.

``TARGETS`` describes each consumed stream: the subject to publish to, a valid message, the
type of each field and which fields each consumer (durable prefix) requires. Strategies mutate
a valid message (a field of the wrong type, out of range, NaN/infinity, a negative or far
future time, an unknown severity, a huge string, deep nesting, a missing field) or replace it
whole (not a map, invalid MessagePack, invalid JSON). Each ``Bad`` says which consumers must
refuse it, so the test can check the dead-letter queue per consumer.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from workers.codec import CONTENT_TYPE_HEADER, CONTENT_TYPE_JSON, encode_payload

__all__ = [
    "ALL",
    "HOSTILE_VALUES",
    "JSON_HEADERS",
    "TARGETS",
    "WRONG",
    "Bad",
    "Target",
    "bad_messages",
    "bad_requests",
    "request_fields",
]

ALL = "*"
"""``Bad.fields`` value meaning the whole payload is bad (every consumer must refuse it)."""

_MISSING = object()
JSON_HEADERS = {CONTENT_TYPE_HEADER: CONTENT_TYPE_JSON}


@dataclass(frozen=True)
class Bad:
    """One hostile message: its bytes, headers, what was broken and how."""

    data: bytes
    headers: dict[str, str]
    fields: frozenset[str]
    how: str


@dataclass(frozen=True)
class Target:
    """A consumed stream subject: a valid message and each consumer's required fields."""

    stream: str
    subject: str
    valid: Callable[[str, int], dict[str, Any]]
    kinds: dict[str, str]
    required: dict[str, frozenset[str]]  # durable prefix -> fields it refuses when broken
    optional: frozenset[str] = frozenset()  # fields whose absence is fine for every consumer

    def refusers(self, bad: Bad) -> set[str]:
        """Durable prefixes that must dead-letter ``bad``."""
        if ALL in bad.fields:
            return set(self.required)
        return {c for c, fields in self.required.items() if fields & bad.fields}


def _recent(n: int) -> str:
    return (datetime.now(UTC) - timedelta(minutes=5, seconds=n % 60)).isoformat()


def _dispatch(org: str, n: int) -> dict[str, Any]:
    return {
        "event_id": f"{org}-ev-{n}",
        "org_id": org,
        "dispatch_id": f"{org}-d-{n}",
        "timestamp": _recent(n),
        "severity": 1 + n % 5,
        "response_time_minutes": float(1 + n % 9),
        "distance_km": 2.5,
        "region": "north",
        "unit_type": "ambulance",
        "sla_met": n % 3 != 0,
    }


def _incident(org: str, n: int) -> dict[str, Any]:
    return {
        "incident_id": f"{org}-inc-{n}",
        "priority": 1,
        "status": "opened",
        "timestamp": _recent(n),
        "region": "north",
    }


def _transition(org: str, n: int) -> dict[str, Any]:
    return {
        "from": "normal",
        "to": "watch",
        "timestamp": _recent(n),
        "reason": "failure burst",
        "sequence": n,
        "org_id": org,
    }


def _alert(org: str, n: int) -> dict[str, Any]:
    return {
        "alert_id": f"{org}-al-{n}",
        "org_id": org,
        "rule_id": "sla",
        "severity": "warning",
        "status": "active",
        "title": "SLA breach",
        "message": "late",
        "created_at": _recent(n),
        "updated_at": _recent(n),
    }


def _job(org: str, n: int) -> dict[str, Any]:
    return {
        "simulation_id": f"{org}-job-{n}",
        "scenario": {
            "name": f"s{n}",
            "policy_order": ["normal", "watch", "restricted"],
            "escalation_threshold": 3,
            "deescalation_thresholds": {"watch": 5, "restricted": 5},
        },
        "pattern": {"events": [[i * 10, i % 4 != 0] for i in range(12)]},
        "duration": 120,
    }


TARGETS: dict[str, Target] = {
    "DISPATCH": Target(
        "DISPATCH",
        "ionveil.dispatch.events.{org}",
        _dispatch,
        {
            "event_id": "id",
            "org_id": "id",
            "dispatch_id": "id",
            "timestamp": "time",
            "severity": "severity",
            "response_time_minutes": "float",
            "distance_km": "float",
            "region": "id",
            "unit_type": "id",
            "sla_met": "bool",
        },
        {
            "policy-engine": frozenset({"event_id", "org_id", "timestamp", "sla_met"}),
            "analytics-recorder": frozenset(
                {"event_id", "org_id", "timestamp", "severity", "response_time_minutes", "sla_met"}
            ),
            "dashboard-dispatch": frozenset(
                {
                    "event_id",
                    "org_id",
                    "timestamp",
                    "severity",
                    "response_time_minutes",
                    "distance_km",
                    "region",
                    "unit_type",
                    "sla_met",
                }
            ),
        },
    ),
    "INCIDENTS": Target(
        "INCIDENTS",
        "ionveil.incidents.{org}",
        _incident,
        {
            "incident_id": "id",
            "priority": "severity",
            "status": "status",
            "timestamp": "time",
            "region": "id",
        },
        {
            "alerts-incidents": frozenset({"incident_id", "priority", "status", "timestamp"}),
            "dashboard-incidents": frozenset({"incident_id", "status", "timestamp"}),
        },
    ),
    "POLICY": Target(
        "POLICY",
        "ionveil.policy.transitions.{org}",
        _transition,
        {"to": "id", "from": "id", "sequence": "int", "org_id": "id"},
        {"alerts-policy": frozenset({"to", "org_id", "sequence"})},
    ),
    "ALERTS": Target(
        "ALERTS",
        "ionveil.alerts.{org}.warning",
        _alert,
        {"alert_id": "id", "status": "status"},
        {"dashboard-alerts": frozenset({"alert_id", "status"})},
    ),
    "SIMJOBS": Target(
        "SIMJOBS",
        "ionveil.simulator.jobs",
        _job,
        {"scenario": "map", "pattern": "map", "duration": "int", "simulation_id": "id"},
        {"simulator-jobs": frozenset({"scenario", "pattern", "duration", "simulation_id"})},
        optional=frozenset({"duration", "simulation_id"}),
    ),
}

_NAN, _INF = math.nan, math.inf
_FAR_FUTURE = "9999-12-31T23:59:59Z"
WRONG: dict[str, list[Any]] = {
    "id": [123, 4.5, True, [], {}, "", "x" * 129, ["a"], {"$ne": None}],
    "severity": [0, 6, -1, 99, 2.5, "high", _NAN, _INF, [], "5x"],
    "float": [_NAN, _INF, -_INF, -1.0, "fast", [], {}],
    "time": [
        -5,
        "1900-01-01T00:00:00Z",
        _FAR_FUTURE,
        1e13,
        "yesterday",
        _NAN,
        _INF,
        [],
        {},
        "2026-13-45T99:00:00Z",
        (datetime.now(UTC) + timedelta(days=30)).isoformat(),  # within 1970..2100, beyond skew
    ],
    "bool": ["yes", "true", 2.5, [], {}, "no"],
    "status": ["exploded", "", 5, [], {}, "x" * 5000],
    "int": [_NAN, _INF, "many", [], {}, 2.5, 10**30],
    "map": [5, "x", [1, 2], True, _NAN],
}
_STRINGY = {"id", "status"}


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def _huge(chars: int) -> str:
    return "ä" * (chars // 2)  # two bytes each in UTF-8


def _encode(value: Any, as_json: bool) -> tuple[bytes, dict[str, str]]:
    if as_json:
        # NaN/Infinity become invalid JSON tokens; UTF-8 kept raw so huge strings stay < 1 MiB.
        return json.dumps(value, ensure_ascii=False).encode(), dict(JSON_HEADERS)
    return encode_payload(value), {}


@st.composite
def _field_bad(draw: st.DrawFn, target: Target, org: str) -> Bad:
    name = draw(st.sampled_from(sorted(target.kinds)))
    kind = target.kinds[name]
    required = name not in target.optional and any(name in f for f in target.required.values())
    choices = [st.sampled_from(WRONG[kind]).map(lambda v: (v, "wrong type/value"))]
    choices.append(st.integers(50, 400).map(lambda d: (_deep(d), "deep nesting")))
    if kind in _STRINGY:
        choices.append(st.integers(20_000, 600_000).map(lambda n: (_huge(n), "huge string")))
    if required:
        choices.append(st.just((_MISSING, "missing field")))
    value, how = draw(st.one_of(choices))
    payload = target.valid(org, draw(st.integers(0, 10**6)))
    if value is _MISSING:
        payload.pop(name)
    else:
        payload[name] = value
    data, headers = _encode(payload, draw(st.booleans()))
    shown = "" if value is _MISSING else f": {str(value)[:40]!r}"
    return Bad(data, headers, frozenset({name}), f"{how} in {name}{shown}")


def _not_a_map() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=50),
        st.lists(st.integers(), max_size=5),
        st.just([]),
        st.none(),
        st.booleans(),
        st.integers(50, 300).map(_deep),
    )


def _invalid_msgpack() -> st.SearchStrategy[bytes]:
    # 0xc1 is never used by MessagePack; a map header promising more entries than follow is
    # truncated; trailing bytes after a complete value are "extra data".
    return st.one_of(
        st.binary(max_size=64).map(lambda b: b"\xc1" + b),
        st.binary(max_size=8).map(lambda b: b"\x8f\xa1a" + b),
        st.just(b"\x81\xa1a\x01\x02"),
    )


def _invalid_json() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from([b"{", b"{'a': 1}", b'{"a": NaN}', b"[1,", b"\xff\xfe", b'{"a":1}}']),
        st.text(alphabet="{}[]:,\"'ab", min_size=1, max_size=30).map(str.encode).filter(_bad_json),
    )


def _bad_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return True
    return False


def bad_messages(target: Target, org: str) -> st.SearchStrategy[Bad]:
    """Hostile messages for ``target`` (published on ``org``'s subject)."""
    whole = st.one_of(
        _not_a_map().map(lambda v: Bad(encode_payload(v), {}, frozenset({ALL}), "not a map")),
        _invalid_msgpack().map(lambda b: Bad(b, {}, frozenset({ALL}), "invalid MessagePack")),
        _invalid_json().map(lambda b: Bad(b, dict(JSON_HEADERS), frozenset({ALL}), "bad JSON")),
    )
    return st.one_of(_field_bad(target, org), _field_bad(target, org), whole)


_FIELDS = re.compile(r"\{([^{}]*)\}")


def request_fields(schema: str) -> dict[str, bool]:
    """Field names of an endpoint's request schema (``subjects.yaml``) -> required?"""
    match = _FIELDS.search(schema)
    if not match:
        return {}
    out: dict[str, bool] = {}
    for part in match.group(1).split(","):
        name = part.split(":")[0].strip()
        if name:
            out[name.rstrip("?")] = not name.endswith("?")
    return out


HOSTILE_VALUES: list[Any] = [
    _NAN,
    _INF,
    -1,
    -(10**30),
    "x" * 200_000,
    [],
    {"$where": "1"},
    "'; DROP TABLE alerts; --",
    _FAR_FUTURE,
    True,
]


@st.composite
def _request_bad(draw: st.DrawFn, fields: dict[str, bool]) -> tuple[Bad, bool]:
    name = draw(st.sampled_from(sorted(fields)))
    value = draw(st.one_of(st.sampled_from(HOSTILE_VALUES), st.integers(50, 300).map(_deep)))
    data, headers = _encode({name: value}, draw(st.booleans()))
    bad = Bad(data, headers, frozenset({name}), f"{name}={str(value)[:30]!r}")
    # Only this field is sent: the request cannot be valid when another field is required, or
    # when this required field got a value that is not even a string.
    required = [n for n, req in fields.items() if req]
    must_fail = bool(required) and (
        any(n != name for n in required) or (fields[name] and not isinstance(value, str))
    )
    return bad, must_fail


def bad_requests(fields: dict[str, bool]) -> st.SearchStrategy[tuple[Bad, bool]]:
    """Hostile requests: ``(bad, must_fail)``; ``must_fail`` when the request cannot be valid
    (not a map, undecodable, a required field absent or not even a string)."""
    whole = st.one_of(
        _not_a_map()
        .filter(lambda v: v is not None)
        .map(lambda v: Bad(encode_payload(v), {}, frozenset({ALL}), "not a map")),
        _invalid_msgpack().map(lambda b: Bad(b, {}, frozenset({ALL}), "invalid MessagePack")),
        _invalid_json().map(lambda b: Bad(b, dict(JSON_HEADERS), frozenset({ALL}), "bad JSON")),
    ).map(lambda bad: (bad, True))
    if not fields:
        return whole
    return st.one_of(whole, _request_bad(fields))
