"""The dashboard's fast ingest path without servers: vectorised timestamp parsing, typed
(msgspec) decoding, the hierarchical fold against a per-event reference, id hashing, the
heatmap reservoir ring and checkpoints made with an older sketch accuracy."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ionveil.errors import ValidationError
from ionveil.statistics import percentile
from services.dashboard import AggregationType, DispatchAggregator, TimeWindow
from services.dashboard._buckets import ALL, WINDOWS_S, Accumulator, FoldColumns, OrgStore
from services.dashboard._fasttime import parse_utc_column
from services.dashboard._reservoir import Reservoir
from services.dashboard._sketch import (
    DENSE_AFTER_BINS,
    LogSketch,
    _small_quantiles,
    bin_index,
    merged_quantiles,
    rebin,
    series_quantiles,
)
from services.dashboard._validate import stable_hashes
from services.dashboard._wire import WireEvent, dispatch_decoder
from workers.codec import CONTENT_TYPE_JSON
from workers.dashboard import decode_dispatch

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def record(i: int, at: datetime, **changes: Any) -> dict[str, Any]:
    """One wire map (as a producer sends it), with ``changes`` applied."""
    out: dict[str, Any] = {
        "event_id": f"e{i}",
        "org_id": "o1",
        "dispatch_id": f"d{i}",
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "severity": 1 + i % 5,
        "response_time_minutes": 1.0 + (i * 7919) % 400 / 10.0,
        "distance_km": 0.5 + (i * 104729) % 250 / 10.0,
        "region": ("north", "south", "east")[i % 3],
        "unit_type": ("ambulance", "fire")[i % 2],
        "sla_met": i % 4 != 0,
        "metadata": {"lat": 48.0 + (i % 100) / 100.0, "lon": 2.0 + (i % 37) / 37.0},
    }
    out.update(changes)
    return out


def batch(n: int, **changes: Any) -> list[dict[str, Any]]:
    """``n`` events spread over the 30 minutes before ``NOW``."""
    return [record(i, NOW - timedelta(seconds=1 + (i * 37) % 1800), **changes) for i in range(n)]


def clock() -> float:
    return NOW.timestamp()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.datetimes(datetime(1970, 1, 1), datetime(2100, 12, 31, 23, 59, 59)),
            st.integers(0, 9),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_utc_column_parse_equals_fromisoformat(values: list[tuple[datetime, int]]) -> None:
    """Column parsing gives exactly ``fromisoformat(...).timestamp()``, any fraction length."""
    texts = []
    for moment, digits in values:
        text = moment.strftime("%Y-%m-%dT%H:%M:%S")
        if digits:
            text += "." + f"{moment.microsecond:06d}{moment.microsecond % 1000:03d}"[:digits]
        texts.append(text + "Z")
    parsed = parse_utc_column(texts)
    assert parsed is not None
    expect = [datetime.fromisoformat(t[:-1] + "+00:00").timestamp() for t in texts]
    assert parsed.tolist() == expect


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-29T00:00:00Z",  # not a leap year
        "2026-13-01T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:60:00Z",
        "2026-01-01t00:00:00Z",
        "2026-01-01T00:00:00+00:00",
        "1969-12-31T23:59:59Z",
        "2101-01-01T00:00:00Z",
        "2026-01-01T00:00:00.1a3Z",
        "2026-01-01T00:00:0xZ",
        "2026-01-01T00:00:00.Z",
        "2026-01-01T00:00:00.1234567890Z",
        "2026-01-01T00:00:00\u00e9",
    ],
)
def test_utc_column_parse_leaves_other_shapes_to_the_slow_path(text: str) -> None:
    """Anything but a valid ``...Z`` timestamp in 1970..2100 is left to per-value parsing."""
    assert parse_utc_column(["2026-01-01T00:00:00Z", text]) is None


def test_mixed_timestamp_lengths_and_epochs_parse() -> None:
    """Strings of several lengths, and epoch numbers, both take the column path."""
    texts = ["2026-03-02T11:00:00Z", "2026-03-02T11:00:00.5Z", "2026-03-02T11:00:00.250Z"]
    parsed = parse_utc_column(texts)
    assert parsed is not None and parsed.tolist() == [
        datetime(2026, 3, 2, 11, tzinfo=UTC).timestamp() + f for f in (0.0, 0.5, 0.25)
    ]


async def test_structs_and_maps_aggregate_identically() -> None:
    """Typed (msgspec) events and decoded maps give the same aggregates and counters."""
    records = batch(3000)
    structs = dispatch_decoder().decode(msgpack.packb(records))
    assert type(structs[0]) is WireEvent
    by_maps = DispatchAggregator(clock=clock)
    by_structs = DispatchAggregator(clock=clock)
    assert (await by_maps.ingest_records(records))[0] == 3000
    assert (await by_structs.ingest_records(structs))[0] == 3000
    start = NOW - timedelta(hours=1)
    for window in (TimeWindow.MINUTE_1, TimeWindow.MINUTE_15, TimeWindow.DAY_1):
        for aggregation in (AggregationType.SUM, AggregationType.PERCENTILE_90):
            for dims in (None, {"region": "east", "severity": "2"}):
                args = ("o1", "response_time", window, aggregation, dims, start)
                assert await by_maps.get_metric(*args) == await by_structs.get_metric(*args)
    assert by_maps.get_ingest_stats() == by_structs.get_ingest_stats()
    await by_maps.aclose()
    await by_structs.aclose()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"severity": 9}, "severity"),
        ({"response_time_minutes": math.nan}, "response_time_minutes"),
        ({"distance_km": -1.0}, "distance_km"),
        ({"event_id": ""}, "event_id"),
        ({"metadata": {"lat": 91.0, "lon": 0.0}}, "metadata"),
        ({"timestamp": "2026-02-30T00:00:00Z"}, "timestamp"),
        ({"region": " "}, "region"),
    ],
)
async def test_bad_struct_events_are_refused_by_name(changes: dict[str, Any], field: str) -> None:
    """A typed event that breaks a range rule is refused, naming its field; the rest count."""
    records = batch(10)
    records[4].update(changes)
    structs = dispatch_decoder().decode(msgpack.packb(records))
    agg = DispatchAggregator(clock=clock)
    accepted, rejected = await agg.ingest_records(structs)
    assert accepted == 9 and [i for i, _ in rejected] == [4]
    assert rejected[0][1].startswith(field)
    await agg.aclose()


def test_decode_dispatch_falls_back_to_maps() -> None:
    """Ill-typed or JSON bodies decode as maps (checked per field later); garbage is refused."""
    good = msgpack.packb(batch(2))
    assert all(type(e) is WireEvent for e in decode_dispatch(good, None)[0])
    single = decode_dispatch(msgpack.packb(record(1, NOW)), {})[0]
    assert type(single) is WireEvent and single.metadata is not None
    ill_typed = msgpack.packb([record(1, NOW, severity="high")])
    assert decode_dispatch(ill_typed, None)[0][0]["severity"] == "high"
    as_json = b'[{"event_id": "e1"}]'
    value, is_json = decode_dispatch(as_json, {"Content-Type": CONTENT_TYPE_JSON})
    assert is_json and value == [{"event_id": "e1"}]
    with pytest.raises(ValidationError, match="payload"):
        decode_dispatch(b"\xc1\xc1", None)


def test_stable_hashes_ascii_and_unicode_batches_agree() -> None:
    """An id hashes the same alone, in an ASCII batch, or in a batch with non-ASCII ids."""
    ids = ["a", "abc", "a-much-longer-id", "z\x00", "\u00e9t\u00e9"]
    alone = [int(stable_hashes([i])[0]) for i in ids]
    assert [int(h) for h in stable_hashes(ids)] == alone
    assert [int(h) for h in stable_hashes(ids[:4])] == alone[:4]
    assert len(set(alone)) == len(ids) and len(stable_hashes([])) == 0


def test_fold_matches_a_per_event_reference() -> None:
    """The grouped fold equals adding every event to every window one by one."""
    rng = random.Random(5)
    n, combos = 4000, 7
    base = NOW.timestamp()
    ts = np.array([base - rng.uniform(0, 2 * 86400) for _ in range(n)])
    cid = np.array([rng.randrange(combos) for _ in range(n)], dtype=np.int64)
    rt = np.array([rng.choice([0.0, rng.uniform(0.1, 90.0)]) for _ in range(n)])
    dist = np.array([rng.uniform(0.0, 30.0) for _ in range(n)])
    met = np.array([rng.random() < 0.7 for _ in range(n)])
    store = OrgStore()
    for c in range(combos):
        store.combo_id((f"r{c}", "1", "u"))
    half = n // 2
    for part in (slice(0, half), slice(half, n)):  # two folds: updates existing accumulators
        store.fold(FoldColumns(ts[part], cid[part], rt[part], dist[part], met[part], np.zeros(1)))
    for window in WINDOWS_S:
        expect: dict[tuple[int, int], Accumulator] = {}
        for t, c, r, d, m in zip(ts, cid, rt, dist, met, strict=True):
            start = int(t // window) * window
            for key in ((start, int(c)), (start, ALL)):
                acc = expect.setdefault(key, Accumulator())
                acc.count += 1
                acc.met += int(m)
                acc.rt_sum += r
                acc.d_sum += d
                acc.rt_min, acc.rt_max = min(acc.rt_min, r), max(acc.rt_max, r)
                acc.d_min, acc.d_max = min(acc.d_min, d), max(acc.d_max, d)
                acc.rt.add(r)
                acc.dist.add(d)
        got = {(b, c): a for b, bucket in store.windows[window].items() for c, a in bucket.items()}
        assert got.keys() == expect.keys()
        for key, want in expect.items():
            have = got[key]
            assert (have.count, have.met) == (want.count, want.met)
            assert (have.rt_min, have.rt_max, have.d_min, have.d_max) == (
                want.rt_min,
                want.rt_max,
                want.d_min,
                want.d_max,
            )
            assert have.rt_sum == pytest.approx(want.rt_sum, rel=1e-12)
            assert have.d_sum == pytest.approx(want.d_sum, rel=1e-12)
            assert (have.rt.bins, have.rt.count) == (want.rt.bins, want.rt.count)
            assert (have.dist.bins, have.dist.count) == (want.dist.bins, want.dist.count)


def test_reservoir_ring_keeps_the_latest_rows_in_order() -> None:
    """The ring keeps the last ``capacity`` rows, oldest first, across wrap-arounds."""
    ring = Reservoir(5)
    rows = np.arange(12, dtype=np.float64)

    def add(a: int, b: int) -> None:
        part = rows[a:b]
        ring.extend(part, part + 100, part + 200, part, part, part % 2)

    add(0, 3)
    add(3, 7)
    assert ring.columns()[0].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0] and len(ring) == 5
    add(7, 12)
    assert ring.columns()[0].tolist() == [7.0, 8.0, 9.0, 10.0, 11.0]
    ring.drop_older(9.5)
    assert ring.columns()[0].tolist() == [10.0, 11.0]
    assert ring.rows()[0] == [10.0, 110.0, 210.0, 10.0, 10.0, 0.0]
    again = Reservoir(5)
    again.extend_rows(ring.rows())
    assert again.rows() == ring.rows()
    add(0, 0)
    ring.drop_older(100.0)
    assert len(ring) == 0 and ring.rows() == []
    ring.drop_older(1.0)
    add(0, 12)  # more rows than the capacity at once
    assert ring.columns()[0].tolist() == [7.0, 8.0, 9.0, 10.0, 11.0]


def test_sketches_from_an_older_accuracy_are_rebinned() -> None:
    """Bins made at 0.5 % (older checkpoints) are moved to today's bins within 1.5 %."""
    values = [0.0, *(random.Random(2).uniform(0.5, 120.0) for _ in range(500))]
    gamma = 1.005 / 0.995
    old: dict[int, int] = {}
    for x in values:
        k = bin_index(0.0) if x == 0 else math.ceil(math.log(x) / math.log(gamma))
        old[k] = old.get(k, 0) + 1
    moved = LogSketch(rebin(old, 0.005))
    assert moved.count == len(values) and rebin(moved.bins, 0.008) is moved.bins
    for q in (0.5, 0.9, 0.99):
        exact = percentile(values, q * 100)
        assert merged_quantiles([moved], [q])[0] == pytest.approx(exact, rel=0.015)
    wire = Accumulator().to_wire()
    wire[8:10] = [list(old), list(old.values())]
    assert Accumulator.from_wire(wire, 0.005).rt.bins == moved.bins


def test_reservoir_grows_only_as_rows_arrive() -> None:
    """An empty ring holds no memory; it doubles up to its capacity, keeping row order."""
    ring = Reservoir(5000)
    assert ring.columns().shape == (6, 0)
    rows = np.arange(7000, dtype=np.float64)
    for a in range(0, 7000, 700):
        part = rows[a : a + 700]
        ring.extend(part, part, part, part, part, part)
    assert ring.columns()[0].tolist() == rows[2000:].tolist()
    ring.drop_older(6000.0)
    assert ring.columns()[0].tolist() == rows[6000:].tolist()


async def test_empty_and_all_invalid_batches_ingest_nothing() -> None:
    """Empty batches, and batches with no valid event, are counted and leave no state."""
    agg = DispatchAggregator(clock=clock)
    assert await agg.ingest_batch([]) == 0
    assert await agg.ingest_batch([1, "x"]) == 0  # type: ignore[list-item]
    assert await agg.ingest_records([]) == (0, [])
    accepted, rejected = await agg.ingest_records([{"event_id": "e1"}])
    assert accepted == 0 and rejected[0][1].startswith("org_id: required")
    stats = agg.get_ingest_stats()
    assert (stats["accepted"], stats["rejected_invalid"], stats["buffered"]) == (0, 3, 0)
    await agg.aclose()


def test_sketch_arrays_follow_every_write() -> None:
    """The cached numpy copy of a sketch is refreshed after adds and merges."""
    sketch = LogSketch()
    sketch.add(5.0)
    keys, counts = sketch.arrays()
    assert keys.tolist() == [bin_index(5.0)] and counts.tolist() == [1]
    assert sketch.arrays()[0] is keys  # unchanged: the cached copy
    sketch.add(5.0, 2)
    other = LogSketch()
    other.add(0.0)
    sketch.merge(other)
    keys, counts = sketch.arrays()
    assert dict(zip(keys.tolist(), counts.tolist(), strict=True)) == sketch.bins
    assert merged_quantiles([sketch], [0.0, 1.0])[0] == 0.0


@pytest.mark.parametrize("parts", [1, 2, 40])
def test_numpy_and_python_quantile_merges_agree(parts: int) -> None:
    """Merging large sketches with numpy gives the Python merge's quantiles, exactly."""
    rng = random.Random(parts)
    sketches = []
    for _part in range(parts):
        sketch = LogSketch()
        for _ in range(rng.choice([3, 400])):
            sketch.add(rng.choice([0.0, rng.lognormvariate(2.0, 1.5)]))
        sketches.append(sketch)
    qs = [0.0, 0.25, 0.5, 0.9, 0.99, 1.0]
    fast = merged_quantiles(sketches, qs)
    assert fast == _small_quantiles([s.bins for s in sketches], qs)
    values = [s.quantile(1.0) for s in sketches]
    assert fast[-1] == max(values)
    with pytest.raises(ValueError, match="empty"):
        merged_quantiles([LogSketch()], [0.5])


@given(
    st.lists(
        st.lists(
            st.lists(st.one_of(st.just(0.0), st.floats(1e-3, 1e4, allow_nan=False)), max_size=30),
            min_size=1,
            max_size=4,
        ).filter(lambda entry: any(entry)),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from([0.0, 0.5, 0.9, 0.95, 0.99, 1.0]),
)
@settings(max_examples=150, deadline=None)
def test_series_quantiles_equal_the_per_entry_merge(
    series: list[list[list[float]]], q: float
) -> None:
    """A whole series' quantiles at once (one dense table) equal each entry's own merge."""
    sketches = []
    for entry in series:
        row = []
        for values in entry:
            sketch = LogSketch()
            for value in values:
                sketch.add(value)
            row.append(sketch)
        sketches.append(row)
    got = series_quantiles(sketches, q)
    want = [merged_quantiles(row, [q])[0] for row in sketches]
    assert got == pytest.approx(want, rel=1e-12, abs=0.0)


def test_series_quantiles_refuse_bad_input() -> None:
    """An entry without samples and a quantile outside [0, 1] are errors; no entries, none."""
    full = LogSketch()
    full.add(2.0)
    assert series_quantiles([], 0.5) == []
    with pytest.raises(ValueError, match="empty"):
        series_quantiles([[full], [LogSketch()]], 0.5)
    with pytest.raises(ValueError, match="within"):
        series_quantiles([[full]], 1.5)


def _sketch_of(values: list[float]) -> LogSketch:
    sketch = LogSketch()
    for value in values:
        sketch.add(value)
    return sketch


def test_large_sketches_turn_dense_and_keep_every_count() -> None:
    """Past ``DENSE_AFTER_BINS`` bins a sketch holds a dense array: same bins, counts and
    quantiles as a dict would give, whether it grew by ``add``, ``merge``, ``add_pairs`` or
    from a wire table, with the zero bin and values far outside the first range."""
    rng = random.Random(11)
    values = [0.0, 0.0] + [rng.lognormvariate(1.5, 1.2) for _ in range(3000)]
    reference: dict[int, int] = {}
    for value in values:
        reference[bin_index(value)] = reference.get(bin_index(value), 0) + 1
    assert len(reference) > DENSE_AFTER_BINS

    grown = _sketch_of(values)
    assert grown.is_dense and grown.bins == reference and len(grown) == len(reference)
    grown.add(1e6)  # beyond the dense range: it grows upwards
    grown.add(1e-6)  # and downwards
    assert grown.bins[bin_index(1e6)] == 1 and grown.bins[bin_index(1e-6)] == 1
    assert grown.count == len(values) + 2

    wire = LogSketch.from_wire(_sketch_of(values).to_wire())
    assert wire.is_dense and wire.bins == reference and wire.count == len(values)

    small, large = _sketch_of(values[:10]), _sketch_of(values[10:])
    assert not small.is_dense
    small.merge(large)  # a small sketch absorbing a large one turns dense
    assert small.is_dense and small.bins == reference
    other = _sketch_of(values[:10])
    large.merge(other)  # and a large one absorbs a small one
    assert large.bins == reference

    twin = large.copy()
    twin.add(3.0)
    assert twin.count == large.count + 1 and large.bins == reference

    half = _sketch_of(values[: len(values) // 2])
    rest = _sketch_of(values[len(values) // 2 :])
    keys, counts = rest.arrays()
    half.add_pairs(keys, counts, keys.tolist(), counts.tolist(), 0, len(keys))
    half.count += rest.count
    assert half.bins == reference
    assert merged_quantiles([half], [0.5, 0.99]) == _small_quantiles([reference], [0.5, 0.99])


def test_an_empty_sketch_can_turn_dense() -> None:
    """A sketch handed many pairs at once goes dense from empty (zero bin included)."""
    sketch = LogSketch()
    keys = np.array([-(1 << 30), *range(100)], dtype=np.int64)
    counts = np.ones(len(keys), dtype=np.int64)
    sketch.add_pairs(keys, counts, keys.tolist(), counts.tolist(), 0, len(keys))
    sketch.count += len(keys)
    assert sketch.is_dense and sketch.bins == dict.fromkeys(keys.tolist(), 1)
    assert sketch.quantile(0.0) == 0.0
