"""Typed wire form of a dispatch event, for decoding MessagePack straight into it (msgspec).

Why: decoding a 100-event array into Python dicts (msgpack) and then reading ten keys of each
costs about 5 us per event, most of it allocating dicts that the garbage collector then walks.
``msgspec`` decodes the same bytes into these structs (``gc=False``: never tracked) in under
1 us per event and checks every field's type on the way, so the aggregator's column checks
only look at ranges. A payload that does not fit (a missing field, a wrong type, a datetime
extension) is decoded the generic way instead and goes through the per-field checks of
``_validate``, which name the field.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["WireEvent", "WireMetadata", "as_record", "dispatch_decoder"]


class WireMetadata(msgspec.Struct, gc=False):
    """The part of ``metadata`` the dashboard reads (other keys are ignored)."""

    lat: float | None = None
    lon: float | None = None


class WireEvent(msgspec.Struct, gc=False):
    """A dispatch event as sent on ``ionveil.dispatch.events.<org>`` (contract field names)."""

    event_id: str
    org_id: str
    dispatch_id: str
    timestamp: str | float
    severity: int
    response_time_minutes: float
    distance_km: float
    region: str
    unit_type: str
    sla_met: bool
    metadata: WireMetadata | None = None


def dispatch_decoder() -> msgspec.msgpack.Decoder[Any]:
    """A MessagePack decoder of one event or an array of events."""
    return msgspec.msgpack.Decoder(list[WireEvent] | WireEvent)


def as_record(event: WireEvent) -> dict[str, Any]:
    """The event as a wire map (for the per-field checks of the slow path)."""
    record = msgspec.structs.asdict(event)
    if event.metadata is not None:
        record["metadata"] = msgspec.structs.asdict(event.metadata)
    return record
