#!/usr/bin/env python3
"""Run every benchmark under ``bench/`` (``make bench``); each writes ``bench/results/<name>.md``.

``python bench/run_all.py [--quick] [NAME ...]``: ``--quick`` passes smaller sizes through to each
script, names select scripts. Benchmarks run one after another so they do not share the cores.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    """Run the selected benchmarks; exit non-zero if any script failed."""
    quick = "--quick" in argv
    names = [a for a in argv if not a.startswith("-")]
    scripts = sorted(
        p for p in HERE.glob("*.py") if p.name != "run_all.py" and not p.name.startswith("_")
    )
    if names:
        scripts = [p for p in scripts if p.stem in names]
    failed = []
    for script in scripts:
        print(f"\n=== bench/{script.name} ===", flush=True)
        started = time.perf_counter()
        cmd = [sys.executable, str(script)] + (["--quick"] if quick else [])
        code = subprocess.call(cmd, cwd=HERE.parent)
        print(f"--- {script.name}: exit {code} in {time.perf_counter() - started:.1f}s", flush=True)
        if code:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
