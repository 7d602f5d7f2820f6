"""The sizing lines PoodlePlugin logs at start: each pool's max_size against the
threads of the CherryPy server subscribed to the bus, and nothing when none is
(under a WSGI server)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import cherrypy
import pytest

from poodle_cherrypy import PoodlePlugin, Pool


def start_and_log(cp_engine: Any, max_size: int, tmp_path: Path) -> list[tuple[str, int]]:
    lines: list[tuple[str, int]] = []

    def listen(msg: str, level: int = logging.INFO, *args: Any, **kwargs: Any) -> None:
        if "max_size" in msg:
            lines.append((msg, level))

    cp_engine.subscribe("log", listen)
    try:
        pool: Pool[Any] = Pool(sqlite3.connect, (str(tmp_path / "a.db"),),
                               {"check_same_thread": False}, max_size=max_size)
        PoodlePlugin(cp_engine, {"default": pool}).subscribe()
        cp_engine.start()
        cp_engine.stop()
    finally:
        cp_engine.unsubscribe("log", listen)
    return lines


@pytest.mark.parametrize(
    ("max_size", "level", "text"),
    [
        (20, logging.WARNING, "4 of them can never be in use (lower max_size to 16)"),
        (10, logging.INFO, "up to 6 requests may wait for a connection"),
        (16, logging.INFO, "one connection per thread"),
    ],
)
def test_max_size_against_the_servers_threads(
    cp_server: str, cp_engine: Any, tmp_path: Path, max_size: int, level: int, text: str
) -> None:
    assert cherrypy.server.thread_pool == 16  # cp_server's
    [(message, logged)] = start_and_log(cp_engine, max_size, tmp_path)
    assert logged == level
    assert text in message and "'default'" in message


def test_nothing_when_no_cherrypy_server_serves(cp_engine: Any, tmp_path: Path) -> None:
    # cp_engine has cherrypy.server unsubscribed, as start_engine_in_worker does
    assert start_and_log(cp_engine, 50, tmp_path) == []
