"""Capacity (docs/capacity.md): workers that scale with the queue, and recycle on memory.

The policy (capacity.Scaler) is tested by itself on made-up looks; the
arbiter's use of it on real servers under real load.
"""

import re
import threading
import time

import pytest

from django_prefork.capacity import DOWN_WINDOW, LOOK_EVERY, Scaler

from .helpers import wait_until

RAW_APPS = "tests.fixtureapp.rawapps.application"
SCALING = re.compile(r"scaling (up|down) to (\d+) workers?")


# -- the policy, on made-up looks ------------------------------------------------------

def run(scaler, looks):
    """Feed (busy, queued) looks every LOOK_EVERY s; return the counts after each."""
    count, now, counts = scaler.floor, 0.0, []
    for busy, queued in looks:
        now += LOOK_EVERY
        scaler.look(now, min(busy, count), count, queued)
        delta, _ = scaler.decide(now, count)
        if delta:
            count += delta
            scaler.changed(now, delta)
        counts.append(count)
    return counts


def test_scales_up_one_a_second_while_saturated_and_queued():
    counts = run(Scaler(1, 4), [(9, 5)] * 12)
    assert counts[-1] == 4 and max(counts) == 4
    changes = [i for i in range(1, len(counts)) if counts[i] != counts[i - 1]]
    assert all(b - a >= 1.0 / LOOK_EVERY for a, b in zip(changes, changes[1:]))  # at most one a second


def test_one_look_with_a_queue_is_not_enough():
    assert run(Scaler(1, 4), [(1, 0), (1, 1), (1, 0), (1, 1), (1, 0)]) == [1] * 5


def test_no_queue_figure_means_all_busy_is_enough():
    assert run(Scaler(1, 2), [(5, None)] * 3)[-1] == 2


def test_steady_load_never_flaps():
    scaler = Scaler(1, 8)
    counts = run(scaler, [(9, 3)] * 8 + [(2, 0)] * 200)  # a burst, then two busy for 100 s
    tail = counts[8:]
    assert tail[-1] == 3  # the two busy, and one spare
    assert tail == sorted(tail, reverse=True), "it went up again: flapping"


def test_falls_back_to_the_floor_after_the_window():
    counts = run(Scaler(1, 4), [(9, 3)] * 10 + [(0, 0)] * 40)
    assert counts[9] == 4
    back = counts.index(1, 10)
    assert (back - 9) * LOOK_EVERY <= DOWN_WINDOW + 3 + LOOK_EVERY


def test_memory_short_blocks_scaling_up():
    scaler = Scaler(1, 4)
    scaler.look(0.5, 1, 1, 3)
    scaler.look(1.0, 1, 1, 3)
    assert scaler.decide(1.0, 1, room_for_one=False) == (0, "memory")


def test_ttin_past_the_ceiling_raises_it():
    scaler = Scaler(2, 3)
    scaler.move_floor(4)
    assert (scaler.floor, scaler.ceiling, scaler.enabled) == (4, 4, False)


# -- real servers ------------------------------------------------------------------------

def load(server, path, clients, seconds):
    """`clients` threads requesting `path` in a loop for `seconds`; returns (latencies, failures)."""
    latencies, failures = [], []
    stop_at = time.monotonic() + seconds

    def client():
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                status, _ = server.get(path, timeout=30)
            except OSError as exc:
                failures.append(repr(exc))
                continue
            if status != 200:
                failures.append(status)
            latencies.append(time.monotonic() - started)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return threads, latencies, failures


def scaling_events(server):
    return SCALING.findall(server.output)


def test_a_burst_scales_up_to_the_ceiling_and_back_to_the_floor(serve):
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_MAX_WORKERS": 4, "WSGI_APPLICATION": RAW_APPS})
    server.wait_workers(1)
    started = time.monotonic()
    threads, latencies, failures = load(server, "/sleep?0.2", 6, 8)
    wait_until(lambda: len(server.worker_pids()) == 4, timeout=5, message="4 workers within 5 s")
    assert time.monotonic() - started < 5
    for thread in threads:
        thread.join()
    assert failures == [] and len(latencies) > 50
    assert ("up", "4") in scaling_events(server)
    assert all(int(n) <= 4 for _, n in scaling_events(server))
    wait_until(lambda: len(server.worker_pids()) == 1, timeout=DOWN_WINDOW + 6,
               message="back to 1 worker within the documented idle time")
    assert scaling_events(server)[-1] == ("down", "1")


def test_steady_load_makes_no_scaling_event(serve):
    server = serve(settings={"PREFORK_WORKERS": 2, "PREFORK_MAX_WORKERS": 4, "WSGI_APPLICATION": RAW_APPS})
    server.wait_workers(2)
    threads, latencies, failures = load(server, "/sleep?0.2", 2, 10)
    for thread in threads:
        thread.join()
    assert failures == [] and len(latencies) > 50
    assert scaling_events(server) == [], "two clients on two workers must not scale"
    assert len(server.worker_pids()) == 2


def test_a_worker_past_the_memory_limit_is_replaced_after_its_request(serve):
    server = serve(settings={"PREFORK_WORKERS": 2, "PREFORK_MAX_WORKER_MEMORY": 40, "WSGI_APPLICATION": RAW_APPS})
    workers = server.wait_workers(2)
    threads, latencies, failures = load(server, "/rss", 2, 6)
    try:
        status, body = server.get("/hog?60")
        assert status == 200
        hog = int(body)
        assert hog in workers
        server.wait_for(rf"worker \d+ \(pid {hog}\): it uses \d+ MiB of its own \(USS\), past "
                        r"PREFORK_MAX_WORKER_MEMORY 40 MiB; recycling it", timeout=10)
        wait_until(lambda: hog not in server.worker_pids(), timeout=10, message="the big worker gone")
        assert len(server.wait_workers(2)) == 2
    finally:
        for thread in threads:
            thread.join()
    assert failures == [] and latencies


@pytest.mark.parametrize("settings, check_id", [
    ({"PREFORK_WORKERS": 4, "PREFORK_MAX_WORKERS": 2}, "prefork.E051"),
    ({"PREFORK_MAX_WORKER_MEMORY": -1}, "prefork.E021"),
    ({"PREFORK_MAX_WORKERS": 0}, "prefork.E020"),
])
def test_bad_capacity_settings_fail_the_checks(serve, settings, check_id):
    server = serve(settings=settings, wait=False)
    server.wait_exit(1)
    assert check_id in server.output and "HINT" in server.output
