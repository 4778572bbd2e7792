"""What every consumer of ``ionveil.dispatch.events.<org>`` checks before using a message.

A DISPATCH message carries one event or an array of them; the subject's ``<org>`` is the org,
and an event naming another ``org_id`` is refused whole (one message, one tenant). Shared by
the policy and analytics workers so both refuse exactly the same messages.
"""

from __future__ import annotations

from typing import Any

from workers.runtime import Envelope

__all__ = ["events_for_subject_org"]


def events_for_subject_org(envelope: Envelope) -> list[Any]:
    """The envelope's events, or ``[]`` after rejecting it (DLQ) for a rule of the subject.

    Rejections name the place: ``subject: ...`` for a subject without an org, and
    ``[i].org_id: ...`` (``org_id: ...`` for a single event) for an event of another org.
    """
    tokens = envelope.subject.split(".")
    if len(tokens) != 4 or not envelope.org:
        envelope.reject(f"subject: expected ionveil.dispatch.events.<org>, got {envelope.subject}")
        return []
    many = isinstance(envelope.data, list)
    events: list[Any] = envelope.data if many else [envelope.data]
    for index, event in enumerate(events):
        if event.org_id is not None and event.org_id != envelope.org:
            where = f"[{index}]." if many else ""
            envelope.reject(
                f"{where}org_id: {event.org_id!r} does not match the subject's org {envelope.org!r}"
            )
            return []
    return events
