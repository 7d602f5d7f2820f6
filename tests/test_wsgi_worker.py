"""poodle_cherrypy.wsgi: the engine started once per process, after a fork.

Each test runs a script in a fresh interpreter (CherryPy's engine is
process-global): it imports the sample app's WSGI module as a master would,
forks as gunicorn or uWSGI does, and serves a request in the child through
the WSGI callable.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PRELUDE = """
import json, os, signal, sys
from cherrypy.process.wspbus import states
import cherrypy

def call(app, path):
    import webtest
    response = webtest.TestApp(app).get(path, expect_errors=True)
    return response.status, response.body
"""


def run(script: str, tmp_path: Path) -> dict[str, object]:
    env = {"PYTHONPATH": str(ROOT), "SAMPLE_APP_DATABASE": str(tmp_path / "docs.sqlite3"),
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["log"] = proc.stderr
    return result


def test_the_master_imports_the_app_opens_nothing_and_each_child_starts_its_own(
    tmp_path: Path,
) -> None:
    result = run(
        """
        from sample_app.wsgi import application
        from poodle_cherrypy import get_pool
        master = {"state": str(cherrypy.engine.state), "size": get_pool().stats().size}
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            status, body = call(application, "/status")
            child = {
                "status": status, "pid": os.getpid(), "body_pid": json.loads(body)["pid"],
                "state": str(cherrypy.engine.state),
                "server": cherrypy.server.httpserver is None,
                "sigterm": signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,
                "again": application.start(),
            }
            os.write(w, json.dumps(child).encode())
            os.close(w)
            sys.exit(0)  # atexit stops the engine: the pool is closed
        os.close(w)
        child = json.loads(os.read(r, 65536))
        _, code = os.waitpid(pid, 0)
        master["after"] = str(cherrypy.engine.state)
        print(json.dumps({"master": master, "child": child, "code": code}))
        """,
        tmp_path,
    )
    master, child = result["master"], result["child"]
    assert master == {"state": "states.STOPPED", "size": 0, "after": "states.STOPPED"}
    assert child["status"] == "200 OK"
    assert child["pid"] == child["body_pid"]
    assert child["state"] == "states.STARTED"
    assert child["server"], "CherryPy's own HTTP server started"
    assert child["sigterm"], "CherryPy took over SIGTERM"
    assert child["again"] is False
    assert result["code"] == 0
    log = str(result["log"])
    assert log.count("Bus STARTED") == 1
    assert "closed pool 'default'" in log and "Bus EXITED" in log
    assert "Serving on" not in log
    assert "max_size" not in log  # no sizing line: no CherryPy server serves


def test_an_engine_started_before_the_fork_is_refused_in_the_child(tmp_path: Path) -> None:
    result = run(
        """
        from poodle_cherrypy.wsgi import start_engine_in_worker, stop_engine_in_worker
        cherrypy.config.update({"environment": "embedded"})
        first = start_engine_in_worker()
        pid = os.fork()
        if pid == 0:
            try:
                start_engine_in_worker()
            except RuntimeError as exc:
                print(exc, file=sys.stderr)
                os._exit(3)
            os._exit(0)
        _, code = os.waitpid(pid, 0)
        print(json.dumps({"first": first, "child": os.waitstatus_to_exitcode(code),
                          "stopped": stop_engine_in_worker(), "again": stop_engine_in_worker()}))
        """,
        tmp_path,
    )
    assert result["first"] is True
    assert result["child"] == 3
    assert "before this process" in str(result["log"])
    assert (result["stopped"], result["again"]) == (True, False)
