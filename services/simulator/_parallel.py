"""Run many scenarios over one pattern on every CPU, each process with its own engines.

The pattern is sent to each worker process once (pool initializer), not once per scenario, and
results come back without it, so a 100-candidate sweep over a 100,000-event pattern moves a
few megabytes, not hundreds. The ``forkserver`` start method keeps worker processes clean of
the parent's threads (an asyncio loop, NATS connections).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from services.simulator._run import RunOutcome, execute

__all__ = ["run_many"]

Config = tuple[Sequence[str], int, Mapping[str, int]]

_shared: dict[str, Any] = {}


def _init(events: Sequence[tuple[int, bool]], duration: int, options: dict[str, Any]) -> None:
    _shared.update(events=events, duration=duration, options=options)


def _one(config: Config) -> RunOutcome:
    order, threshold, deesc = config
    return execute(
        order, threshold, deesc, _shared["events"], _shared["duration"], **_shared["options"]
    )


def run_many(
    configs: Sequence[Config],
    events: Sequence[tuple[int, bool]],
    duration_seconds: int,
    options: Mapping[str, Any],
    *,
    max_workers: int | None = None,
) -> list[RunOutcome]:
    """Outcomes of ``execute`` for each ``(order, threshold, deescalation)`` config, in order."""
    workers = max(1, min(max_workers or os.cpu_count() or 1, len(configs)))
    opts = {k: v for k, v in options.items() if k != "chunk_size"}
    if workers == 1:
        return [execute(o, t, d, events, duration_seconds, **opts) for o, t, d in configs]
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init,
        initargs=(list(events), duration_seconds, opts),
    ) as pool:
        chunk = max(1, len(configs) // (workers * 4))
        payload = [(list(o), t, dict(d)) for o, t, d in configs]
        return list(pool.map(_one, payload, chunksize=chunk))
