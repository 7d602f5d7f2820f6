"""tools.poodle leaves every body it need not touch as CherryPy sends it.

Over real HTTP: only a lazy body (a generator whose code has yet to run) is
run inside the transaction; a file goes out in CherryPy's 64 KiB chunks and
is closed at request end, and a ready list with a Content-Length of the
handler's own is sent as CherryPy sends it.
"""

from __future__ import annotations

import http.client
import sqlite3
import urllib.request
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import cherrypy
import pytest
from cherrypy.lib import file_generator
from cherrypy.lib.static import serve_file
from conftest import wait_until

from poodle_cherrypy import PoodlePlugin, Pool

FOUR_MIB = 4 * 1024 * 1024


class Bodies:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.responses: list[Any] = []
        self.files: list[IO[bytes]] = []

    @cherrypy.expose
    def served(self) -> Any:
        self.responses.append(cherrypy.serving.response)
        return serve_file(str(self.path), "application/octet-stream")

    # tools.encode (on by default) would put the file in CherryPy's reader
    # before any other code sees it: without it, the handler's file itself
    # comes back.
    @cherrypy.expose
    @cherrypy.config(**{"tools.encode.on": False})
    def opened(self) -> Any:
        f = open(self.path, "rb")  # noqa: SIM115  (CherryPy closes what a handler returns)
        self.files.append(f)
        return f

    # As in CherryPy's test: tools.encode would count the bytes itself.
    @cherrypy.expose
    @cherrypy.config(**{"tools.encode.on": False})
    def custom_cl(self) -> list[bytes]:
        # As CherryPy's test_conn.test_Content_Length_out_postheaders: the
        # handler declares fewer bytes than it sends, in chunks.
        cherrypy.serving.response.headers["Content-Length"] = "5"
        return [b"I too", b" have too many bytes"]


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(range(256)) * (FOUR_MIB // 256))
    return path


def serve(cp_server: str, big_file: Path, tool: dict[str, Any]) -> Bodies:
    pool = Pool(sqlite3.connect, (":memory:",), {"check_same_thread": False})
    PoodlePlugin(cherrypy.engine, {"default": pool}).subscribe()
    bodies = Bodies(big_file)
    cherrypy.tree.mount(bodies, "/", {"/": tool})
    cherrypy.engine.start()
    return bodies


MODES = {
    "tool off": {},
    "tool on": {"tools.poodle.on": True},
    "transaction": {"tools.poodle.on": True, "tools.poodle.transaction": True},
}


@pytest.mark.parametrize("mode", list(MODES))
def test_serve_file_goes_out_in_chunks_not_collapsed(
    cp_server: str, big_file: Path, mode: str
) -> None:
    bodies = serve(cp_server, big_file, MODES[mode])
    with urllib.request.urlopen(f"{cp_server}/served", timeout=60) as reply:
        assert reply.status == 200
        assert reply.read() == big_file.read_bytes()
    [response] = bodies.responses
    # CherryPy's own reader, 64 KiB at a time: not one 4 MiB chunk in memory.
    assert isinstance(response.body, file_generator), response.body
    assert response.body.chunkSize == 64 * 1024


@pytest.mark.parametrize("mode", list(MODES))
def test_a_file_returned_by_a_handler_is_closed_at_request_end(
    cp_server: str, big_file: Path, mode: str
) -> None:
    bodies = serve(cp_server, big_file, MODES[mode])
    with urllib.request.urlopen(f"{cp_server}/opened", timeout=60) as reply:
        assert reply.read() == big_file.read_bytes()
    [f] = bodies.files
    wait_until(lambda: f.closed, timeout=10, what="the returned file to be closed")


@pytest.mark.parametrize("mode", list(MODES))
def test_a_content_length_of_the_handlers_own_with_a_list_answers_as_cherrypy_does(
    cp_server: str, big_file: Path, mode: str
) -> None:
    serve(cp_server, big_file, MODES[mode])
    url = urlsplit(cp_server)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request("GET", "/custom_cl")
        reply = conn.getresponse()
        assert (reply.status, reply.read(5)) == (200, b"I too")
    finally:
        conn.close()
