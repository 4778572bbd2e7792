"""``ionveil simulate`` in-process: flags, YAML scenarios, compare, recommend, bad input."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import yaml

from workers.cli import main
from workers.commands._simulate_render import ProgressBar, render_bar_chart


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The CLI configures logging for its process; put the test process's back afterwards."""
    root = logging.getLogger()
    handlers, level, config = list(root.handlers), root.level, structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI and return its exit status, stdout and stderr."""
    code = main(["simulate", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def write_scenario(tmp_path: Path, name: str, threshold: int) -> str:
    """A scenario YAML file."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "policy_order": ["normal", "watch", "halted"],
                "escalation_threshold": threshold,
                "deescalation_thresholds": {"watch": 10, "halted": 20},
            }
        )
    )
    return str(path)


def test_flags_and_burst_pattern_print_transitions_chart_and_figures(capsys) -> None:
    """A flag-built scenario on bursts prints transitions, the bar chart and compliance."""
    code, out, _ = run_cli(
        capsys,
        "--order", "normal,watch",
        "--escalation-threshold", "3",
        "--deescalate", "watch=10",
        "--pattern", "burst",
        "--burst-size", "4",
        "--burst-interval", "100",
        "--duration", "1000",
    )  # fmt: skip
    assert code == 0
    assert "transitions (20):" in out and "normal -> watch" in out
    assert "time in each policy:" in out and "█" in out
    assert "SLA compliance" in out and "failure bursts 10 (detected 10" in out


@pytest.mark.parametrize("pattern", ["constant", "cascade"])
def test_generator_patterns_run(capsys, pattern: str) -> None:
    """The constant and cascade generators run with their defaults and a seed."""
    code, out, _ = run_cli(capsys, "--pattern", pattern, "--duration", "3600", "--seed", "1")
    assert code == 0 and "status completed" in out


def test_long_runs_show_a_progress_bar(capsys, monkeypatch) -> None:
    """Past the progress threshold a progress bar is drawn on stderr (here forced)."""
    monkeypatch.setattr(ProgressBar, "__init__", _forced_init)
    code, _, err = run_cli(capsys, "--duration", "5000", "--progress-min-events", "10")
    assert code == 0 and "100.0%" in err


_original_init = ProgressBar.__init__


def _forced_init(self, stream=None, *, interval_s=0.1, force=False) -> None:
    """ProgressBar.__init__ with ``force`` on (stderr is not a terminal under pytest)."""
    _original_init(self, stream, interval_s=0.0, force=True)


def test_yaml_scenario_and_compare_side_by_side(capsys, tmp_path: Path) -> None:
    """--scenario reads YAML; --compare prints one row per scenario file."""
    eager, calm = write_scenario(tmp_path, "eager", 2), write_scenario(tmp_path, "calm", 9)
    code, out, _ = run_cli(capsys, "--scenario", eager, "--pattern", "burst")
    assert code == 0 and "scenario 'eager'" in out
    code, out, _ = run_cli(capsys, "--compare", eager, calm, "--pattern", "burst")
    assert code == 0 and "compliance" in out.splitlines()[0]
    assert out.count("eager") == 1 and out.count("calm") == 1


def test_recommend_prints_the_table_and_the_reasoning(capsys, tmp_path: Path) -> None:
    """--recommend sweeps around the scenario and prints scores and the recommendation."""
    code, out, _ = run_cli(
        capsys,
        "--recommend",
        "--thresholds", "2,3,9",
        "--scales", "0.5,1",
        "--pattern", "burst",
        "--burst-size", "5",
        "--duration", "7200",
    )  # fmt: skip
    assert code == 0 and "recommended: cli/esc=" in out and "Pareto-optimal" in out
    files = [write_scenario(tmp_path, "a", 2), write_scenario(tmp_path, "b", 9)]
    code, out, _ = run_cli(capsys, "--compare", *files, "--recommend", "--pattern", "burst")
    assert code == 0 and "recommended: a" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--order", "solo"], "policy_order"),
        (["--deescalate", "watch"], "--deescalate"),
        (["--escalation-threshold", "0"], "escalation_threshold"),
        (["--pattern", "constant", "--rate", "3"], "rate"),
        (["--scenario", "/nonexistent.yaml"], "/nonexistent.yaml"),
    ],
)
def test_bad_input_exits_2_with_the_field_named(capsys, argv: list[str], needle: str) -> None:
    """Invalid flags or files end with exit status 2 and a message naming the problem."""
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and needle in err


def test_invalid_yaml_scenario_is_reported(capsys, tmp_path: Path) -> None:
    """A YAML scenario breaking a rule is reported with the file and field."""
    path = tmp_path / "bad.yaml"
    path.write_text("policy_order: [a, a]\nescalation_threshold: 1\n")
    code, _, err = run_cli(capsys, "--scenario", str(path))
    assert code == 2 and "bad.yaml: policy_order" in err


def test_progress_bar_draws_to_the_end() -> None:
    """The progress bar redraws (throttled) and finishes with a newline at 100 %."""
    stream = io.StringIO()
    bar = ProgressBar(stream, interval_s=0.0, force=True)
    for done in (10, 50, 100):
        bar(done, 100)
    assert bar.drawn == 3 and stream.getvalue().endswith("100 events\n")
    quiet = ProgressBar(io.StringIO())  # not a terminal: draws nothing
    quiet(1, 2)
    assert quiet.drawn == 0


def test_bar_chart_scales_to_the_total() -> None:
    """Bars are proportional to the seconds per policy."""
    chart = render_bar_chart({"normal": 75.0, "watch": 25.0}, width=20)
    assert chart.splitlines()[0].count("█") == 15 and chart.splitlines()[1].count("█") == 5
