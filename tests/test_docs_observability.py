"""docs/observability.rst's examples are real code: every ``.. code-block::
python`` runs here, as tests/test_readme.py runs README.rst's (a fresh
namespace, a temporary working directory, ``__name__ == "readme"``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_readme import python_blocks

DOC = Path(__file__).resolve().parent.parent / "docs" / "observability.rst"
BLOCKS = python_blocks(DOC.read_text(encoding="utf-8"))


@pytest.fixture
def logger_restored() -> Iterator[None]:
    """The logging example configures the poodle_cherrypy logger: undo it."""
    logger = logging.getLogger("poodle_cherrypy")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_doc_has_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_doc_example_runs(
    line: int,
    code: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cp_engine: Any,
    logger_restored: None,
) -> None:
    pytest.importorskip("opentelemetry.sdk.metrics")
    pytest.importorskip("prometheus_client")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"observability.rst:{line}", "exec"), {"__name__": "readme"})
