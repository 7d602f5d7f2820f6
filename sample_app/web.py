"""The HTML page at ``/``: plain HTML, CSS and a little JavaScript from ``static/``.

No build step and nothing from a CDN: the files are served as they are. The
page talks to the JSON API (``/docs``, ``/status``) like any other client;
``/metrics`` is for Prometheus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from cherrypy.lib.static import serve_file

from poodle_cherrypy import PoodleHealth

from .api import DocsAPI, MetricsAPI, StatusAPI, expose

__all__ = ["STATIC_DIR", "Root"]

#: The page's files, served under ``/static/``.
STATIC_DIR = Path(__file__).resolve().parent / "static"


class Root:
    """``/`` (the page), with the API mounted under it."""

    def __init__(
        self,
        docs: DocsAPI,
        status: StatusAPI,
        metrics: MetricsAPI,
        health: Optional[PoodleHealth] = None,
    ) -> None:
        self.docs = docs
        self.status = status
        self.metrics = metrics
        self.health = health

    @expose
    def index(self) -> Any:
        """The page."""
        return serve_file(str(STATIC_DIR / "index.html"), content_type="text/html; charset=utf-8")
