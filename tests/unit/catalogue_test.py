"""subjects.yaml is valid, complete, and agrees with the code that publishes and subscribes.

The agreement check scans every Python source under ``workers/`` and ``services/`` for string
literals (and f-strings, their placeholders read as ``*``) that look like IonVeil subjects, and
checks both directions: no subject in code the catalogue lacks, no catalogue subject no code
uses (bar the explicit exceptions below).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from ionveil.errors import ConfigurationError
from workers.runtime.catalogue import (
    Catalogue,
    default_catalogue_path,
    load_catalogue,
    subject_matches,
    to_wildcard,
)
from workers.runtime.provisioning import consumer_settings, stream_config

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("workers", "services")
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_.]*\}")
_SUBJECT_LIKE = re.compile(r"^ionveil(\.[A-Za-z0-9_\-*>]+)*\.?$")

# Catalogue patterns no code names literally, and why.
UNREFERENCED_OK: dict[str, str] = {}

STREAMS = {"DISPATCH", "INCIDENTS", "POLICY", "ALERTS", "SIMJOBS", "DLQ"}
DURABLES = {
    "policy-engine": "DISPATCH",
    "analytics-recorder": "DISPATCH",
    "dashboard-dispatch": "DISPATCH",
    "dashboard-incidents": "INCIDENTS",
    "dashboard-alerts": "ALERTS",
    "alerts-incidents": "INCIDENTS",
    "alerts-policy": "POLICY",
    "simulator-jobs": "SIMJOBS",
}
ENDPOINTS = {
    "simulator": {"create", "run", "status", "cancel", "compare", "recommend"},
    "dashboard": {"snapshot", "metric", "trend", "anomalies", "regions", "heatmap"},
    "alerts": {
        "active",
        "get",
        "ack",
        "resolve",
        "escalate",
        "suppress",
        "unsuppress",
        "suppressions",
        "rules-add",
        "rules-remove",
        "rules-list",
    },
    "policy": {"state"},
    "analytics": {"statistics"},
}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    """The repository's catalogue."""
    return load_catalogue()


def _docstring_ids(tree: ast.AST) -> set[int]:
    # Bare string statements are documentation (module/class/function/attribute docstrings).
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }


def _literal(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            else:
                parts.append("*")
        return "".join(parts)
    return None


def _is_module_path(text: str) -> bool:
    path = ROOT.joinpath(*text.split("."))
    return path.with_suffix(".py").is_file() or path.is_dir()


def code_subjects() -> dict[str, list[str]]:
    """Subject-like literals in the scanned sources -> where they occur."""
    found: dict[str, list[str]] = {}
    for folder in SCANNED:
        for source in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(source.read_text(encoding="utf-8"))
            skip = _docstring_ids(tree)
            nested = {
                id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values
            }
            for node in ast.walk(tree):
                if id(node) in skip or id(node) in nested:
                    continue
                text = _literal(node)
                if text is None or not text.startswith("ionveil."):
                    continue
                text = _PLACEHOLDER.sub("*", text)  # "...{org}" filled in with str.format
                if not _SUBJECT_LIKE.match(text) or _is_module_path(text):
                    continue
                where = f"{source.relative_to(ROOT)}:{node.lineno}"
                found.setdefault(text, []).append(where)
    return found


def _tokens_compatible(a: str, b: str) -> bool:
    return a == b or "*" in (a, b)


def overlaps(code: str, pattern: str) -> bool:
    """Whether a code subject (maybe with wildcards, maybe a prefix) can name a subject of
    ``pattern``: token by token compatible, ``>`` on either side matching the rest, and a code
    string ending in '.' or shorter than the pattern read as a prefix."""
    c = code.rstrip(".").split(".")
    p = to_wildcard(pattern).split(".")
    for i, token in enumerate(c):
        if i >= len(p):
            return False
        if ">" in (token, p[i]):
            return True
        if not _tokens_compatible(token, p[i]):
            return False
    return len(c) <= len(p)


def test_catalogue_loads_with_every_stream_durable_and_endpoint(catalogue: Catalogue) -> None:
    """The catalogue lists the six streams, the eight durables on their streams and every
    endpoint named in the architecture (services may add more)."""
    assert {s.name for s in catalogue.streams} == STREAMS
    assert {c.durable: c.stream for c in catalogue.consumers} == DURABLES
    names = {svc: {e.name for e in eps} for svc, eps in catalogue.endpoints.items()}
    for service, required in ENDPOINTS.items():
        assert required <= names[service], f"{service} lacks {required - names[service]}"
    assert catalogue.stream("SIMJOBS").retention == "workqueue"
    for stream in catalogue.streams:
        assert stream.duplicate_window_s == 120
        assert stream.storage == "file"


def test_every_subject_has_a_payload_type(catalogue: Catalogue) -> None:
    """Each subject names its payload type, and each endpoint its request and reply."""
    assert all(s.payload for s in catalogue.subjects)
    assert all(e.request and e.reply for _, e in catalogue.all_endpoints())


def test_code_uses_only_catalogued_subjects(catalogue: Catalogue) -> None:
    """Every subject-like string in workers/ and services/ falls under a catalogue pattern."""
    patterns = catalogue.patterns()
    unknown = {
        text: where
        for text, where in code_subjects().items()
        if not any(overlaps(text, p) for p in patterns)
    }
    assert unknown == {}, f"subjects used in code but missing from subjects.yaml: {unknown}"


def test_every_catalogued_subject_is_used_by_code(catalogue: Catalogue) -> None:
    """Every catalogue subject and endpoint is named somewhere in the code (or listed in
    UNREFERENCED_OK with the reason)."""
    used = list(code_subjects())
    unused = [
        p
        for p in catalogue.patterns()
        if p not in UNREFERENCED_OK and not any(overlaps(text, p) for text in used)
    ]
    assert unused == [], f"catalogued but unused by code: {unused}"


def test_every_catalogued_durable_is_used_by_code(catalogue: Catalogue) -> None:
    """Each durable of the catalogue is named by some worker module."""
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "workers").rglob("*.py"))
    missing = [c.durable for c in catalogue.consumers if f'"{c.durable}"' not in sources]
    assert missing == [], f"durables no worker consumes: {missing}"


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("ionveil.dispatch.events.{org}", "ionveil.dispatch.events.acme", True),
        ("ionveil.dispatch.events.{org}", "ionveil.dispatch.events.acme.x", False),
        ("ionveil.dispatch.events.{org}", "ionveil.dispatch.events", False),
        ("ionveil.dispatch.events.>", "ionveil.dispatch.events.acme", True),
        ("ionveil.dispatch.events.>", "ionveil.dispatch.events", False),
        ("ionveil.alerts.{org}.{severity}", "ionveil.alerts.*.*", True),
        ("ionveil.alerts.{org}.{severity}", "ionveil.alerts.>", False),
        ("ionveil.incidents.*", "ionveil.incidents.o1", True),
        ("ionveil.simulator.jobs", "ionveil.simulator.jobs", True),
        ("ionveil.simulator.jobs", "ionveil.simulator.other", False),
    ],
)
def test_subject_matches(pattern: str, subject: str, expected: bool) -> None:
    """NATS matching: '*' one token, '>' the rest; wildcards in the subject need the pattern
    to be at least as wide."""
    assert subject_matches(pattern, subject) is expected


@pytest.mark.parametrize(
    ("subject", "org"),
    [
        ("ionveil.dispatch.events.acme", "acme"),
        ("ionveil.incidents.o-1", "o-1"),
        ("ionveil.alerts.acme.critical", "acme"),
        ("ionveil.policy.transitions.beta", "beta"),
        ("ionveil.simulator.jobs", None),
        ("ionveil.unknown.x.y", None),
    ],
)
def test_org_of_subject(catalogue: Catalogue, subject: str, org: str | None) -> None:
    """The org is the token in the {org} position of the matching catalogue subject."""
    assert catalogue.org_of(subject) == org


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "subjects.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["streams"][0].update(retention="forever"), "streams.0.retention"),
        (lambda d: d["streams"][0].update(colour="red"), "colour"),
        (lambda d: d["consumers"][0].update(stream="NOPE"), "unknown stream NOPE"),
        (lambda d: d["consumers"][0].update(filter_subject="ionveil.alerts.>"), "filter outside"),
        (lambda d: d["subjects"][0].update(stream="ALERTS"), "not in stream ALERTS"),
        (lambda d: d["subjects"][0].update(pattern="ionveil.a b"), "not a valid subject"),
        (lambda d: d["consumers"].append(dict(d["consumers"][0])), "durables must be unique"),
        (lambda d: d["consumers"][0].update(backoff_s=[-1]), "backoff_s"),
        (lambda d: d["subjects"][0].pop("stream"), "names its stream"),
        (lambda d: d["endpoints"]["policy"].append(d["endpoints"]["policy"][0]), "unique"),
    ],
)
def test_invalid_catalogue_is_a_configuration_error(tmp_path: Path, mutate, message: str) -> None:
    """A broken catalogue fails loading with a ConfigurationError naming the problem."""
    data = yaml.safe_load(default_catalogue_path().read_text())
    mutate(data)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        load_catalogue(_write(tmp_path, data))


@pytest.mark.parametrize(
    ("content", "message"), [(None, "cannot read"), ("a: [", "not valid YAML")]
)
def test_unreadable_catalogue(tmp_path: Path, content: str | None, message: str) -> None:
    """A missing or non-YAML catalogue file is a ConfigurationError."""
    path = tmp_path / "subjects.yaml" if content is None else _write(tmp_path, content)
    with pytest.raises(ConfigurationError, match=message):
        load_catalogue(path)


def test_catalogue_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """IONVEIL_SUBJECTS_FILE points the runtime at another catalogue."""
    path = _write(tmp_path, yaml.safe_load(default_catalogue_path().read_text()))
    monkeypatch.setenv("IONVEIL_SUBJECTS_FILE", str(path))
    assert default_catalogue_path() == path


@pytest.mark.parametrize(("env", "expected"), [(None, 1), ("3", 3)])
def test_stream_config_replicas_override(
    catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch, env: str | None, expected: int
) -> None:
    """IONVEIL_STREAM_REPLICAS overrides every stream's replica count (for clusters)."""
    if env is None:
        monkeypatch.delenv("IONVEIL_STREAM_REPLICAS", raising=False)
    else:
        monkeypatch.setenv("IONVEIL_STREAM_REPLICAS", env)
    config = stream_config(catalogue.stream("DISPATCH"))
    assert config.num_replicas == expected
    assert config.max_age == 168 * 3600
    assert config.duplicate_window == 120
    assert config.max_msg_size == 1024 * 1024


@pytest.mark.parametrize("env", ["zero", "0", "9"])
def test_bad_replicas_override(
    catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch, env: str
) -> None:
    """A bad IONVEIL_STREAM_REPLICAS is a ConfigurationError naming the variable."""
    monkeypatch.setenv("IONVEIL_STREAM_REPLICAS", env)
    with pytest.raises(ConfigurationError, match="IONVEIL_STREAM_REPLICAS"):
        stream_config(catalogue.stream("DISPATCH"))


def test_consumer_settings_prefer_the_catalogue(catalogue: Catalogue) -> None:
    """A catalogued durable takes the catalogue's delivery settings; an uncatalogued one the
    spec's; a spec contradicting the catalogue's stream or filter is refused."""
    from workers.runtime import ConsumerSpec

    async def handler(batch: list) -> None:
        return None

    spec = ConsumerSpec("SIMJOBS", "simulator-jobs", "ionveil.simulator.jobs", handler)
    merged = consumer_settings(spec, catalogue)
    assert (merged.ack_wait_s, merged.max_deliver, merged.backoff_s) == (30, 3, (5.0, 30.0))
    assert [merged.nak_delay_s(n) for n in (1, 2, 3, 9)] == [5.0, 30.0, 30.0, 30.0]
    # A job may outlast the ack wait: heartbeats every third of it keep the job.
    assert (merged.effective_handler_timeout_s, merged.heartbeat_s) == (900, 10.0)

    adhoc = ConsumerSpec("DISPATCH", "tool", "ionveil.dispatch.events.>", handler, max_deliver=2)
    plain = consumer_settings(adhoc, catalogue)
    assert plain.max_deliver == 2
    assert (plain.effective_handler_timeout_s, plain.heartbeat_s) == (27.0, None)

    wrong = ConsumerSpec("DISPATCH", "simulator-jobs", "ionveil.dispatch.events.>", handler)
    with pytest.raises(ConfigurationError, match="simulator-jobs"):
        consumer_settings(wrong, catalogue)
    with pytest.raises(ConfigurationError, match="NOPE"):
        consumer_settings(ConsumerSpec("NOPE", "x", "y", handler), catalogue)


def test_per_replica_durables_take_their_prefix_entry(catalogue: Catalogue) -> None:
    """``dashboard-dispatch-<replica>`` uses the per-replica ``dashboard-dispatch`` entry, keeps
    its own name, start sequence and inactivity threshold; a non-per-replica prefix does not
    match."""
    from workers.runtime import ConsumerSpec

    async def handler(batch: list) -> None:
        return None

    entry = catalogue.consumer("dashboard-dispatch")
    assert entry is not None and entry.per_replica
    spec = ConsumerSpec(
        "DISPATCH",
        "dashboard-dispatch-r1",
        "ionveil.dispatch.events.>",
        handler,
        start_seq=42,
        inactive_threshold_s=600.0,
    )
    merged = consumer_settings(spec, catalogue)
    assert merged.durable == "dashboard-dispatch-r1"
    assert (merged.start_seq, merged.inactive_threshold_s) == (42, 600.0)
    assert merged.max_ack_pending == entry.max_ack_pending
    assert catalogue.consumer("policy-engine-r1") is None
