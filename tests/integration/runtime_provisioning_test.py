"""Provisioning JetStream from the catalogue: idempotent create, update in place, refusals."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import RetentionPolicy, StorageType

from ionveil.errors import ConfigurationError
from workers.runtime import ensure_streams, load_catalogue
from workers.runtime.provisioning import stream_config


async def test_ensure_streams_is_idempotent_and_updates_in_place(nc: NATS) -> None:
    """A second run changes nothing; a changed limit in the catalogue updates the stream
    without losing its messages."""
    js = nc.jetstream()
    catalogue = load_catalogue()
    await ensure_streams(js, catalogue)
    await ensure_streams(js, catalogue)
    assert {s.config.name for s in await js.streams_info()} == {s.name for s in catalogue.streams}
    info = await js.stream_info("DISPATCH")
    assert info.config.duplicate_window == 120
    assert info.config.retention == RetentionPolicy.LIMITS
    assert (await js.stream_info("SIMJOBS")).config.retention == RetentionPolicy.WORK_QUEUE

    await js.publish("ionveil.dispatch.events.acme", b"\x80")
    shorter = catalogue.stream("DISPATCH").model_copy(update={"max_age_hours": 24})
    await js.update_stream(stream_config(catalogue.stream("DISPATCH")))
    changed = catalogue.model_copy(update={"streams": (shorter,)})
    await ensure_streams(js, changed)
    info = await js.stream_info("DISPATCH")
    assert info.config.max_age == 24 * 3600
    assert info.state.messages == 1


@pytest.mark.parametrize(
    ("field", "value"), [("retention", RetentionPolicy.INTEREST), ("storage", StorageType.MEMORY)]
)
async def test_immutable_stream_change_is_refused(nc: NATS, field: str, value: object) -> None:
    """A stream whose retention or storage differs on the server stops provisioning with a
    ConfigurationError naming the setting (JetStream cannot change it in place)."""
    js = nc.jetstream()
    catalogue = load_catalogue()
    config = stream_config(catalogue.stream("POLICY"))
    setattr(config, field, value)
    await js.add_stream(config)
    with pytest.raises(ConfigurationError, match=f"stream POLICY: {field}"):
        await ensure_streams(js, catalogue, names=["POLICY"])
