"""Hostile input is refused: dead-lettered with a reason, or answered with an error; nothing
crashes and the valid traffic around it is processed exactly.

The four workers run in-process on the session's NATS and fresh PostgreSQL schemas. Hypothesis
generates the payloads (``tests/security/_hostile.py``); the stream subjects and endpoints are
walked from ``subjects.yaml``, so a new consumer or endpoint without hostile coverage fails
the test. Examples are collected synchronously by ``@given`` and then sent from the test's
event loop (Hypothesis cannot drive an async body directly).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import nats.errors
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from tests.faults._figures import FIGURES
from tests.faults._procs import health_status
from tests.security._hostile import ALL, TARGETS, Bad, bad_messages, bad_requests, request_fields
from workers.codec import MAX_PAYLOAD_BYTES, decode_payload, encode_payload
from workers.fleet import WORKERS, load_worker
from workers.runtime import WorkerHandle, load_catalogue, run_worker
from workers.runtime.dlq import (
    HEADER_CODE,
    HEADER_CONSUMER,
    HEADER_ERROR,
    HEADER_ORIGINAL_MSG_ID,
)
from workers.settings import Settings

pytestmark = pytest.mark.security

HOSTILE, GOOD = "hostile", "good"
EXAMPLES_PER_SUBJECT = 30
EXAMPLES_PER_ENDPOINT = 25


def _collect(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """``n`` (or fewer, when the space is small) examples drawn by Hypothesis."""
    out: list[Any] = []

    @hsettings(
        max_examples=n,
        database=None,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def draw(value: Any) -> None:
        out.append(value)

    draw()
    return out


@pytest.fixture
async def fleet(nc: NATS, settings: Settings) -> AsyncIterator[dict[str, WorkerHandle]]:
    """Every worker running in this process (free HTTP ports), drained at the end."""
    async with AsyncExitStack() as stack:
        handles = {}
        for name in WORKERS:
            worker = load_worker(name)()
            handles[name] = await stack.enter_async_context(
                run_worker(worker, settings, http_port=0)
            )
        yield handles


async def _dlq_entries(js: JetStreamContext) -> list[dict[str, str]]:
    """Headers of every message in the DLQ stream."""
    info = await js.stream_info("DLQ")
    out = []
    for seq in range(info.state.first_seq or 1, (info.state.last_seq or 0) + 1):
        msg = await js.get_msg("DLQ", seq)
        out.append({**(msg.headers or {}), "subject": msg.subject or ""})
    return out


def _prefix(consumer: str, prefixes: list[str]) -> str:
    for prefix in prefixes:
        if consumer == prefix or consumer.startswith(prefix + "-"):
            return prefix
    return consumer


def test_every_consumed_stream_has_hostile_coverage() -> None:
    """Each stream a catalogue consumer reads has a hostile target naming exactly the same
    consumers (so a new consumer cannot slip past this suite)."""
    catalogue = load_catalogue()
    by_stream: dict[str, set[str]] = {}
    for consumer in catalogue.consumers:
        by_stream.setdefault(consumer.stream, set()).add(consumer.durable)
    assert set(by_stream) == set(TARGETS)
    for stream, durables in by_stream.items():
        assert durables == set(TARGETS[stream].required), stream


async def _wait_all_idle(fleet: dict[str, WorkerHandle]) -> None:
    for handle in fleet.values():
        await handle.wait_idle(timeout_s=120)


async def test_hostile_messages_are_dead_lettered_and_valid_ones_processed(
    nc: NATS, fleet: dict[str, WorkerHandle]
) -> None:
    """For every consumed stream subject, hostile messages (wrong types, missing fields, huge
    strings, NaN/inf, bad times, unknown severities, deep nesting, invalid MessagePack/JSON)
    interleaved with valid ones: each hostile message is dead-lettered by every consumer that
    needs the broken field, with a reason; no valid message is; the valid ones are counted
    exactly; every worker stays healthy."""
    js = nc.jetstream(timeout=10)
    sent: dict[str, tuple[str, Bad]] = {}
    valid_ids: dict[str, list[str]] = {stream: [] for stream in TARGETS}
    n = 0
    for stream, target in TARGETS.items():
        bads = _collect(bad_messages(target, HOSTILE), EXAMPLES_PER_SUBJECT)
        for bad in bads:
            n += 1
            msg_id = f"bad-{stream}-{n}"
            subject = target.subject.format(org=HOSTILE)
            await js.publish(subject, bad.data, headers={**bad.headers, "Nats-Msg-Id": msg_id})
            sent[msg_id] = (stream, bad)
            good = target.valid(GOOD, n)
            good_id = f"good-{stream}-{n}"
            await js.publish(
                target.subject.format(org=GOOD),
                encode_payload(good),
                headers={"Nats-Msg-Id": good_id},
            )
            valid_ids[stream].append(good_id)
    FIGURES.bad_inputs += len(sent)

    # Over the size limit: refused at the door (client and server max_payload), never stored.
    oversize = b"\x00" * (MAX_PAYLOAD_BYTES + 1)
    for target in TARGETS.values():
        with pytest.raises((nats.errors.MaxPayloadError, nats.errors.Error)):
            await js.publish(target.subject.format(org=HOSTILE), oversize)
        FIGURES.bad_inputs += 1

    await _wait_all_idle(fleet)
    dead = await _dlq_entries(js)

    refused: dict[str, dict[str, str]] = {}
    for entry in dead:
        original = entry.get(HEADER_ORIGINAL_MSG_ID, "")
        stream = sent[original][0] if original in sent else None
        prefixes = list(TARGETS[stream].required) if stream else []
        refused.setdefault(original, {})[_prefix(entry.get(HEADER_CONSUMER, ""), prefixes)] = (
            entry.get(HEADER_ERROR, "")
        )
        assert entry.get(HEADER_CODE) in {"undecodable", "invalid", "rejected"}, entry
        assert entry["subject"].startswith("ionveil.dlq.ionveil."), entry

    problems: list[str] = []
    for msg_id, (stream, bad) in sent.items():
        want = TARGETS[stream].refusers(bad)
        got = refused.get(msg_id, {})
        missing = want - set(got)
        if missing:
            problems.append(f"{msg_id} {bad.how!r}: not dead-lettered by {sorted(missing)}")
        for consumer, error in got.items():
            named = ALL in bad.fields or any(f in error for f in bad.fields)
            if not error or not (named or "payload" in error):
                problems.append(f"{msg_id} {bad.how!r}: {consumer} reason {error!r} names no field")
    assert len(dead) >= len(sent), "fewer dead letters than hostile messages"
    FIGURES.details.append(
        f"  hostile messages: {len(sent)} published, {len(dead)} dead letters "
        f"(per consumer), {sum(len(ids) for ids in valid_ids.values())} valid around them"
    )
    leaked = [i for ids in valid_ids.values() for i in ids if i in refused]
    assert not leaked, f"valid messages dead-lettered: {leaked[:5]}"
    assert not problems, "\n".join(problems[:40]) + f"\n({len(problems)} problems)"

    # The valid traffic was processed exactly.
    dashboard = fleet["dashboard"].worker
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # counted per org at the aggregator's next flush (1 s)
        stats = dashboard.aggregator.get_ingest_stats(GOOD)  # type: ignore[attr-defined]
        if stats["accepted"] >= len(valid_ids["DISPATCH"]):
            break
        assert asyncio.get_running_loop().time() < deadline, stats
        await asyncio.sleep(0.1)
    assert stats["accepted"] == len(valid_ids["DISPATCH"]), stats
    reply = await nc.request("ionveil.api.policy.good.state", encode_payload({}), timeout=10)
    state, _ = decode_payload(reply.data, reply.headers)
    assert state["outcomes_recorded"] == len(valid_ids["DISPATCH"]), state
    stats = await nc.request(
        "ionveil.api.analytics.good.statistics", encode_payload({}), timeout=10
    )
    recorded, _ = decode_payload(stats.data, stats.headers)
    assert recorded["count"] == len(valid_ids["DISPATCH"]), recorded
    for job in range(len(valid_ids["SIMJOBS"])):
        sim_id = valid_ids["SIMJOBS"][job].replace("good-SIMJOBS-", "good-job-")
        reply = await nc.request(
            "ionveil.api.simulator.status", encode_payload({"simulation_id": sim_id}), timeout=10
        )
        status, _ = decode_payload(reply.data, reply.headers)
        assert status.get("status") == "completed", status
    for name, handle in fleet.items():
        code, body = await health_status(handle.http_port)
        assert code == 200, (name, body)


async def test_hostile_requests_get_an_error_reply_naming_the_problem(
    nc: NATS, fleet: dict[str, WorkerHandle]
) -> None:
    """Every endpoint of subjects.yaml answers hostile requests (not a map, undecodable,
    hostile field values, over the size limit refused at the door) within the timeout: an
    error reply with a 4xx code and a message when the request cannot be valid, never a
    500 (crash) and never silence; the workers stay healthy."""
    catalogue = load_catalogue()
    problems: list[str] = []
    tried = 0
    codes: dict[str, int] = {}
    for service, endpoint in catalogue.all_endpoints():
        subject = endpoint.subject.replace("{org}", GOOD)
        fields = request_fields(endpoint.request)
        for bad, must_fail in _collect(bad_requests(fields), EXAMPLES_PER_ENDPOINT):
            tried += 1
            where = f"{service}.{endpoint.name} {bad.how!r}"
            try:
                reply = await nc.request(subject, bad.data, timeout=10, headers=bad.headers)
            except nats.errors.TimeoutError:
                problems.append(f"{where}: no reply")
                continue
            headers = reply.headers or {}
            code = headers.get("Nats-Service-Error-Code")
            codes[code or "ok"] = codes.get(code or "ok", 0) + 1
            if code is None:
                if must_fail:
                    problems.append(f"{where}: accepted")
                continue
            body, _ = decode_payload(reply.data, headers)
            message = (body.get("error") or {}).get("message", "") if isinstance(body, dict) else ""
            if code.startswith("5"):
                problems.append(f"{where}: {code} {message!r}")
            elif not message:
                problems.append(f"{where}: error {code} without a message")
            elif ALL not in bad.fields and must_fail and not _names(message, bad, fields):
                problems.append(f"{where}: {code} {message!r} names no field")
        with pytest.raises(nats.errors.MaxPayloadError):
            await nc.request(subject, b"\x00" * (MAX_PAYLOAD_BYTES + 1), timeout=2)
        tried += 1
    FIGURES.bad_inputs += tried
    FIGURES.details.append(f"  hostile requests: {tried} sent, replies by code {codes}")
    assert codes.get("400", 0) > tried // 2, codes
    assert not problems, "\n".join(problems[:40]) + f"\n({len(problems)} problems)"
    for name, handle in fleet.items():
        code, body = await health_status(handle.http_port)
        assert code == 200, (name, body)


def _names(message: str, bad: Bad, fields: dict[str, bool]) -> bool:
    """Whether an error message names a field of the request (the broken or a missing one)."""
    lowered = message.lower()
    return "payload" in lowered or any(f.lower() in lowered for f in (*bad.fields, *fields))


async def test_oversize_is_refused_by_the_server_too(nc: NATS) -> None:
    """The server's max_payload refuses an over-limit message even from a client that skips
    its own check (raw protocol), so no worker ever receives one."""
    assert nc.max_payload <= MAX_PAYLOAD_BYTES
    host, port = nc.connected_url.hostname, nc.connected_url.port  # type: ignore[union-attr]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await reader.readline()
        size = MAX_PAYLOAD_BYTES + 1
        writer.write(b'CONNECT {"verbose":false}\r\n')
        writer.write(f"PUB ionveil.dispatch.events.hostile {size}\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line.startswith(b"-ERR") and b"payload" in line.lower(), line
    finally:
        writer.close()
        await writer.wait_closed()
    FIGURES.bad_inputs += 1


@pytest.mark.parametrize("stream", ["DISPATCH", "INCIDENTS"])
async def test_future_timestamps_beyond_clock_skew_are_refused(
    nc: NATS, fleet: dict[str, WorkerHandle], stream: str
) -> None:
    """A time inside 1970..2100 but 30 days in the future (beyond the 5 minutes of clock
    skew allowed) is refused by every consumer of the stream (ARCHITECTURE.md: inputs carry
    "timestamps within retention and skew")."""
    from datetime import UTC, datetime, timedelta

    target = TARGETS[stream]
    payload = target.valid(HOSTILE, 1)
    payload["timestamp"] = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    js = nc.jetstream(timeout=10)
    await js.publish(
        target.subject.format(org=HOSTILE),
        encode_payload(payload),
        headers={"Nats-Msg-Id": f"skew-{stream}"},
    )
    FIGURES.bad_inputs += 1
    await _wait_all_idle(fleet)
    refused = {
        _prefix(e.get(HEADER_CONSUMER, ""), list(target.required)) for e in await _dlq_entries(js)
    }
    assert refused == set(target.required)
