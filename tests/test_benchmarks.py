"""The pool benchmark still runs, so that it cannot silently rot.

``benchmarks/bench_pool.py --quick`` runs in a subprocess and must exit 0 (it
exits 1 when a pool it compares against fails, say after a library upgrade
broke its stand-in connection) and print both scenarios' tables. No figure is
checked: a timing assertion would be a coin toss on a shared machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_pool.py"


@pytest.mark.slow
def test_quick_benchmark_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Scenario 1: one thread, checkout/return cycle" in proc.stdout, output
    assert "Scenario 2: threads sharing connections" in proc.stdout, output
    assert "target, no starved poodle thread" in proc.stdout, output
