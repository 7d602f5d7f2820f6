"""notes.py: a JSON notes service on PostgreSQL, its pool declared in notes.conf.

Run it next to notes.conf: ``python notes.py``.
"""

from __future__ import annotations

import cherrypy

import poodle_cherrypy  # registers tools.poodle and the poodle config namespace


class Notes:
    @cherrypy.expose
    @cherrypy.tools.json_out()
    def index(self) -> list[dict[str, object]]:
        rows = cherrypy.request.conn.execute("SELECT id, body FROM notes ORDER BY id")
        return [{"id": id_, "body": body} for id_, body in rows]

    @cherrypy.expose
    @cherrypy.tools.allow(methods=["POST"])
    @cherrypy.tools.json_out()
    def add(self, body: str) -> dict[str, object]:
        sql = "INSERT INTO notes (body) VALUES (%s) RETURNING id"
        (id_,) = cherrypy.request.conn.execute(sql, (body,)).fetchone()
        return {"id": id_}  # committed by tools.poodle.transaction: the status is 200


def create_table() -> None:
    with poodle_cherrypy.get_pool().get() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text NOT NULL)")
        conn.commit()


if __name__ == "__main__":
    # At engine start: after the pools open (priority 70), before the HTTP server listens (75).
    cherrypy.engine.subscribe("start", create_table, priority=72)
    # [global] declares the server and the pool, [/] switches tools.poodle on.
    cherrypy.quickstart(Notes(), "/", "notes.conf")
