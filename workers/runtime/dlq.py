"""Dead-lettering: publish a message that cannot be processed to ``ionveil.dlq.<subject>``.

The DLQ copy carries the original body untouched and headers saying why, so an operator can
inspect it (``ionveil tail 'ionveil.dlq.>'``) and replay it after a fix. Its ``Nats-Msg-Id`` is
derived from the original stream and sequence, so a retried dead-lettering is stored once.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from workers.codec import CONTENT_TYPE_HEADER

__all__ = [
    "DLQ_PREFIX",
    "HEADER_CODE",
    "HEADER_DELIVERY_COUNT",
    "HEADER_ERROR",
    "HEADER_ORIGINAL_SUBJECT",
    "HEADER_STREAM_SEQ",
    "DeadLetterReason",
    "dead_letter",
    "dead_letter_raw",
    "dlq_subject",
]

DLQ_PREFIX = "ionveil.dlq."
HEADER_ERROR = "Ionveil-Error"
HEADER_CODE = "Ionveil-Error-Code"
HEADER_ORIGINAL_SUBJECT = "Ionveil-Original-Subject"
HEADER_DELIVERY_COUNT = "Ionveil-Delivery-Count"
HEADER_STREAM_SEQ = "Ionveil-Stream-Seq"
HEADER_ORIGINAL_STREAM = "Ionveil-Original-Stream"
HEADER_CONSUMER = "Ionveil-Consumer"
HEADER_ORIGINAL_MSG_ID = "Ionveil-Original-Msg-Id"
_MAX_HEADER_CHARS = 1000


class DeadLetterReason(StrEnum):
    """Why a message was dead-lettered (the ``Ionveil-Error-Code`` header and metric label)."""

    UNDECODABLE = "undecodable"
    INVALID = "invalid"
    REJECTED = "rejected"
    MAX_DELIVERIES = "max_deliveries"


def dlq_subject(subject: str) -> str:
    """``ionveil.dispatch.events.acme`` -> ``ionveil.dlq.ionveil.dispatch.events.acme``."""
    return DLQ_PREFIX + subject


def _header_value(text: str) -> str:
    # Header values cannot hold CR/LF; long errors are cut so the header block stays small.
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_HEADER_CHARS else flat[: _MAX_HEADER_CHARS - 3] + "..."


async def dead_letter(
    js: JetStreamContext,
    msg: Msg,
    *,
    reason: DeadLetterReason,
    error: str,
    stream: str,
    consumer: str,
    stream_seq: int,
    num_delivered: int,
) -> None:
    """Publish ``msg`` to the DLQ stream with headers explaining ``reason``.

    The caller terminates the original only after this returned: if the DLQ publish fails the
    message stays in its stream and is retried.

    Raises:
        nats.errors.Error: the DLQ publish was not acknowledged by JetStream.
    """
    await dead_letter_raw(
        js,
        msg.subject,
        msg.data,
        msg.headers,
        reason=reason,
        error=error,
        stream=stream,
        consumer=consumer,
        stream_seq=stream_seq,
        num_delivered=num_delivered,
    )


async def dead_letter_raw(
    js: JetStreamContext,
    subject: str,
    data: bytes,
    original_headers: Mapping[str, str] | None,
    *,
    reason: DeadLetterReason,
    error: str,
    stream: str,
    consumer: str,
    stream_seq: int,
    num_delivered: int,
) -> None:
    """Dead-letter a message given by its parts (e.g. read back from the stream by sequence).

    Raises:
        nats.errors.Error: the DLQ publish was not acknowledged by JetStream.
    """
    original = original_headers or {}
    headers = {
        HEADER_ERROR: _header_value(error) or reason.value,
        HEADER_CODE: reason.value,
        HEADER_ORIGINAL_SUBJECT: subject,
        HEADER_DELIVERY_COUNT: str(num_delivered),
        HEADER_STREAM_SEQ: str(stream_seq),
        HEADER_ORIGINAL_STREAM: stream,
        HEADER_CONSUMER: consumer,
        "Nats-Msg-Id": f"dlq:{stream}:{consumer}:{stream_seq}",
    }
    content_type = original.get(CONTENT_TYPE_HEADER)
    if content_type:
        headers[CONTENT_TYPE_HEADER] = content_type
    msg_id = original.get("Nats-Msg-Id")
    if msg_id:
        headers[HEADER_ORIGINAL_MSG_ID] = _header_value(msg_id)
    await js.publish(dlq_subject(subject), data, headers=headers)
