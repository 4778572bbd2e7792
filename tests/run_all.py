#!/usr/bin/env python3
"""Run IonVeil's test suite with coverage: ``python tests/run_all.py [-k EXPR] [pytest args]``.

Prints line coverage for the whole project and for each service package. On a full run
(no ``-k``), fails when overall or any of the three new services is below
``IONVEIL_COVERAGE_MIN`` percent (85 by default), as the specification requires.

The fault suite (``tests/faults``: kills and restarts real servers, about 6 minutes) is part of
a plain run; ``-m faults`` runs it alone (``make test-faults``), ``-m "not faults"`` skips it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ionveil", "services", "workers", "shared")
GATED = ("services/simulator", "services/dashboard", "services/alerts")


def _coverage_by_folder(data_file: Path) -> tuple[float, dict[str, float]]:
    import coverage

    cov = coverage.Coverage(data_file=str(data_file))
    cov.load()
    data = cov.get_data()
    totals: dict[str, list[int]] = {}
    grand = [0, 0]
    for filename in sorted(data.measured_files()):
        rel = Path(filename).resolve().relative_to(ROOT).as_posix()
        _, statements, _, missing, _ = cov.analysis2(filename)
        covered = len(statements) - len(missing)
        grand[0] += covered
        grand[1] += len(statements)
        parts = rel.split("/")
        folder = "/".join(parts[:2]) if parts[0] == "services" and len(parts) > 2 else parts[0]
        bucket = totals.setdefault(folder, [0, 0])
        bucket[0] += covered
        bucket[1] += len(statements)
    overall = 100.0 * grand[0] / grand[1] if grand[1] else 100.0
    return overall, {k: 100.0 * c / n if n else 100.0 for k, (c, n) in totals.items()}


def main(argv: list[str]) -> int:
    """Run pytest with coverage and print the per-package table."""
    import pytest

    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    data_file = ROOT / ".coverage"
    selecting = any(a.startswith(("-k", "-m")) for a in argv)
    args = [f"--cov={p}" for p in PACKAGES] + ["--cov-report=", *argv]
    code = int(pytest.main(args))
    if not data_file.exists():
        return code
    overall, folders = _coverage_by_folder(data_file)
    print("\nLine coverage")
    for folder, pct in sorted(folders.items()):
        print(f"  {folder:<28} {pct:6.1f}%")
    print(f"  {'TOTAL':<28} {overall:6.1f}%")
    filtered = selecting or any(not a.startswith("-") for a in argv)
    minimum = float(os.environ.get("IONVEIL_COVERAGE_MIN", "85"))
    if code == 0 and not filtered:
        low = [f for f in GATED if f in folders and folders[f] < minimum]
        if overall < minimum or low:
            print(f"coverage below {minimum}%: overall {overall:.1f}% {low}")
            return 3
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
