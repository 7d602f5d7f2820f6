"""The pools pre-fill after CherryPy drops privileges, and are usable before.

``DropPrivileges`` starts at priority 77, after the HTTP server (75) bound
its port: a connection opened before then authenticates as root (peer auth
over a Unix socket). The pools open at 70 and pre-fill after 77.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cherrypy
import pytest

from poodle_cherrypy import PoodlePlugin, Pool

_DROPPING = """
import os, pwd, cherrypy, poodle_cherrypy
from cherrypy.process.plugins import DropPrivileges

nobody = pwd.getpwnam("nobody")
euids = []

def factory():
    euids.append(os.geteuid())
    return object()

cherrypy.config.update({"environment": "test_suite", "log.screen": True})
cherrypy.server.unsubscribe()
DropPrivileges(cherrypy.engine, uid=nobody.pw_uid, gid=nobody.pw_gid).subscribe()
plugin = poodle_cherrypy.PoodlePlugin(
    cherrypy.engine, {"default": poodle_cherrypy.Pool(factory, min_size=3, max_size=4)})
plugin.subscribe()
cherrypy.engine.start()
with plugin.pools["default"].get():
    pass
print("EUIDS", sorted(set(euids)), len(euids), nobody.pw_uid, flush=True)
cherrypy.engine.exit()
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="dropping privileges needs root")
def test_pools_pre_fill_after_dropping_privileges(tmp_path: Path) -> None:
    # In a process of its own: dropping privileges cannot be undone.
    tmp_path.chmod(0o755)
    done = subprocess.run(
        [sys.executable, "-c", _DROPPING], capture_output=True, text=True, timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("EUIDS")]
    _, euids, count, nobody = line.split(" ", 3)
    assert (euids, count) == (f"[{nobody}]", "3"), done.stdout + done.stderr


def test_pools_are_open_from_priority_70_and_filled_after_77(cp_engine: Any) -> None:
    pool = Pool(object, min_size=2, max_size=4)
    PoodlePlugin(cherrypy.engine, {"default": pool}).subscribe()
    cherrypy.engine.start()
    cherrypy.engine.stop()
    assert pool.closed
    seen: dict[int, tuple[bool, int]] = {}

    def look(priority: int) -> Any:
        def listener() -> None:
            seen[priority] = (pool.closed, pool.stats().size)
        listener.priority = priority  # type: ignore[attr-defined]
        return listener

    listeners = [look(71), look(77)]
    for listener in listeners:
        cherrypy.engine.subscribe("start", listener, priority=listener.priority)
    try:
        cherrypy.engine.start()
    finally:
        for listener in listeners:
            cherrypy.engine.unsubscribe("start", listener)
    # Open (usable) at 71, and nothing connected yet at 77.
    assert seen == {71: (False, 0), 77: (False, 0)}
    stats = pool.stats()
    assert (stats.idle, stats.size) == (2, 2), stats
