"""App threads (PREFORK_THREADS): a worker runs several complete requests at once.

Against live servers: concurrency, the per-thread watchdog, a drain on TERM,
busy threads in the status document. The records each thread writes are
tested in test_heartbeat.py, their place in a slot in test_scoreboard.py.
"""

import http.client
import json
import signal
import threading
import time
import types

from .helpers import wait_until

RAW_APPS = "tests.fixtureapp.rawapps.application"


def get(server, path, results, timeout=15):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        results.append((response.status, response.read(), time.monotonic()))
    except (OSError, http.client.HTTPException) as exc:
        results.append((None, repr(exc).encode(), time.monotonic()))
    finally:
        conn.close()


def at_once(server, path, count, timeout=15):
    results = []
    threads = [threading.Thread(target=get, args=(server, path, results, timeout)) for _ in range(count)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return started, results


def test_sixteen_waiting_requests_run_at_once_on_two_workers_of_eight_threads(serve):
    server = serve(settings={"PREFORK_WORKERS": 2, "PREFORK_THREADS": 8, "WSGI_APPLICATION": RAW_APPS})
    server.wait_workers(2)
    server.wait_for(r"2 sync workers × 8 threads, slow clients held by an event loop; at most 16 requests at once")
    at_once(server, "/sleep?0.01", 16)  # every thread has run once: imports and connections warm
    started, results = at_once(server, "/sleep?0.2", 16)
    assert [status for status, _, _ in results] == [200] * 16
    assert max(done for _, _, done in results) - started < 0.5, "the requests did not run at once"
    assert len({body for _, body, _ in results}) == 2  # both workers (each answers its pid)


def test_the_environ_says_multithread(serve):
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_THREADS": 2, "WSGI_APPLICATION": RAW_APPS})
    server.wait_workers(1)
    status, body = server.get("/echo")
    assert status == 200 and json.loads(body)["wsgi.multithread"] is True


def test_a_stuck_thread_is_reported_with_its_stack_answered_500_and_its_siblings_finish(serve):
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_THREADS": 4, "PREFORK_TIMEOUT": 3,
                             "PREFORK_GRACEFUL_TIMEOUT": 10, "WSGI_APPLICATION": RAW_APPS})
    (worker,) = server.wait_workers(1)
    stuck, siblings = [], []
    threads = [threading.Thread(target=get, args=(server, "/sleep?30", stuck))]
    threads += [threading.Thread(target=get, args=(server, "/sleep?1.5", siblings)) for _ in range(2)]
    threads[0].start()
    wait_until(lambda: _busy(server) == 1, message="the stuck request running")
    time.sleep(1.8)  # the siblings start later, so they are running when the stuck one times out (at 3 s)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert stuck[0][0] == 500 and b"timed out" in stuck[0][1]
    assert [status for status, _, _ in siblings] == [200, 200], siblings  # its siblings' requests complete
    server.wait_for(r"thread \d timed out after \d s serving GET /sleep\?30; the request's stack:")
    assert "in sleep" in server.output  # the stuck thread's own stack, not the main thread's
    server.wait_for("one of its threads timed out; recycling it")  # the successor is forked first
    wait_until(lambda: worker not in server.worker_pids(), timeout=15, message="the stuck worker gone")
    assert server.get("/pid")[0] == 200


def test_term_drains_the_requests_every_thread_holds(serve):
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_THREADS": 4, "WSGI_APPLICATION": RAW_APPS})
    server.wait_workers(1)
    results = []
    threads = [threading.Thread(target=get, args=(server, "/sleep?1", results)) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: _busy(server) == 4, message="four threads busy")
    assert server.stop(signal.SIGTERM) == 0
    for thread in threads:
        thread.join(10)
    assert [status for status, _, _ in results] == [200] * 4


def _busy(server):
    from .helpers import busy_workers

    return busy_workers(server)


def test_status_counts_busy_threads(serve):
    from django_prefork.management.commands.preforkstatus import fetch_status

    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_THREADS": 3, "WSGI_APPLICATION": RAW_APPS})
    server.wait_workers(1)
    results = []
    threads = [threading.Thread(target=get, args=(server, "/sleep?1.5", results)) for _ in range(2)]
    for thread in threads:
        thread.start()
    doc = wait_until(lambda: (d := fetch_status(server.pid))["busy"] == 2 and d, message="two busy threads")
    assert doc["threads"] == 3 and doc["busy_workers"] == 1
    (row,) = doc["worker_list"]
    assert sum(1 for t in row["threads"] if t["request"] == "GET /sleep?1.5") == 2
    for thread in threads:
        thread.join(10)


def test_a_new_connection_is_not_starved_by_kept_ones(serve):
    # Kept connections bring requests as fast as the threads serve them; a connection waiting
    # in the listen queue still gets its turn (found by the io benchmark: waits past 2 s).
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_THREADS": 2, "WSGI_APPLICATION": RAW_APPS})
    server.wait_workers(1)
    stop = time.monotonic() + 4

    def kept_client():
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
        while time.monotonic() < stop:
            conn.request("GET", "/sleep?0.02")
            conn.getresponse().read()
        conn.close()

    loops = [threading.Thread(target=kept_client) for _ in range(6)]
    for loop in loops:
        loop.start()
    time.sleep(0.5)  # the kept clients are under way: what is measured is a newcomer among them
    waits = []
    while time.monotonic() < stop - 0.5:
        results, started = [], time.monotonic()
        get(server, "/sleep?0.02", results)
        assert results[0][0] == 200, results
        waits.append(results[0][2] - started)
    for loop in loops:
        loop.join()
    assert len(waits) >= 3 and max(waits) < 1.0, waits


# -- unit: the pool's bookkeeping, no server ---------------------------------------------------

def test_the_pool_counts_free_threads_and_hands_back_what_they_finished(tmp_path):
    import socket as socket_module

    from django_prefork import conf
    from django_prefork.heartbeat import Heartbeat
    from django_prefork.sockets import Listener
    from django_prefork.threads import AppThreads

    listener = Listener(socket_module.create_server(("127.0.0.1", 0)))
    worker = types.SimpleNamespace(
        heartbeat=Heartbeat(str(tmp_path)), listeners=[listener], number=1, slot=None, recycle=False,
        config=conf.Config.load(), last_request=lambda: False,
    )
    pool = AppThreads(worker, app=None, count=1, may_queue=None)
    try:
        assert pool.free == 1 and pool.idle()
        pool.free -= 1  # as dispatch() does, without a thread to take it
        pool.done.append((0, "conn", 200, 5, 0.01))
        assert pool.collect() == [(0, "conn", 200, 5, 0.01)] and pool.free == 1
        pool.timed_out.add(0)  # a stuck thread is not waited for
        pool.free -= 1
        assert pool.idle()
        assert not pool.watch(time.monotonic(), 30)  # no request in hand: nothing to judge
    finally:
        listener.close()
        worker.heartbeat.close()
