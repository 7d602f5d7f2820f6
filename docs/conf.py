"""Sphinx configuration for poodle_cherrypy's docs (built by .ci/run with -W)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # autodoc imports the checkout's poodle_cherrypy

import poodle_cherrypy  # noqa: E402

project = "poodle_cherrypy"
author = "poodle_cherrypy developers"
copyright = "2026, poodle_cherrypy developers"
release = poodle_cherrypy.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
exclude_patterns = ["_build"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}
# Optional dependencies of the metrics exporters: the API reference documents
# those modules without them installed.
autodoc_mock_imports = ["opentelemetry", "prometheus_client"]

html_theme = "furo"
html_title = f"poodle_cherrypy {release}"
