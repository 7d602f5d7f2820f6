"""What the package claims about Python versions is what CI runs, and the
suite's warning filter still fails a test on an unraisable exception of ours."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUPPORTED = ["3.10", "3.11", "3.12", "3.13"]


def test_python_requires_classifiers_and_tools_claim_3_10_to_3_13() -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg", encoding="utf-8")
    assert setup["options"]["python_requires"] == ">=3.10"
    classifiers = setup["metadata"]["classifiers"].split("\n")
    versions = sorted(
        (c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(r".*:: 3\.\d+", c)),
        key=lambda v: tuple(map(int, v.split("."))),
    )
    assert versions == SUPPORTED
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'target-version = "py310"' in pyproject
    assert 'python_version = "3.10"' in pyproject
    assert sys.version_info[:2] >= (3, 10)


def test_ci_runs_every_supported_python() -> None:
    run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert f"for version in {' '.join(SUPPORTED)}; do" in run
    # The other Pythons run everything but the browser and the load tests.
    assert '-m "not browser and not slow"' in run


def test_an_unraisable_exception_of_ours_still_fails_the_test(tmp_path: Path) -> None:
    (tmp_path / "test_unraisable.py").write_text(textwrap.dedent("""
        import gc

        class Leaky:
            def __del__(self):
                raise OSError(9, "Bad file descriptor")

        def test_it():
            Leaky()
            gc.collect()
    """), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-q", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PytestUnraisableExceptionWarning" in done.stdout, done.stdout
