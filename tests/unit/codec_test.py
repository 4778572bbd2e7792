"""The wire codec: MessagePack/JSON payloads, ``to_wire`` conversions, timestamps."""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import PurePosixPath
from uuid import UUID

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from ionveil.errors import ValidationError
from workers.codec import (
    CONTENT_TYPE_JSON,
    MAX_PAYLOAD_BYTES,
    decode_payload,
    encode_payload,
    is_json_content,
    parse_timestamp,
    to_wire,
)


class Colour(str, enum.Enum):
    """A str-valued enum, like the spec's AlertSeverity."""

    RED = "red"


class Level(enum.IntEnum):
    """An int-valued enum, like the spec's EscalationLevel."""

    TWO = 2


@dataclass
class Inner:
    """A nested dataclass."""

    at: datetime
    tags: set[str] = field(default_factory=set)


@dataclass
class Outer:
    """A dataclass holding every kind of field to_wire converts."""

    name: str
    colour: Colour
    level: Level
    inner: Inner
    items: tuple[int, ...]
    by_key: dict[Colour, float]


class Model(BaseModel):
    """A pydantic model at the boundary."""

    when: datetime
    colour: Colour


JSON = {"Content-Type": CONTENT_TYPE_JSON}


def test_to_wire_converts_dataclasses_recursively() -> None:
    """Dataclasses become dicts field by field, enums their values, datetimes RFC 3339 UTC
    with Z, tuples and sets (sorted) lists, enum keys their values."""
    value = Outer(
        name="x",
        colour=Colour.RED,
        level=Level.TWO,
        inner=Inner(datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))), {"b", "a"}),
        items=(1, 2),
        by_key={Colour.RED: 1.5},
    )
    assert to_wire(value) == {
        "name": "x",
        "colour": "red",
        "level": 2,
        "inner": {"at": "2024-05-01T10:00:00Z", "tags": ["a", "b"]},
        "items": [1, 2],
        "by_key": {"red": 1.5},
    }


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (datetime(2024, 1, 1, 0, 0, 0, 123000), "2024-01-01T00:00:00.123000Z"),
        (date(2024, 1, 2), "2024-01-02"),
        (time(3, 4), "03:04:00"),
        (timedelta(minutes=1, seconds=30), 90.0),
        (UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (Decimal("1.5"), 1.5),
        (PurePosixPath("/a/b"), "/a/b"),
        (frozenset({3, 1}), [1, 3]),
        ({1, "a"}, None),  # unsortable: any order
        (b"\x00", b"\x00"),
        (None, None),
        ({"k": [1, (2, 3)]}, {"k": [1, [2, 3]]}),
        ({(1, 2): "tuple key"}, {"[1, 2]": "tuple key"}),
    ],
)
def test_to_wire_scalars_and_containers(value: object, wire: object) -> None:
    """Each supported type has its documented wire form (naive datetimes are UTC)."""
    if wire is None and value is not None:
        assert sorted(map(str, to_wire(value))) == sorted(map(str, value))
    else:
        assert to_wire(value) == wire


def test_to_wire_pydantic_model_and_unknown_type() -> None:
    """A pydantic model becomes a dict with wire values; an unknown type is a TypeError."""
    model = Model(when=datetime(2024, 1, 1, tzinfo=UTC), colour=Colour.RED)
    assert to_wire(model) == {"when": "2024-01-01T00:00:00Z", "colour": "red"}
    with pytest.raises(TypeError, match="object"):
        to_wire(object())


@pytest.mark.parametrize("as_json", [False, True])
def test_round_trip(as_json: bool) -> None:
    """encode_payload then decode_payload gives the wire value back, flagged JSON or not."""
    value = Outer("n", Colour.RED, Level.TWO, Inner(datetime(2024, 1, 1)), (1,), {})
    data = encode_payload(value, as_json=as_json)
    decoded, is_json = decode_payload(data, JSON if as_json else None)
    assert is_json is as_json
    assert decoded == to_wire(value)


def test_msgpack_is_the_default_and_json_needs_the_header() -> None:
    """Without the JSON Content-Type a JSON body is not accepted (it is read as MessagePack)."""
    assert decode_payload(msgpack.packb({"a": 1}), {"Other": "x"}) == ({"a": 1}, False)
    body = json.dumps({"a": 1}).encode()
    assert decode_payload(body, {"content-type": "application/json; charset=utf-8"})[1]
    with pytest.raises(ValidationError, match="payload: not valid MessagePack"):
        decode_payload(body, None)


@pytest.mark.parametrize(
    ("data", "headers", "needle"),
    [
        (b"\xc1", None, "not valid MessagePack"),
        (msgpack.packb(1) + b"extra", None, "not valid MessagePack"),
        (msgpack.packb({1: "int key"}), None, "not valid MessagePack"),
        (b"{bad", JSON, "not valid JSON"),
        (b'{"a": NaN}', JSON, "not valid JSON"),
        (b"\xff\xfe", JSON, "not valid JSON"),
        (b"0" * (MAX_PAYLOAD_BYTES + 1), None, "exceeds"),
    ],
)
def test_decode_rejects_bad_payloads(data: bytes, headers: dict | None, needle: str) -> None:
    """Undecodable bodies, NaN in JSON and bodies over 1 MiB raise ValidationError naming
    'payload'."""
    with pytest.raises(ValidationError, match=needle) as info:
        decode_payload(data, headers)
    assert str(info.value).startswith("payload: ")


def test_encode_json_refuses_nan() -> None:
    """JSON has no NaN: encoding one is a ValueError rather than invalid JSON on the wire."""
    with pytest.raises(ValueError):
        encode_payload({"x": math.nan}, as_json=True)


def test_is_json_content() -> None:
    """Only application/json (any case, with parameters) counts as JSON."""
    assert is_json_content({"Content-Type": "Application/JSON"})
    assert not is_json_content({"Content-Type": "application/msgpack"})
    assert not is_json_content(None)
    assert not is_json_content({})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-03-01T10:00:00Z", datetime(2024, 3, 1, 10, tzinfo=UTC)),
        ("2024-03-01t10:00:00z", datetime(2024, 3, 1, 10, tzinfo=UTC)),
        ("2024-03-01T12:00:00+02:00", datetime(2024, 3, 1, 10, tzinfo=UTC)),
        ("2024-03-01T10:00:00.5Z", datetime(2024, 3, 1, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2024-03-01 10:00:00", datetime(2024, 3, 1, 10, tzinfo=UTC)),
        (1709287200, datetime(2024, 3, 1, 10, tzinfo=UTC)),
        (1709287200.25, datetime(2024, 3, 1, 10, 0, 0, 250000, tzinfo=UTC)),
        (datetime(2024, 3, 1, 10), datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_accepts(value: object, expected: datetime) -> None:
    """RFC 3339 strings (Z, offset, or none = UTC), epoch seconds and datetimes parse to
    aware UTC datetimes."""
    parsed = parse_timestamp(value)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (True, "boolean"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        (1.7e12, "milliseconds"),
        (-1, "outside"),
        ("2024-03-01", "RFC 3339"),
        ("yesterday at noon", "RFC 3339"),
        ("2024-13-01T00:00:00Z", "RFC 3339"),
        ("9999-01-01T00:00:00Z", "year 9999"),
        ("2" * 80, "longer"),
        ([2024], "got list"),
        (None, "got NoneType"),
        (datetime(1900, 1, 1), "year 1900"),
    ],
)
def test_parse_timestamp_rejects(value: object, needle: str) -> None:
    """Booleans, NaN/inf, absurd years, date-only and garbage strings and other types raise
    ValidationError naming the field."""
    with pytest.raises(ValidationError, match=needle) as info:
        parse_timestamp(value, field="events[3].timestamp")
    assert str(info.value).startswith("events[3].timestamp: ")


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2100, 12, 30), timezones=st.just(UTC)
    )
)
def test_timestamp_wire_round_trip(moment: datetime) -> None:
    """Any in-range UTC datetime survives to_wire then parse_timestamp unchanged."""
    assert parse_timestamp(to_wire(moment)) == moment
