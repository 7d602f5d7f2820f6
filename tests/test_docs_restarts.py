"""docs/restarts.rst's examples run, as README.rst's do (see test_readme.py).

The docs helper may replace this with one test for every page in docs/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from test_readme import _NEEDS, python_blocks

PAGE = Path(__file__).resolve().parent.parent / "docs" / "restarts.rst"
BLOCKS = python_blocks(PAGE.read_text(encoding="utf-8"))


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_example_runs(
    line: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cp_engine: Any
) -> None:
    for match in re.finditer(r"^# needs: (.+)$", code, re.MULTILINE):
        for need in match.group(1).split(","):
            _NEEDS[need.strip()]()
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"restarts.rst:{line}", "exec"), {"__name__": "readme"})
