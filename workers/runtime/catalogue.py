"""The subject catalogue (``subjects.yaml``) as a typed, validated object.

A YAML file is a boundary, so it is parsed with pydantic (unknown keys rejected, every error
naming its place in the file). ``Catalogue`` answers the questions the runtime and the tests ask:
which stream holds a subject, what a durable's settings are, where the org token of a subject is.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ionveil.errors import ConfigurationError

__all__ = [
    "CATALOGUE_ENV",
    "Catalogue",
    "CatalogueConsumer",
    "CatalogueEndpoint",
    "CatalogueStream",
    "CatalogueSubject",
    "default_catalogue_path",
    "load_catalogue",
    "subject_matches",
    "to_wildcard",
]

CATALOGUE_ENV = "IONVEIL_SUBJECTS_FILE"
_VAR = re.compile(r"^\{[a-z_]+\}$")
_TOKEN = re.compile(r"^(\{[a-z_]+\}|[A-Za-z0-9_\-]+|\*|>)$")


def to_wildcard(pattern: str) -> str:
    """``ionveil.alerts.{org}.{severity}`` -> ``ionveil.alerts.*.*`` (the NATS form)."""
    return ".".join("*" if _VAR.match(t) else t for t in pattern.split("."))


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` (which may itself hold ``*``/``>``) falls under NATS ``pattern``.

    ``*`` in ``pattern`` matches any one token, ``>`` one or more trailing tokens; a ``*`` in
    ``subject`` only matches ``*`` (or ``>``) in the pattern, so a wildcard subscription in code
    is only accepted when the catalogue is at least as wide.
    """
    p = to_wildcard(pattern).split(".")
    s = subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if token == "*":
            if s[i] == ">":
                return False
            continue
        if token != s[i]:
            return False
    return len(p) == len(s)


def _check_subject(value: str) -> str:
    tokens = value.split(".")
    if not all(_TOKEN.match(t) for t in tokens) or ">" in tokens[:-1]:
        raise ValueError(f"{value!r} is not a valid subject pattern")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CatalogueStream(_Strict):
    """A JetStream stream."""

    name: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    description: str = ""
    subjects: tuple[str, ...] = Field(min_length=1)
    retention: Literal["limits", "interest", "workqueue"]
    max_age_hours: float = Field(gt=0)
    duplicate_window_s: float = Field(ge=0)
    storage: Literal["file", "memory"] = "file"
    replicas: int = Field(default=1, ge=1, le=5)
    max_msg_size_bytes: int = Field(gt=0)
    discard: Literal["old", "new"] = "old"

    @model_validator(mode="after")
    def _subjects_valid(self) -> CatalogueStream:
        for subject in self.subjects:
            _check_subject(subject)
        return self


class CatalogueSubject(_Strict):
    """A subject pattern, what it carries and where it lives."""

    pattern: str
    kind: Literal["stream", "core"]
    stream: str | None = None
    payload: str
    description: str = ""

    @model_validator(mode="after")
    def _valid(self) -> CatalogueSubject:
        _check_subject(self.pattern)
        if (self.kind == "stream") != (self.stream is not None):
            raise ValueError(f"{self.pattern}: a stream subject names its stream, a core one not")
        return self

    @property
    def wildcard(self) -> str:
        """The NATS wildcard form of ``pattern``."""
        return to_wildcard(self.pattern)

    @property
    def org_index(self) -> int | None:
        """The token position of ``{org}``, if the subject has one."""
        tokens = self.pattern.split(".")
        return tokens.index("{org}") if "{org}" in tokens else None


class CatalogueConsumer(_Strict):
    """A durable pull consumer and its delivery settings."""

    durable: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    worker: str
    stream: str
    filter_subject: str
    ack_wait_s: float = Field(gt=0)
    max_deliver: int = Field(ge=1)
    backoff_s: tuple[float, ...] = ()
    max_ack_pending: int = Field(default=1000, ge=1)
    per_replica: bool = False
    """``durable`` is a prefix: each replica reads the whole stream as ``<durable>-<replica>``."""
    handler_timeout_s: float | None = Field(default=None, gt=0)
    """How long one batch may take (default 0.9 x ``ack_wait_s``). Longer than ``ack_wait_s``
    means the runtime sends in-progress heartbeats while the handler runs, so a long job is
    kept, and a job whose worker died comes back after ``ack_wait_s``, not after the job's
    longest possible run."""

    @model_validator(mode="after")
    def _valid(self) -> CatalogueConsumer:
        _check_subject(self.filter_subject)
        if any(delay < 0 for delay in self.backoff_s):
            raise ValueError(f"{self.durable}: backoff_s values must be >= 0")
        return self


class CatalogueEndpoint(_Strict):
    """A request-reply operation of a service."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    subject: str
    request: str
    reply: str

    @property
    def wildcard(self) -> str:
        """The NATS wildcard form of ``subject``."""
        return to_wildcard(self.subject)


class Catalogue(_Strict):
    """Everything in ``subjects.yaml``."""

    version: Literal[1]
    streams: tuple[CatalogueStream, ...]
    subjects: tuple[CatalogueSubject, ...]
    consumers: tuple[CatalogueConsumer, ...]
    endpoints: dict[str, tuple[CatalogueEndpoint, ...]]

    @model_validator(mode="after")
    def _consistent(self) -> Catalogue:
        streams = {s.name: s for s in self.streams}
        problems = []
        if len(streams) != len(self.streams):
            problems.append("stream names must be unique")
        for subject in self.subjects:
            if subject.stream is not None:
                stream = streams.get(subject.stream)
                if stream is None:
                    problems.append(f"subject {subject.pattern}: unknown stream {subject.stream}")
                elif not any(subject_matches(p, subject.wildcard) for p in stream.subjects):
                    problems.append(f"subject {subject.pattern}: not in stream {stream.name}")
        durables = [c.durable for c in self.consumers]
        if len(set(durables)) != len(durables):
            problems.append("consumer durables must be unique")
        for consumer in self.consumers:
            stream = streams.get(consumer.stream)
            if stream is None:
                problems.append(f"consumer {consumer.durable}: unknown stream {consumer.stream}")
            elif not any(subject_matches(p, consumer.filter_subject) for p in stream.subjects):
                problems.append(f"consumer {consumer.durable}: filter outside {stream.name}")
        endpoint_subjects = [ep.subject for _, ep in self.all_endpoints()]
        if len(set(endpoint_subjects)) != len(endpoint_subjects):
            problems.append("endpoint subjects must be unique")
        for service, endpoints in self.endpoints.items():
            if len({ep.name for ep in endpoints}) != len(endpoints):
                problems.append(f"endpoint names of {service} must be unique")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def stream(self, name: str) -> CatalogueStream:
        """The stream called ``name``.

        Raises:
            ConfigurationError: no such stream in the catalogue.
        """
        for stream in self.streams:
            if stream.name == name:
                return stream
        raise ConfigurationError(f"stream {name!r} is not in subjects.yaml")

    def consumer(self, durable: str) -> CatalogueConsumer | None:
        """The catalogue entry of ``durable``, or ``None`` if it is not catalogued.

        A per-replica entry ``dashboard-dispatch`` also answers for ``dashboard-dispatch-<id>``.
        """
        exact = self._consumers.get(durable)
        if exact is not None:
            return exact
        prefix, _, _ = durable.rpartition("-")
        entry = self._consumers.get(prefix)
        return entry if entry is not None and entry.per_replica else None

    @cached_property
    def _consumers(self) -> dict[str, CatalogueConsumer]:
        return {c.durable: c for c in self.consumers}

    def all_endpoints(self) -> list[tuple[str, CatalogueEndpoint]]:
        """Every ``(service, endpoint)`` pair."""
        return [(svc, ep) for svc, eps in self.endpoints.items() for ep in eps]

    def patterns(self) -> list[str]:
        """Every subject pattern of the catalogue (subjects and endpoints), NATS form."""
        return [s.wildcard for s in self.subjects] + [ep.wildcard for _, ep in self.all_endpoints()]

    def org_of(self, subject: str) -> str | None:
        """The ``{org}`` token of a concrete message subject, ``None`` if it has none."""
        tokens = subject.split(".")
        for entry in self.subjects:
            index = entry.org_index
            if (
                index is not None
                and index < len(tokens)
                and subject_matches(entry.pattern, subject)
            ):
                return tokens[index]
        return None


def default_catalogue_path() -> Path:
    """``$IONVEIL_SUBJECTS_FILE``, else ``subjects.yaml`` at the repository root."""
    configured = os.environ.get(CATALOGUE_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "subjects.yaml"


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Read and validate the catalogue.

    Raises:
        ConfigurationError: the file is missing, not YAML, or breaks the schema (every problem
            named with its location).
    """
    path = path or default_catalogue_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read subject catalogue {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"subject catalogue {path} is not valid YAML: {exc}") from None
    try:
        return Catalogue.model_validate(raw)
    except pydantic.ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigurationError(
            f"invalid subject catalogue {path}: " + "; ".join(problems)
        ) from None
