"""Drive a sandboxed ``PolicyEngine`` through a pattern and measure what happened.

This is the simulator's inner loop, kept free of registry and threading concerns so it can run
in a worker process as well as in a thread. Definitions (they are what the results mean):

* **Attribution**: event ``k`` (1-based, in time order) is processed under the policy in force
  before it; a transition with ``sequence == k`` was caused by event ``k`` and applies from
  event ``k + 1`` on. Equal offsets are therefore never ambiguous.
* **time_in_each_policy**: virtual seconds from offset 0 to ``duration_seconds``, split at the
  transition timestamps; it sums to ``duration_seconds`` exactly (to the last processed offset
  when the run was cancelled).
* **sla_compliance_rate**: ``(S1 + (1 - c) * Sr + w * Fr) / processed`` in [0, 1]. A success is
  a met SLA, a failure a missed one. ``S1`` counts successes under the first (least restrictive)
  policy; ``Sr`` and ``Fr`` count successes and failures while any other (restrictive) policy
  is in force. A restrictive policy's protective measures absorb part of a failure (mitigation
  weight ``w``, default 0.5) but cost part of a success (restriction cost ``c``, default 0.1:
  restrictions delay or shed some lower-priority work). Failures under the first policy count
  0. So restriction pays when the failure rate is above ``c / (w + c)`` (1/6 by default): a
  policy that escalates promptly on bursts and de-escalates promptly after them scores best,
  one stuck in a restrictive policy or one that never escalates scores worse. 1.0 when nothing
  was processed.
* **failure burst / detection delay**: a burst is a maximal run of at least
  ``burst_min_failures`` consecutive failures (in event order); its onset is the offset of its
  first failure. It is detected by the first escalation caused by one of its failures, or at
  onset when the engine is already at the top policy; the delay is detection offset minus
  onset. An undetected burst counts the rest of the simulated time (``end - onset``).
* **flap**: an escalation reversed by the matching de-escalation within ``flap_window_s``.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from ionveil.policy import PolicyEngine

__all__ = [
    "DEFAULT_BURST_MIN_FAILURES",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_FLAP_WINDOW_S",
    "DEFAULT_MITIGATION_WEIGHT",
    "DEFAULT_RESTRICTION_COST",
    "RunOutcome",
    "count_flaps",
    "execute",
]

DEFAULT_CHUNK_SIZE = 65_536
DEFAULT_MITIGATION_WEIGHT = 0.5
DEFAULT_RESTRICTION_COST = 0.1
DEFAULT_BURST_MIN_FAILURES = 3
DEFAULT_FLAP_WINDOW_S = 300.0

Progress = Callable[[int, int], None]
_first = itemgetter(0)
_second = itemgetter(1)


@dataclass
class RunOutcome:
    """Everything one run produced, before it is wrapped in a ``SimulationResult``."""

    policy_transitions: list[dict[str, Any]]
    final_policy: str
    total_escalations: int
    total_deescalations: int
    time_in_each_policy: dict[str, float]
    sla_compliance_rate: float
    cancelled: bool
    metrics: dict[str, Any] = field(default_factory=dict)


def count_flaps(transitions: Sequence[Mapping[str, Any]], window_s: float) -> int:
    """Escalations undone by the matching de-escalation within ``window_s`` seconds.

    The ladder moves one level at a time, so each de-escalation reverses the most recent
    escalation not yet reversed (a stack).
    """
    open_escalations: list[float] = []
    flaps = 0
    for t in transitions:
        if str(t["reason"]).startswith("escalat"):
            open_escalations.append(float(t["timestamp"]))
        elif open_escalations and (float(t["timestamp"]) - open_escalations.pop() <= window_s):
            flaps += 1
    return flaps


def _prepare(events: Sequence[tuple[int, bool]], duration_seconds: int) -> tuple[list, int]:
    """Events in time order (stable) and cut at ``duration_seconds``; and how many were cut."""
    offsets = list(map(_first, events))
    ordered = list(events)
    if offsets != sorted(offsets):
        ordered.sort(key=_first)
        offsets.sort()
    cut = bisect_right(offsets, duration_seconds)
    return ordered[:cut], len(ordered) - cut


def execute(
    order: Sequence[str],
    escalation_threshold: int,
    deescalation_thresholds: Mapping[str, int],
    events: Sequence[tuple[int, bool]],
    duration_seconds: int,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    cancelled: Callable[[], bool] = lambda: False,
    progress: Progress | None = None,
    mitigation_weight: float = DEFAULT_MITIGATION_WEIGHT,
    restriction_cost: float = DEFAULT_RESTRICTION_COST,
    burst_min_failures: int = DEFAULT_BURST_MIN_FAILURES,
    flap_window_s: float = DEFAULT_FLAP_WINDOW_S,
) -> RunOutcome:
    """Feed ``events`` to a fresh engine in chunks and compute the results (see module doc).

    ``cancelled`` is polled before every chunk and once after the last; ``progress`` is called
    with ``(events_done, events_total)`` after every chunk.
    """
    processed, ignored = _prepare(events, duration_seconds)
    total = len(processed)
    engine = PolicyEngine(
        list(order),
        escalation_threshold,
        dict(deescalation_thresholds),
        clock=lambda: 0.0,
        history_limit=1,
    )
    moved = []
    done = 0
    stopped = False
    while done < total:
        if cancelled():
            stopped = True
            break
        moved.extend(engine.record_many(processed[done : done + chunk_size]))
        done = min(total, done + chunk_size)
        if progress is not None:
            progress(done, total)
    if not stopped and cancelled():
        stopped = True
    end = duration_seconds
    if stopped:
        processed = processed[:done]
        end = processed[-1][0] if processed else 0
    return _measure(
        list(order),
        moved,
        processed,
        end,
        ignored=ignored + (total - done),
        cancelled=stopped,
        mitigation_weight=mitigation_weight,
        restriction_cost=restriction_cost,
        burst_min_failures=burst_min_failures,
        flap_window_s=flap_window_s,
    )


def _measure(
    order: list[str],
    moved: list,
    processed: list,
    end: int,
    *,
    ignored: int,
    cancelled: bool,
    mitigation_weight: float,
    restriction_cost: float,
    burst_min_failures: int,
    flap_window_s: float,
) -> RunOutcome:
    index_of = {name: i for i, name in enumerate(order)}
    transitions = [
        {
            "from": t.from_policy,
            "to": t.to_policy,
            "timestamp": float(t.timestamp),
            "reason": t.reason,
            "sequence": t.sequence,
        }
        for t in moved
    ]
    time_in = dict.fromkeys(order, 0.0)
    # Segments of events under one policy: (first index, end index, policy index), 0-based.
    segments: list[tuple[int, int, int]] = []
    current, since_event, since_time = 0, 0, 0
    for t in moved:
        segments.append((since_event, t.sequence, current))
        time_in[order[current]] += float(int(t.timestamp) - since_time)
        current, since_event, since_time = index_of[t.to_policy], t.sequence, int(t.timestamp)
    segments.append((since_event, len(processed), current))
    time_in[order[current]] += float(end - since_time)

    outcomes = bytes(map(_second, processed))
    n = len(outcomes)
    failures = outcomes.count(0)
    per_policy = {name: {"events": 0, "failures": 0} for name in order}
    mitigated = restricted_successes = 0
    for first, stop, level in segments:
        seg_failures = outcomes.count(0, first, stop)
        per_policy[order[level]]["events"] += stop - first
        per_policy[order[level]]["failures"] += seg_failures
        if level:
            mitigated += seg_failures
            restricted_successes += stop - first - seg_failures
    successes = n - failures
    credit = successes - restriction_cost * restricted_successes + mitigation_weight * mitigated
    compliance = min(1.0, max(0.0, credit / n)) if n else 1.0

    escalations = [t for t in moved if t.is_escalation]
    bursts = _bursts(outcomes, processed, segments, escalations, order, end, burst_min_failures)
    metrics: dict[str, Any] = {
        "events_processed": n,
        "events_ignored": ignored,
        "successes": successes,
        "failures": failures,
        "mitigated_failures": mitigated,
        "restricted_successes": restricted_successes,
        "mitigation_weight": mitigation_weight,
        "restriction_cost": restriction_cost,
        "per_policy": per_policy,
        "restrictive_seconds": float(end) - time_in[order[0]],
        "simulated_seconds": float(end),
        "flaps": count_flaps(transitions, flap_window_s),
        "flap_window_s": flap_window_s,
        **bursts,
    }
    return RunOutcome(
        policy_transitions=transitions,
        final_policy=moved[-1].to_policy if moved else order[0],
        total_escalations=len(escalations),
        total_deescalations=len(moved) - len(escalations),
        time_in_each_policy=time_in,
        sla_compliance_rate=compliance,
        cancelled=cancelled,
        metrics=metrics,
    )


def _bursts(
    outcomes: bytes,
    processed: list,
    segments: list[tuple[int, int, int]],
    escalations: list,
    order: list[str],
    end: int,
    min_failures: int,
) -> dict[str, Any]:
    """Detection figures for the failure bursts (see module doc)."""
    top = len(order) - 1
    starts = [s[0] for s in segments]
    esc_seq = [t.sequence for t in escalations]
    esc_at = [int(t.timestamp) for t in escalations]
    count = detected = 0
    delay_total = 0.0
    for match in re.finditer(b"\x00{%d,}" % min_failures, outcomes):
        first, stop = match.span()
        onset = processed[first][0]
        count += 1
        level = segments[bisect_right(starts, first) - 1][2]
        if level == top:
            detected += 1
            continue
        i = bisect_left(esc_seq, first + 1)
        if i < len(esc_seq) and esc_seq[i] <= stop:
            detected += 1
            delay_total += esc_at[i] - onset
        else:
            delay_total += end - onset
    return {
        "burst_min_failures": min_failures,
        "bursts": count,
        "bursts_detected": detected,
        "detection_delay_total_s": delay_total,
        "mean_detection_delay_s": delay_total / count if count else 0.0,
    }
