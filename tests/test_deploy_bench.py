"""benchmarks/bench_deploy.py is a script, not a timed test: this runs its
``--quick`` smoke mode (real gunicorn and PgBouncer), so that it cannot rot.
No figure is checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_deploy.py"

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.deploy]


def test_bench_deploy_quick_runs(postgres_dsn: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--dsn", postgres_dsn],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("ratio    CPU per request (app processes), 2 workers / 1 worker")
               for line in lines), result.stdout
    assert any(line.startswith("ratio    2 workers / 1 worker") for line in lines), result.stdout
    assert any(line.startswith("ratio    PgBouncer / direct") for line in lines), result.stdout
    summary = json.loads(lines[-1])
    assert set(summary["ratios"]) == {
        "cpu_workers_direct", "cpu_workers_pgbouncer",
        "workers_direct", "workers_pgbouncer", "pgbouncer_w1", "pgbouncer_w2"
    }
    for name, figures in summary["figures"].items():
        # every server's processes used CPU (a second of requests is many
        # clock ticks); PgBouncer's is counted for the PgBouncer servers only
        assert figures["app"]["min"] > 0, (name, figures)
        if name.endswith("direct"):
            assert figures["pgbouncer"]["max"] == 0, (name, figures)
    # PgBouncer capped the server connections at its pool
    assert 1 <= summary["sessions"]["w2 pgbouncer"] <= 4


THREADS = BENCH.parent / "bench_threads.py"


def test_bench_threads_quick_runs(postgres_dsn: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(THREADS), "--quick", "--dsn", postgres_dsn],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    # gunicorn with 1 and 2 workers, and cheroot, at 1 and 2 threads each
    assert set(summary["figures"]) == {
        "gunicorn w1 t1", "gunicorn w1 t2", "gunicorn w2 t1", "gunicorn w2 t2",
        "cheroot t1", "cheroot t2",
    }
    for name, figures in summary["figures"].items():
        assert figures["app"]["min"] > 0, (name, figures)  # its processes were counted
        assert figures["rate"]["min"] > 0, (name, figures)
    assert set(summary["best"]) == {"gunicorn w1", "gunicorn w2", "cheroot"}
    assert all(best in (1, 2) for best in summary["best"].values())
    assert sum(line.startswith("best     ") for line in lines) == 3, result.stdout


def test_bench_threads_refuses_a_bad_thread_count(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(THREADS), "--threads", "2,zero"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "'2,zero'" in result.stderr, result.stderr
