"""The live policy service over both stores: exactly-once outcomes, persisted state, outbox.

Each test runs against the PostgreSQL store (a fresh schema of the core database) and the
in-memory store, which promise the same semantics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from ionveil.errors import ValidationError
from services.policy import (
    InMemoryPolicyStore,
    LiveOutcome,
    LivePolicyService,
    PolicyStore,
    PostgresPolicyStore,
)

StoreFactory = Callable[[], PolicyStore]


@pytest.fixture(params=["postgres", "memory"])
async def make_store(request: pytest.FixtureRequest, core_pool: asyncpg.Pool) -> StoreFactory:
    """A factory of stores sharing one backing (so a 'restart' sees the same state)."""
    if request.param == "memory":
        store = InMemoryPolicyStore()
        return lambda: store
    return lambda: PostgresPolicyStore(core_pool)


async def _service(make_store: StoreFactory) -> LivePolicyService:
    service = LivePolicyService(make_store(), history_limit=5)
    await service.start()
    return service


def _outcomes(org: str, pattern: str, start_seq: int = 1, prefix: str = "e") -> list[LiveOutcome]:
    """Outcomes from a pattern like 'FFS' (F failure, S success), one second apart."""
    base = 1_700_000_000.0
    return [
        LiveOutcome(org, f"{prefix}{start_seq + i}", start_seq + i, base + start_seq + i, c == "S")
        for i, c in enumerate(pattern)
    ]


async def test_failures_escalate_and_commit_a_transition(make_store: StoreFactory) -> None:
    """Three failures move an org from normal to watch; the transition is in the outbox."""
    service = await _service(make_store)
    result = await service.apply(_outcomes("metro", "FFF"))
    assert result.applied == 3 and result.duplicates == 0
    assert [(t.org, t.payload["from"], t.payload["to"]) for t in result.transitions] == [
        ("metro", "normal", "watch")
    ]
    entry = result.transitions[0]
    assert entry.msg_id == "metro-3"
    assert entry.payload["org_id"] == "metro" and entry.payload["is_escalation"] is True
    assert entry.payload["timestamp"].startswith("2023-11-14T22:13:23")
    state = await service.state("metro")
    assert state["policy"] == "watch" and state["last_seq"] == 3
    assert state["transitions"][0]["to"] == "watch"
    assert [e.msg_id for e in await service.pending()] == ["metro-3"]
    await service.mark_published(await service.pending())
    assert await service.pending() == []


@pytest.mark.parametrize("split", [False, True])
async def test_an_event_delivered_twice_counts_once(make_store: StoreFactory, split: bool) -> None:
    """A repeated event id (same batch or a later redelivery) is skipped, not counted."""
    service = await _service(make_store)
    events = _outcomes("metro", "FF")
    if split:
        first = await service.apply(events)
        second = await service.apply(events)
        assert (first.applied, second.applied, second.duplicates) == (2, 0, 2)
    else:
        result = await service.apply(events + events)
        assert (result.applied, result.duplicates) == (2, 2)
    state = await service.state("metro")
    assert state["outcomes_recorded"] == 2 and state["failure_burst"] == 2
    assert state["policy"] == "normal"


async def test_state_survives_a_new_service_instance(make_store: StoreFactory) -> None:
    """A restarted service (new instance, same store) continues counting where it stopped."""
    first = await _service(make_store)
    await first.apply(_outcomes("metro", "FF"))
    second = await _service(make_store)
    result = await second.apply(_outcomes("metro", "F", start_seq=3))
    assert [t.payload["to"] for t in result.transitions] == ["watch"]
    assert (await second.state("metro"))["outcomes_recorded"] == 3


async def test_orgs_are_independent(make_store: StoreFactory) -> None:
    """One org's failures never move another org's engine."""
    service = await _service(make_store)
    batch = _outcomes("metro", "FFF") + _outcomes("county", "FSF", prefix="c")
    result = await service.apply(batch)
    assert {t.org for t in result.transitions} == {"metro"}
    assert (await service.state("county"))["policy"] == "normal"
    assert await service.store.orgs() == ["county", "metro"]


async def test_unknown_org_has_the_default_state(make_store: StoreFactory) -> None:
    """An org never seen reports the first policy, zero counters and the default config."""
    service = await _service(make_store)
    state = await service.state("nowhere")
    assert state["policy"] == "normal" and state["outcomes_recorded"] == 0
    assert state["config"]["escalation_threshold"] == 3
    assert state["transitions"] == [] and state["updated_at"] is None


async def test_configure_changes_thresholds_and_keeps_the_policy(make_store: StoreFactory) -> None:
    """A new escalation threshold applies at once; policy and outcome count are kept."""
    service = await _service(make_store)
    await service.apply(_outcomes("metro", "FFFF"))
    state = await service.configure("metro", {"escalation_threshold": 1})
    assert state["policy"] == "watch" and state["failure_burst"] == 0
    assert state["outcomes_recorded"] == 4 and state["config"]["escalation_threshold"] == 1
    result = await service.apply(_outcomes("metro", "F", start_seq=5))
    assert [t.payload["to"] for t in result.transitions] == ["restricted"]


async def test_configure_new_ladder_restarts_at_its_first_policy(make_store: StoreFactory) -> None:
    """A ladder without the current policy restarts the engine at the ladder's bottom."""
    service = await _service(make_store)
    await service.apply(_outcomes("metro", "FFF"))
    state = await service.configure("metro", {"policy_order": ["green", "red"]})
    assert state["policy"] == "green"
    assert state["config"] == {
        "policy_order": ["green", "red"],
        "escalation_threshold": 3,
        "deescalation_thresholds": {},
    }


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"escalation_threshold": 0}, "escalation_threshold"),
        ({"policy_order": ["only"]}, "policy_order"),
        ({"policy_order": "normal"}, "policy_order"),
        ({"deescalation_thresholds": {"nope": 2}}, "deescalation_thresholds"),
        ({"deescalation_thresholds": [1]}, "deescalation_thresholds"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_invalid_configuration_is_refused(
    make_store: StoreFactory, payload: dict[str, object], field: str
) -> None:
    """A bad configuration raises a ValidationError naming the field and changes nothing."""
    service = await _service(make_store)
    with pytest.raises(ValidationError, match=field):
        await service.configure("metro", payload)
    assert await service.store.load("metro") is None


@pytest.mark.parametrize("limit", [-1, 1001, "5", True])
async def test_state_limit_is_validated(make_store: StoreFactory, limit: object) -> None:
    """The state query's limit must be an integer in 0..1000."""
    service = await _service(make_store)
    with pytest.raises(ValidationError, match="limit"):
        await service.state("metro", limit)  # type: ignore[arg-type]


async def test_history_is_bounded_and_newest_first(make_store: StoreFactory) -> None:
    """The stored history keeps `history_limit` transitions; state lists newest first."""
    service = await _service(make_store)
    service_pattern = "FFF" + "S" * 10  # up to watch, back down to normal: 2 transitions
    for round_ in range(4):
        await service.apply(_outcomes("metro", service_pattern, start_seq=1 + 13 * round_))
    state = await service.state("metro", limit=100)
    assert len(state["transitions"]) == 5
    sequences = [t["sequence"] for t in state["transitions"]]
    assert sequences == sorted(sequences, reverse=True)
    assert len((await service.state("metro", limit=2))["transitions"]) == 2
    assert (await service.state("metro", limit=0))["transitions"] == []


async def test_prune_forgets_old_event_ids(make_store: StoreFactory) -> None:
    """Pruning drops applied ids older than the retention; recent ones stay de-duplicated."""
    service = await _service(make_store)
    await service.apply(_outcomes("metro", "S"))
    assert await service.prune(retention_s=3600) == 0
    assert await service.store.prune_applied(datetime.now(UTC) + timedelta(seconds=5)) == 1
    result = await service.apply(_outcomes("metro", "S"))
    assert result.applied == 1


async def test_empty_batch_changes_nothing(make_store: StoreFactory) -> None:
    """Applying nothing returns an empty result and stores nothing."""
    service = await _service(make_store)
    result = await service.apply([])
    assert (result.applied, result.duplicates, result.transitions) == (0, 0, ())
    assert await service.store.orgs() == []


async def test_concurrent_batches_on_one_org_lose_nothing(make_store: StoreFactory) -> None:
    """Two replicas applying interleaved batches for one org count every event once."""
    replicas = [await _service(make_store), await _service(make_store)]
    batches = [_outcomes("metro", "S" * 20, start_seq=1 + 20 * i) for i in range(10)]
    await asyncio.gather(
        *(replicas[i % 2].apply(batch) for i, batch in enumerate(batches)),
        *(replicas[(i + 1) % 2].apply(batch) for i, batch in enumerate(batches)),
    )
    state = await replicas[0].state("metro")
    assert state["outcomes_recorded"] == 200 and state["last_seq"] == 200
