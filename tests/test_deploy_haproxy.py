"""Two hosts of the sample app behind HAProxy (deploy/haproxy.cfg), each a
gunicorn through its own PgBouncer, HAProxy checking ``GET /health``
(:class:`poodle_cherrypy.PoodleHealth`). Under load through HAProxy, stopping
one host's PgBouncer takes that host out of rotation within its check
interval, with no 5xx but for the requests in flight until then; started
again, the host comes back by itself and serves.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from deployment import (
    HAProxy,
    Load,
    PgBouncer,
    dbname,
    free_port,
    gunicorn,
    pgbouncer_app_config,
    seed,
    wait_for,
    workers_serving,
)

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.deploy]

#: How long after HAProxy marked the host down a request may still have been in flight.
IN_FLIGHT = 1.0


def test_haproxy_routes_around_a_host_whose_database_path_is_down(
    database: str, tmp_path: Path
) -> None:
    bouncers = [PgBouncer(tmp_path, database, name=f"pgbouncer{n}") for n in range(2)]
    ports = [free_port(), free_port()]
    hosts = [
        gunicorn(tmp_path, ports[n], None, workers=1, threads=8, name=f"gunicorn{n}",
                 config=pgbouncer_app_config(tmp_path, bouncers[n].port, dbname(database),
                                             name=f"app{n}.conf"))
        for n in range(2)
    ]
    balancer = None
    try:
        workers = [workers_serving(host.pid, ports[n], 1, log=host.log)[0]
                   for n, host in enumerate(hosts)]
        balancer = HAProxy(tmp_path, ports)
        wait_for(lambda: balancer.server_states() == {"app0": "UP", "app1": "UP"}, 30,
                 "both hosts UP", balancer.log)
        load = Load(balancer.port, clients=16, doc_ids=seed(balancer.port)).start()
        try:
            time.sleep(2)
            assert set(workers) <= load.pids, (workers, load.pids)
            assert not load.failures(), load.failures()[:5]
            assert balancer.server_states() == {"app0": "UP", "app1": "UP"}  # busy is not down

            stopped_at = time.monotonic()
            bouncers[0].send(signal.SIGTERM)  # PgBouncer 1.18: immediate shutdown
            wait_for(lambda: balancer.server_states()["app0"] == "DOWN", 10,
                     "app0 DOWN", balancer.log)
            down_at = time.monotonic()
            bouncers[0].stop()
            time.sleep(2)
            served_by_1 = load.count(down_at + IN_FLIGHT)
            bouncers[0] = PgBouncer(tmp_path, database, name="pgbouncer0b",
                                    port=bouncers[0].port)
            wait_for(lambda: balancer.server_states()["app0"] == "UP", 30,
                     "app0 UP again", balancer.log)
            up_at = time.monotonic()
            load.pids.clear()
            wait_for(lambda: workers[0] in load.pids, 10, "host 0 serving again")
            time.sleep(1)
        finally:
            load.stop()
        failures = load.failures(stopped_at)
        # only requests in flight before HAProxy took the host out failed
        assert all(t <= down_at + IN_FLIGHT for t, _, _ in failures), failures
        assert not load.failures(down_at + IN_FLIGHT)
        assert served_by_1 > 0
        assert load.count(up_at) > 0
        print(f"down after {down_at - stopped_at:.2f} s; {len(failures)} requests failed "
              f"in flight ({sorted({str(what) for _, _, what in failures})}); "
              f"up {up_at - stopped_at:.2f} s after the stop")
    finally:
        if balancer is not None:
            balancer.stop()
        for host in hosts:
            host.stop()
        for bouncer in bouncers:
            bouncer.stop()
