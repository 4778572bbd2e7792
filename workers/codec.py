"""Wire encoding of every IonVeil message: MessagePack by default, JSON on request.

The NATS contract (ARCHITECTURE.md, "NATS contract") says payloads are MessagePack maps unless the
header ``Content-Type: application/json`` says JSON, that a request is answered in its own
encoding, and that times are RFC 3339 strings or epoch seconds on input and RFC 3339 on output.
This module is that contract in code, shared by the runtime, the CLI and the tests.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any
from uuid import UUID

import msgpack
from pydantic import BaseModel

from ionveil.errors import ValidationError

__all__ = [
    "CONTENT_TYPE_HEADER",
    "CONTENT_TYPE_JSON",
    "MAX_FUTURE_SKEW_S",
    "MAX_PAYLOAD_BYTES",
    "check_not_future",
    "decode_payload",
    "encode_payload",
    "is_json_content",
    "parse_timestamp",
    "to_wire",
]

CONTENT_TYPE_HEADER = "Content-Type"
CONTENT_TYPE_JSON = "application/json"
MAX_PAYLOAD_BYTES = 1024 * 1024
"""Largest payload accepted (1 MiB, the streams' ``max_msg_size``)."""

# Timestamps outside these years are a sender's bug (often milliseconds sent as seconds).
MIN_YEAR = 1970
MAX_YEAR = 2100
_MIN_EPOCH_S = datetime(MIN_YEAR, 1, 1, tzinfo=UTC).timestamp()
_MAX_EPOCH_S = datetime(MAX_YEAR + 1, 1, 1, tzinfo=UTC).timestamp()
_MAX_TIMESTAMP_CHARS = 64

_SCALARS: frozenset[type] = frozenset({str, int, float, bool, type(None), bytes})


def is_json_content(headers: Mapping[str, str] | None) -> bool:
    """Whether ``headers`` declare a JSON body (``Content-Type: application/json[; ...]``)."""
    if not headers:
        return False
    value = headers.get(CONTENT_TYPE_HEADER)
    if value is None:
        value = headers.get("content-type")
    return value is not None and value.strip().lower().startswith(CONTENT_TYPE_JSON)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_payload(data: bytes, headers: Mapping[str, str] | None) -> tuple[Any, bool]:
    """Decode a message body in the encoding its headers declare.

    Args:
        data: the raw body.
        headers: the message headers (``None`` when the message has none).

    Returns:
        ``(value, is_json)``: the decoded value and whether the body was JSON, so a reply can be
        sent in the same encoding.

    Raises:
        ValidationError: ``payload: ...`` when the body is larger than ``MAX_PAYLOAD_BYTES`` or
            cannot be decoded (the runtime dead-letters such a message).
    """
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ValidationError(f"payload: {len(data)} bytes exceeds the {MAX_PAYLOAD_BYTES} limit")
    as_json = is_json_content(headers)
    try:
        if as_json:
            return json.loads(data, parse_constant=_reject_constant), True
        return msgpack.unpackb(data, raw=False, timestamp=3), False
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        kind = "JSON" if as_json else "MessagePack"
        raise ValidationError(f"payload: not valid {kind} ({type(exc).__name__}: {exc})") from None


def encode_payload(value: Any, *, as_json: bool = False) -> bytes:
    """Encode ``value`` (converted with ``to_wire``) as MessagePack, or JSON when ``as_json``.

    Raises:
        TypeError: ``value`` holds something with no wire form.
        ValueError: JSON was asked for and ``value`` holds NaN or infinity.
    """
    wire = to_wire(value)
    if as_json:
        return json.dumps(wire, separators=(",", ":"), allow_nan=False).encode()
    return msgpack.packb(wire, use_bin_type=True)


def _format_datetime(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.utcoffset() != timedelta(0):
        value = value.astimezone(UTC)
    text = value.replace(tzinfo=None).isoformat()
    return text + "Z"


# Field names per dataclass type, computed once: ``dataclasses.fields`` is slow per call and
# ``dataclasses.asdict`` deep-copies every value.
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _dataclass_fields(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls))
        _FIELD_NAMES[cls] = names
    return names


def _wire_key(key: Any) -> Any:
    if type(key) is str:
        return key
    if isinstance(key, Enum):
        key = key.value
    return key if isinstance(key, str | int) else str(to_wire(key))


def to_wire(value: Any) -> Any:
    """Convert ``value`` into plain data that MessagePack and JSON both encode.

    Dataclasses become dicts (recursively, field by field), ``datetime`` an RFC 3339 UTC string
    ending in ``Z`` (naive values are taken as UTC), ``date``/``time`` ISO strings, ``Enum`` its
    value, tuples/sets lists, pydantic models dicts, mappings dicts, ``timedelta`` seconds,
    ``UUID``/``Decimal``/paths strings or numbers.

    Raises:
        TypeError: for a type with no wire form (naming the type).
    """
    cls = type(value)
    if cls in _SCALARS:
        return value
    if cls is dict:
        return {_wire_key(k): to_wire(v) for k, v in value.items()}
    if cls is list:
        return [to_wire(v) for v in value]
    if isinstance(value, Enum):
        return to_wire(value.value)
    if isinstance(value, datetime):
        return _format_datetime(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: to_wire(getattr(value, name)) for name in _dataclass_fields(cls)}
    if isinstance(value, BaseModel):
        return to_wire(value.model_dump())
    if isinstance(value, Mapping):
        return {_wire_key(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    if isinstance(value, set | frozenset):
        items = [to_wire(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, str | int | float | bytes):  # subclasses of the scalars
        return value
    if isinstance(value, UUID | PurePath):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot encode a {cls.__name__} for the wire")


def _check_range(moment: datetime, field: str) -> datetime:
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise ValidationError(f"{field}: year {moment.year} is outside {MIN_YEAR}..{MAX_YEAR}")
    return moment


def _from_epoch(value: float, field: str) -> datetime:
    if not math.isfinite(value):
        raise ValidationError(f"{field}: must be a finite number of epoch seconds")
    if not _MIN_EPOCH_S <= value < _MAX_EPOCH_S:
        hint = " (milliseconds sent as seconds?)" if value >= _MAX_EPOCH_S * 100 else ""
        raise ValidationError(
            f"{field}: epoch seconds {value!r} is outside years {MIN_YEAR}..{MAX_YEAR}{hint}"
        )
    return datetime.fromtimestamp(value, tz=UTC)


def _from_text(value: str, field: str) -> datetime:
    text = value.strip()
    if len(text) > _MAX_TIMESTAMP_CHARS:
        raise ValidationError(f"{field}: timestamp string longer than {_MAX_TIMESTAMP_CHARS}")
    # RFC 3339 needs a date AND a time; fromisoformat would also take a bare date.
    if len(text) < 16 or text[10] not in "Tt ":
        raise ValidationError(f"{field}: {value!r} is not an RFC 3339 timestamp")
    try:
        moment = datetime.fromisoformat(text.upper())
    except ValueError:
        raise ValidationError(f"{field}: {value!r} is not an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _check_range(moment.astimezone(UTC), field)


MAX_FUTURE_SKEW_S = 300.0
"""How far in the future an event time may be (clock skew between producers and IonVeil)."""


def check_not_future(
    moment: datetime,
    *,
    field: str = "timestamp",
    now: datetime | None = None,
    skew_s: float = MAX_FUTURE_SKEW_S,
) -> datetime:
    """``moment`` unchanged, unless it is more than ``skew_s`` after ``now`` (default: the
    wall clock): an event cannot have happened in the future (ARCHITECTURE.md, "Security":
    timestamps within retention and skew).

    Raises:
        ValidationError: naming ``field``.
    """
    reference = now or datetime.now(UTC)
    if (moment - reference).total_seconds() > skew_s:
        raise ValidationError(
            f"{field}: more than {skew_s:g} s in the future ({moment.isoformat()})"
        )
    return moment


def parse_timestamp(value: Any, *, field: str = "timestamp") -> datetime:
    """Read a wire timestamp into an aware UTC ``datetime``.

    Accepts an RFC 3339 string (``Z`` or an offset; a string without offset is taken as UTC),
    finite epoch seconds (int or float) or a ``datetime`` (naive taken as UTC).

    Raises:
        ValidationError: naming ``field`` for booleans, NaN/infinity, unparsable strings, other
            types, and years outside 1970..2100.
    """
    if isinstance(value, bool):
        raise ValidationError(f"{field}: a boolean is not a timestamp")
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return _check_range(moment.astimezone(UTC), field)
    if isinstance(value, int | float):
        return _from_epoch(float(value), field)
    if isinstance(value, str):
        return _from_text(value, field)
    raise ValidationError(
        f"{field}: expected an RFC 3339 string or epoch seconds, got {type(value).__name__}"
    )
