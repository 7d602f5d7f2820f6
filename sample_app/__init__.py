"""sample_app: a CouchDB-like JSON document store served by CherryPy on poodle_cherrypy.

``python -m sample_app`` serves it on http://127.0.0.1:8080 with an SQLite file
in ``./data``, or on PostgreSQL with ``--database postgresql://...``. The
modules, one per concern:

- :mod:`sample_app.cli`: the options and their environment variables; the run.
- :mod:`sample_app.wsgi`: the WSGI application for gunicorn and uWSGI.
- :mod:`sample_app.daemon`: the module ``cherryd -i`` imports.
- :mod:`sample_app.app`: the CherryPy application, its config and plugins.
- :mod:`sample_app.api`: the JSON API handlers and JSON errors.
- :mod:`sample_app.store`: the documents' SQL and revisions.
- :mod:`sample_app.db`: connection factories and dialect differences.
- :mod:`sample_app.history`: the pool sampler behind the page's chart.
- :mod:`sample_app.web`: the HTML page (files in ``static/``).

It uses only poodle_cherrypy's public API: ``PoodlePlugin`` and the
``poodle`` config namespace declare the pool named ``"default"``, and
``tools.poodle`` hands each ``/docs`` request its connection.
"""

from __future__ import annotations

from .app import SampleApp

__all__ = ["SampleApp"]
