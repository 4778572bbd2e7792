"""Terminal output of ``ionveil simulate``: progress bar, result, charts and tables.

Everything renders the plain-data forms (``services.simulator.serde.result_to_dict`` and the
recommendation dict), so in-process and ``--remote`` runs print the same way.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = [
    "ProgressBar",
    "render_bar_chart",
    "render_comparison",
    "render_recommendation",
    "render_result",
]

_BAR_WIDTH = 40


class ProgressBar:
    """A one-line progress bar (a ``progress`` callback for ``run_simulation``).

    Draws at most every ``interval_s`` seconds, and only on a terminal unless ``force``.
    """

    def __init__(
        self, stream: TextIO | None = None, *, interval_s: float = 0.1, force: bool = False
    ) -> None:
        self._stream = stream or sys.stderr
        self._interval_s = interval_s
        self._enabled = force or self._stream.isatty()
        self._last = 0.0
        self.drawn = 0

    def __call__(self, done: int, total: int) -> None:
        """Redraw for ``done`` of ``total`` events."""
        now = time.monotonic()
        if not self._enabled or (now - self._last < self._interval_s and done < total):
            return
        self._last = now
        share = done / total if total else 1.0
        filled = int(share * 30)
        self._stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {share:6.1%} {done:,} events")
        if done >= total:
            self._stream.write("\n")
        self._stream.flush()
        self.drawn += 1


def render_bar_chart(time_in_policy: Mapping[str, float], width: int = _BAR_WIDTH) -> str:
    """Horizontal bars of seconds per policy, scaled to the total."""
    total = sum(time_in_policy.values()) or 1.0
    label = max((len(p) for p in time_in_policy), default=0)
    lines = []
    for policy, seconds in time_in_policy.items():
        share = seconds / total
        bar = "█" * round(share * width)
        lines.append(f"  {policy:<{label}} │{bar:<{width}}│ {seconds:>10.0f} s {share:6.1%}")
    return "\n".join(lines)


def render_result(result: Mapping[str, Any], *, max_transitions: int = 20) -> str:
    """A result: status, transitions (the first few), the time chart and the figures."""
    m = result.get("metrics") or {}
    transitions = result.get("policy_transitions") or []
    lines = [
        f"simulation {result['simulation_id']}  scenario {result['scenario']['name']!r}  "
        f"status {result['status']}",
        f"pattern {result['failure_pattern']['pattern_id']}  "
        f"({m.get('events_processed', 0):,} events processed, "
        f"{m.get('events_ignored', 0):,} ignored)  duration {result['duration_seconds']} s",
    ]
    if result.get("error_message"):
        lines.append(f"note: {result['error_message']}")
    total = result.get("transitions_total", len(transitions))
    lines.append(f"\ntransitions ({total}):")
    for t in transitions[:max_transitions]:
        lines.append(
            f"  t={t['timestamp']:>10.0f} s  {t['from']:>12} -> {t['to']:<12} {t['reason']}"
        )
    if total > max_transitions:
        lines.append(f"  ... {total - max_transitions} more")
    lines.append("\ntime in each policy:")
    lines.append(render_bar_chart(result["time_in_each_policy"]))
    lines.append(
        f"\nSLA compliance {result['sla_compliance_rate']:.2%}  "
        f"escalations {result['total_escalations']}  "
        f"de-escalations {result['total_deescalations']}  final policy {result['final_policy']}"
    )
    if m:
        lines.append(
            f"failure bursts {m.get('bursts', 0)} (detected {m.get('bursts_detected', 0)}, "
            f"mean delay {m.get('mean_detection_delay_s', 0.0):.1f} s)  "
            f"flaps {m.get('flaps', 0)}  successes {m.get('successes', 0):,}  "
            f"failures {m.get('failures', 0):,} (mitigated {m.get('mitigated_failures', 0):,})"
        )
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*r) for r in rows]
    return "\n".join(out)


def render_comparison(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Scenarios side by side: thresholds, compliance, escalations, delay, flaps, time."""
    header = [
        "scenario",
        "esc",
        "compliance",
        "escal.",
        "de-esc.",
        "delay s",
        "flaps",
        "restrictive",
        "final",
    ]
    rows = []
    for name, r in results.items():
        m = r.get("metrics") or {}
        seconds = float(m.get("simulated_seconds") or r.get("duration_seconds") or 1)
        rows.append(
            [
                name,
                str(r["scenario"]["escalation_threshold"]),
                f"{r['sla_compliance_rate']:.2%}",
                str(r["total_escalations"]),
                str(r["total_deescalations"]),
                f"{m.get('mean_detection_delay_s', 0.0):.1f}",
                str(m.get("flaps", 0)),
                f"{float(m.get('restrictive_seconds', 0.0)) / seconds:.1%}",
                r["final_policy"],
            ]
        )
    return _table(header, rows)


def render_recommendation(rec: Mapping[str, Any], *, top: int = 15) -> str:
    """The scores table (best first, frontier marked) and the recommendation."""
    header = [
        "scenario",
        "esc",
        "de-escalation",
        "compliance",
        "delay s",
        "flaps/h",
        "restrictive",
        "pareto",
    ]
    rows = [
        [
            s["scenario"],
            str(s["escalation_threshold"]),
            ",".join(f"{k}={v}" for k, v in s["deescalation_thresholds"].items()) or "-",
            f"{s['sla_compliance']:.2%}",
            f"{s['detection_delay_s']:.1f}",
            f"{s['flaps_per_hour']:.2f}",
            f"{s['restrictive_share']:.1%}",
            "*" if s["pareto_optimal"] else "",
        ]
        for s in rec["scores"][:top]
    ]
    more = len(rec["scores"]) - top
    lines = [_table(header, rows)]
    if more > 0:
        lines.append(f"... {more} more candidates")
    lines += [
        "",
        f"recommended: {rec['recommended']['scenario']}  escalation threshold "
        f"{rec['suggested_escalation_threshold']}  de-escalation "
        f"{rec['suggested_deescalation_thresholds']}",
        "",
        rec["reasoning"],
    ]
    return "\n".join(lines)
