"""Filling to min_size: ``open(wait=True)`` waits for every fill, ``close()`` stops them."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from conftest import wait_until

from poodle_cherrypy import Pool, PoolTimeout


class SlowFactory:
    """Connections that take ``delay`` seconds to open (or block on ``gate``)."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay = delay
        self.gate = gate
        self.calls = 0
        self.fail = False
        self.lock = threading.Lock()

    def __call__(self) -> object:
        with self.lock:
            self.calls += 1
        if self.gate is not None:
            self.gate.wait(30)
        time.sleep(self.delay)
        if self.fail:
            raise ConnectionRefusedError("the database is down")
        return object()


def fill_threads(pool: Pool[Any]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"{pool.name}-fill"]


def test_open_wait_waits_for_the_slots_a_background_fill_reserved() -> None:
    factory = SlowFactory(delay=0.2)
    pool = Pool(factory, min_size=4, max_size=4)
    try:
        pool.open()  # a background fill reserves all four slots
        pool.open(wait=True)
        stats = pool.stats()
        assert (stats.idle, stats.pending, stats.size) == (4, 0, 4), stats
    finally:
        pool.close()


def test_open_wait_gives_up_after_the_pools_timeout() -> None:
    gate = threading.Event()
    pool = Pool(SlowFactory(gate=gate), min_size=2, max_size=2, timeout=0.5)
    try:
        pool.open()
        with pytest.raises(PoolTimeout, match=r"pool '.+': .*2 connection\(s\) still being opened"):
            pool.open(wait=True)
    finally:
        gate.set()
        pool.close()


def test_open_wait_raises_when_the_background_fill_it_waited_for_failed() -> None:
    factory = SlowFactory(delay=0.2)
    factory.fail = True
    pool = Pool(factory, min_size=2, max_size=2, fail_fast_after=0)
    try:
        pool.open()
        with pytest.raises(ConnectionRefusedError):
            pool.open(wait=True)
        assert pool.stats().pending == 0
    finally:
        pool.close()


def test_close_stops_a_background_fill_at_its_current_connect() -> None:
    factory = SlowFactory(delay=0.3)
    pool = Pool(factory, min_size=4, max_size=4)
    pool.open()
    wait_until(lambda: factory.calls == 1, what="the fill's first connect")
    pool.close()
    calls_at_close = factory.calls
    wait_until(lambda: not fill_threads(pool), timeout=10, what="the fill thread to end")
    assert (calls_at_close, factory.calls) == (1, 1)
    stats = pool.stats()
    assert (stats.size, stats.pending, stats.idle) == (0, 0, 0), stats


def test_a_pool_reopened_after_close_fills_again() -> None:
    factory = SlowFactory(delay=0.1)
    pool = Pool(factory, min_size=3, max_size=3)
    pool.open()
    wait_until(lambda: factory.calls == 1, what="the fill's first connect")
    pool.close()
    pool.open(wait=True)
    try:
        stats = pool.stats()
        assert (stats.idle, stats.size, stats.pending) == (3, 3, 0), stats
    finally:
        pool.close()
