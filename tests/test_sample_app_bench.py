"""benchmarks/bench_app.py is a script, not a timed test: this only runs its
``--quick`` smoke mode, so that it cannot rot. It needs the PostgreSQL on
loopback (skipped without it; failed under POODLE_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_app.py"


@pytest.mark.services
def test_bench_app_quick_runs(postgres_dsn: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--dsn", postgres_dsn],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("ratio ") for line in lines), result.stdout
    summary = json.loads(lines[-1])
    assert summary["pooled"] > 0 and summary["connect"] > 0 and summary["ratio"] > 0
