"""The benchmarks still run, so that they cannot silently rot.

``benchmarks/bench_pool.py --quick`` runs in a subprocess and must exit 0 (it
exits 1 when a pool it compares against fails, say after a library upgrade
broke its stand-in connection) and print both scenarios' tables.
``benchmarks/bench_tool.py --quick`` serves a real cheroot server in its own
subprocess and must exit 0 (it exits 1 when a request fails) and print its
summary, with wrk if it is installed and with its Python load generator.
``benchmarks/run_all.py --quick`` runs every benchmark's smoke mode and must
keep their figures as JSON and refresh the marked blocks of a copy of the
performance page, and nothing else of it. No figure is checked: a timing
assertion would be a coin toss on a shared machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
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
    # Each round's own cost, and the mixed phase's standard error and
    # interval: how far the figures can be trusted on a shared machine.
    assert re.search(r"each round's own, min/median/max [-+]\d+\.\d%/[-+]\d+\.\d%/"
                     r"[-+]\d+\.\d%\)", proc.stdout), output
    assert re.search(r"mixed: .*\(standard error \d+\.\d us\).*95% interval "
                     r"[-+]\d+\.\d% to [-+]\d+\.\d%\)", proc.stdout), output
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


SQLALCHEMY_SCRIPT = SCRIPT.with_name("bench_sqlalchemy.py")


@pytest.mark.slow
@pytest.mark.services
def test_quick_sqlalchemy_benchmark_runs(postgres_dsn: str, tmp_path: Path) -> None:
    # Two cheroot servers (poodle's Engine and a plain QueuePool Engine) on
    # the PostgreSQL on loopback; exit 0 means no request failed.
    out = tmp_path / "sqlalchemy.json"
    proc = subprocess.run(
        [sys.executable, str(SQLALCHEMY_SCRIPT), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
        env={**os.environ, "POODLE_POSTGRES_DSN": postgres_dsn},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "ratio CPU per request, poodle/QueuePool (medians): " in proc.stdout, output
    assert "ratio worst wait (each round's max latency, medians), poodle/QueuePool: " in (
        proc.stdout), output
    assert "target, CPU per request poodle/QueuePool <= 1.05: " in proc.stdout, output
    assert "target, worst wait poodle/QueuePool <= 0.50: " in proc.stdout, output
    summary = json.loads(out.read_text())
    assert set(summary["ratios"]) == {"cpu", "worst_wait", "p99"}
    assert summary["failed"] is False


RUN_ALL = SCRIPT.with_name("run_all.py")


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.deploy
def test_run_all_quick_refreshes_the_figures(postgres_dsn: str, tmp_path: Path) -> None:
    # Every benchmark's smoke run, on a copy of the performance page: the
    # figures are kept as JSON and each marked block is replaced, the text
    # around the markers kept. No figure is checked.
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed (.ci/apt-packages)")
    page = tmp_path / "performance.rst"
    page.write_text(
        "Before.\n\n.. BEGIN figures:callgrind\n\nold figures\n\n.. END figures:callgrind\n\n"
        ".. BEGIN figures:deploy\n.. END figures:deploy\n\n"
        ".. BEGIN figures:threads\n.. END figures:threads\n\nAfter.\n"
    )
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(RUN_ALL), "--quick", "--out", str(out), "--docs", str(page)],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
        env={**os.environ, "POODLE_POSTGRES_DSN": postgres_dsn},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + "".join(
        p.read_text()[-3000:] for p in out.glob("*.txt"))
    summary = json.loads((out / "all.json").read_text())
    assert summary["quick"] is True
    assert list(summary["benchmarks"]) == [
        "pool", "tool", "callgrind", "callgrind_http", "app", "deploy", "threads", "sqlalchemy"]
    for name, record in summary["benchmarks"].items():
        assert record["returncode"] == 0, (name, record)
        assert json.loads((out / f"{name}.json").read_text()) == record["figures"]
    assert summary["benchmarks"]["callgrind"]["figures"]["instructions_on"] > 0
    assert summary["benchmarks"]["callgrind"]["figures"]["http"] is False
    assert summary["benchmarks"]["callgrind_http"]["figures"]["http"] is True
    assert "callgrind_tool.py --http" in summary["benchmarks"]["callgrind_http"]["command"]
    assert "cpu_workers_direct" in summary["benchmarks"]["deploy"]["figures"]["ratios"]
    text = page.read_text()
    assert "old figures" not in text
    assert text.startswith("Before.\n\n.. BEGIN figures:callgrind\n")
    assert text.endswith(".. END figures:threads\n\nAfter.\n")
    assert "instructions per hello request in-process" in text.lower()
    assert "2 workers' CPU per request / 1 worker's" in text
    assert "fewest CPU µs per request: gunicorn w1 at " in text
    assert text.count("a ``--quick`` smoke run, its figures mean nothing") == 3
    assert "refreshed " in proc.stdout


def test_run_all_refuses_an_unknown_benchmark(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(RUN_ALL), "--only", "pool,bogus", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown benchmark(s) ['bogus']" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing run, nothing written
