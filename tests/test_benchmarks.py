"""The benchmarks still run, so that they cannot silently rot.

``benchmarks/bench_pool.py --quick`` runs in a subprocess and must exit 0 (it
exits 1 when a pool it compares against fails, say after a library upgrade
broke its stand-in connection) and print both scenarios' tables.
``benchmarks/bench_tool.py --quick`` serves a real cheroot server in its own
subprocess and must exit 0 (it exits 1 when a request fails) and print its
summary, with wrk if it is installed and with its Python load generator. No
figure is checked: a timing assertion would be a coin toss on a shared
machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_pool.py"
TOOL_SCRIPT = SCRIPT.with_name("bench_tool.py")


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


@pytest.mark.slow
@pytest.mark.parametrize("client", ["auto", "python"])
def test_quick_tool_benchmark_runs(client: str) -> None:
    # "python" keeps the fallback load generator alive on machines with wrk.
    proc = subprocess.run(
        [sys.executable, str(TOOL_SCRIPT), "--quick", "--client", client],
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "summary: tool on vs off, median of 2 round(s):" in proc.stdout, output
    assert "mixed: " in proc.stdout, output
    assert "target, tool costs <= 3% of server CPU per request" in proc.stdout, output


@pytest.mark.slow
def test_quick_tool_benchmark_with_a_check_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(TOOL_SCRIPT), "--quick", "--check"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "check=<1 ms stand-in>, check_after=0.5" in proc.stdout, output
    assert "checks run: " in proc.stdout, output
