"""PREFORK_REFORK_AFTER: a warmed worker becomes the mold the next workers are forked from.

Real servers, 4 workers, the /warm view of rawapps.py building a large
module-level cache on first use: after the refork the workers' USS and their
PSS sum fall, with no failed request across the promotion under load; a
worker running a thread of its own is refused as the mold; TERM and HUP during
a refork lose nothing.
"""

import http.client
import os
import re
import signal
import threading
import time

from django_prefork import conf, refork

from .helpers import Server, alive, children, hand_snapshot, wait_until

RAW_APPS = "tests.fixtureapp.rawapps.application"
MIB = 1048576


def smaps(pid):
    """(USS, PSS) of `pid` in bytes, from /proc/PID/smaps_rollup."""
    uss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("Private_Clean", "Private_Dirty"):
                uss += int(rest.split()[0]) * 1024
            elif name == "Pss":
                pss = int(rest.split()[0]) * 1024
    return uss, pss


class Load:
    """Clients on persistent connections (so the workers' hand-off thread runs), counting failures."""

    def __init__(self, server, clients=4, path="/warm", keepalive=True):
        self.server, self.path = server, path
        self.headers = {} if keepalive else {"Connection": "close"}
        self.ok = 0
        self.failures = []
        self.pids = set()
        self.running = True
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.running = False
        for t in self.threads:
            t.join(30)

    def client(self):
        conn = None
        while self.running:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=20)
            fresh = conn.sock is None
            try:
                conn.request("GET", self.path, headers=self.headers)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    raise AssertionError(f"status {response.status}: {body[:200]!r}")
                with self.lock:
                    self.ok += 1
                    self.pids.add(int(body.split()[0]))
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                conn.close()
                conn = None
                if fresh:  # a new connection that got no answer: a lost request
                    self.failures.append(repr(exc))
                # else: a keep-alive connection the server closed while idle, as HTTP allows: retried
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                self.failures.append(repr(exc))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


def processes(server, kind):
    """The arbiters' children whose title names `kind` ("worker", "mold")."""
    found = []
    for arbiter in server.arbiter_pids():
        for pid in children(arbiter):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if kind.encode() in f.read():
                    found.append(pid)
    return found


def serving_workers(server):
    """The workers of every generation (the mold excluded: it serves nothing)."""
    return processes(server, "worker")


def mold_pids(server):
    return processes(server, "mold")


def refork_server(counts, workers=4, **settings):
    return Server(settings={"PREFORK_WORKERS": workers, "WSGI_APPLICATION": RAW_APPS,
                            "PREFORK_REFORK_AFTER": counts, "PREFORK_GRACEFUL_TIMEOUT": 10, **settings})


def warm_every_worker(server, count):
    """Until each of the `count` workers answered /warm (each built its cache)."""
    with Load(server, clients=8) as load:
        wait_until(lambda: len(load.pids) >= count, timeout=30, message="every worker warmed")
    assert not load.failures, load.failures
    return load.pids


def load_until(server, pattern, timeout=60, **options):
    """A load (Load's options) until the log says `pattern`; every request of it answered. The match."""
    with Load(server, **options) as load:
        match = server.wait_for(pattern, timeout=timeout)
    assert not load.failures, load.failures
    return match


def test_the_setting_is_off_by_default_and_validated():
    setting = conf.BY_NAME["PREFORK_REFORK_AFTER"]
    assert setting.default == ()
    assert setting.valid([50, 100, 1000]) and setting.valid([])
    assert not setting.valid([0]) and not setting.valid("50") and not setting.valid([True])
    assert setting.valid.parse("50, 100") == [50, 100]
    assert refork.threshold((), 0, False) == 0
    assert refork.threshold((50, 100), 0, False) == 50
    assert refork.threshold((50, 100), 1, True) == 100
    assert refork.threshold((50, 100), 2, True) == 0  # the list is done: the last mold stays
    assert refork.threshold((50, 100), 2, False) == 100  # ... unless it died: the next promotion replaces it


def test_metrics_show_the_reforks_and_each_workers_mold_generation():
    import dataclasses

    from django_prefork import metrics

    snap = hand_snapshot()
    snap = dataclasses.replace(snap, reforks=2, workers=(
        dataclasses.replace(snap.workers[0], mold_generation=2), snap.workers[1]))
    text = metrics.exposition(snap).decode()
    assert "prefork_reforks_total 2.0" in text
    assert 'prefork_worker_mold_generation{generation="2",worker="1"} 2.0' in text
    assert 'prefork_worker_mold_generation{generation="2",worker="2"} 0.0' in text


def test_refork_shares_what_the_workers_built_with_no_failed_request():
    with refork_server([300]) as server:
        server.wait_workers(4)
        warmed = warm_every_worker(server, 4)
        before = {pid: smaps(pid) for pid in serving_workers(server)}
        assert set(before) == warmed
        with Load(server) as load:
            server.wait_for(r"refork 1 done", timeout=60)
            time.sleep(0.5)
        assert load.ok > 300 and not load.failures, load.failures
        after = {pid: smaps(pid) for pid in serving_workers(server)}
        assert len(after) == 4 and not set(after) & set(before)
        # Each child answers /warm from the mold's cache: it never built one of its own.
        with Load(server, clients=8, keepalive=False) as load:  # a connection each: every worker gets some
            wait_until(lambda: set(after) <= load.pids, timeout=20, message="every new worker answered")
        assert not load.failures and load.pids == set(after)
        # The list is done and nothing but a death forks again: the mold retires.
        mold = int(server.wait_for(r"refork 1: the mold \(pid (\d+)\) retires").group(1))
        wait_until(lambda: not alive(mold) and not mold_pids(server), message="the mold gone")
        after = {pid: smaps(pid) for pid in after}
        uss_before = sum(u for u, _ in before.values())
        uss_after = sum(u for u, _ in after.values())
        pss_before = sum(p for _, p in before.values())
        pss_after = sum(p for _, p in after.values())
        print(f"\nworkers' USS {[round(u / MIB, 1) for u, _ in before.values()]} MiB before, "
              f"{[round(u / MIB, 1) for u, _ in after.values()]} MiB after; PSS sum {pss_before / MIB:.1f} MiB "
              f"before, {pss_after / MIB:.1f} MiB after (the mold retired)")
        assert max(u for u, _ in after.values()) < min(u for u, _ in before.values()) / 2
        assert uss_after < uss_before / 3
        assert pss_after < pss_before * 0.75
        assert re.search(r"refork 1: worker \d+ \(pid \d+\) is the mold; its USS [\d.]+ MiB before, "
                         r"[\d.]+ MiB after", server.output)
        from django_prefork.management.commands.preforkstatus import fetch_status

        status = fetch_status(server.pid)
        assert status["reforks"] == 1
        assert sorted(w["mold_generation"] for w in status["worker_list"]) == [1, 1, 1, 1]
        from django_prefork.management.commands.preforkstatus import render

        assert "reforks: 1" in render(status) and "MOLD" in render(status)


def test_a_worker_running_a_thread_of_its_own_is_not_the_mold():
    with refork_server([10], workers=1, PREFORK_KEEPALIVE=0) as server:
        [worker] = server.wait_workers(1)
        status, _ = server.get("/spawn-thread")
        assert status == 200
        for _ in range(15):
            assert server.get("/warm")[0] == 200
        server.wait_for(r"cannot be the mold: threads besides its main one run \(app-exporter\)")
        server.wait_for(r"refused to be the mold")
        for _ in range(10):
            assert int(server.get("/warm")[1].split()[0]) == worker  # it serves on, as before
        assert "is the mold" not in server.output and not mold_pids(server)


def test_hup_during_a_refork_loses_nothing():
    with refork_server([150]) as server:
        old = server.wait_workers(4)
        [arbiter] = server.arbiter_pids()
        with Load(server) as load:
            server.wait_for(r"promoting it to the mold", timeout=60)
            os.kill(server.pid, signal.SIGHUP)
            server.wait_for(r"generation 2 .*serving", timeout=60)
            wait_until(lambda: not alive(arbiter), timeout=30, message="generation 1 gone")
            ok = load.ok
            wait_until(lambda: load.ok > ok + 50, timeout=20, message="generation 2 serving")
        assert not load.failures, load.failures
        assert not any(alive(pid) for pid in old)
        assert not [p for p in server.seen_workers if alive(p) and p not in serving_workers(server)
                    and p not in server.arbiter_pids() and p not in mold_pids(server)]
        # The new generation starts from fresh code, and reforks again after the counts.
        with Load(server):
            server.wait_for(r"refork 1 done(.|\n)*generation 2|generation 2(.|\n)*refork 1 done", timeout=60)


def test_term_during_a_refork_loses_nothing():
    with refork_server([150]) as server:
        server.wait_workers(4)
        with Load(server) as load:
            server.wait_for(r"refork 1: worker", timeout=60)
            everyone = server.worker_pids()  # the mold and the workers, old and new
            load.running = False  # no request after this one: each in flight must be answered
            server.proc.send_signal(signal.SIGTERM)
            load.stop()
            assert server.proc.wait(30) == 0
        assert load.ok and not load.failures, load.failures
        assert not any(alive(pid) for pid in everyone)


def test_a_mold_that_dies_is_replaced_by_the_next_promotion():
    # PREFORK_MAX_REQUESTS will recycle the workers: the mold stays to fork their successors.
    with refork_server([60], workers=2, PREFORK_MAX_REQUESTS=100000) as server:
        server.wait_workers(2)
        with Load(server):
            server.wait_for(r"refork 1 done", timeout=60)
        [mold] = mold_pids(server)
        os.kill(mold, signal.SIGKILL)
        server.wait_for(rf"the mold \(pid {mold}\) ended with -9; the arbiter forks until the next promotion")
        # A worker lost meanwhile is forked by the arbiter, whole: never by a half-made mold.
        victim = serving_workers(server)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(serving_workers(server)) == 2 and victim not in serving_workers(server),
                   message="a replacement")
        load_until(server, r"refork 2 done")
        assert len(mold_pids(server)) == 1 and mold not in mold_pids(server)
        assert "retires" not in server.output


def test_a_retired_molds_successor_replaces_only_the_cold_worker():
    with refork_server([60], workers=2) as server:
        server.wait_workers(2)
        with Load(server) as load:
            mold = int(server.wait_for(r"refork 1: the mold \(pid (\d+)\) retires", timeout=60).group(1))
        assert not load.failures, load.failures
        wait_until(lambda: not alive(mold) and not mold_pids(server), message="the mold gone")
        # A death: the arbiter forks its replacement cold; the last count makes it the next mold,
        # whose child replaces it alone: the other worker, a warm child of the first mold, serves on.
        victim, survivor = serving_workers(server)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(serving_workers(server)) == 2 and victim not in serving_workers(server),
                   message="a replacement")
        with Load(server, keepalive=False) as load:  # a connection each: the new worker gets its share
            server.wait_for(r"refork 2 done: 1 worker forked from the mold", timeout=60)
            new_mold = int(server.wait_for(r"refork 2: the mold \(pid (\d+)\) retires", timeout=10).group(1))
        assert not load.failures, load.failures
        assert survivor in serving_workers(server) and "refork 2: replacing it" not in server.output
        wait_until(lambda: not alive(new_mold) and not mold_pids(server), message="the second mold gone")


def test_a_worker_forked_after_a_mold_stops_answering_is_promoted_at_the_last_count():
    # PREFORK_MAX_REQUESTS keeps the last mold. A mold that does not answer a fork request is
    # dropped; the worker the arbiter forks in its stead is cold, and must become the next mold.
    with refork_server([60], workers=2, PREFORK_MAX_REQUESTS=10**9) as server:
        server.wait_workers(2)
        load_until(server, r"refork 1 done")
        [mold] = mold_pids(server)
        os.kill(mold, signal.SIGSTOP)  # hung: it will never answer
        try:
            before = serving_workers(server)
            victim = before[0]
            os.kill(victim, signal.SIGKILL)
            server.wait_for(rf"the mold \(pid {mold}\) could not fork worker", timeout=20)
            # A mold dropped for not answering is killed, not left hanging until the server stops.
            wait_until(lambda: not alive(mold), timeout=10, message="the dropped mold gone")
            [cold] = wait_until(lambda: set(serving_workers(server)) - set(before), message="the cold worker")
            with Load(server, keepalive=False) as load:  # a connection each: the cold worker gets its share
                # The count it was given, logged (not one the arbiter's promotions count would say).
                server.wait_for(rf"\(pid {cold}\) served its 60 requests: promoting it", timeout=30)
                server.wait_for(rf"refork 2: worker \d+ \(pid {cold}\) is the mold", timeout=30)
                server.wait_for(r"refork 2 done", timeout=30)
            assert not load.failures, load.failures
        finally:
            if alive(mold):
                os.kill(mold, signal.SIGKILL)


def seqpacket_sockets(pid):
    """The inodes of the SOCK_SEQPACKET sockets `pid` holds: only refork channels are of that type."""
    with open("/proc/net/unix") as f:
        seqpacket = {int(line.split()[6]) for line in list(f)[1:] if line.split()[4] == "0005"}
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match and int(match.group(1)) in seqpacket:
            held.add(int(match.group(1)))
    return held


def test_each_channel_has_one_end_in_the_arbiter_and_the_other_in_its_worker_or_mold():
    # The arbiter's end left open in a worker: its channel never reads EOF when the arbiter closes it
    # (a mold is told to exit that way), and every child of a mold holds the mold's channel too.
    with refork_server([60], workers=2, PREFORK_MAX_REQUESTS=10**9) as server:
        server.wait_workers(2)
        load_until(server, r"refork 1 done")
        [arbiter] = server.arbiter_pids()
        ours = seqpacket_sockets(arbiter)
        assert len(ours) == 3  # the mold's channel and each worker's
        for pid in [*mold_pids(server), *serving_workers(server)]:
            theirs = seqpacket_sockets(pid)
            assert len(theirs) == 1 and not theirs & ours, (pid, theirs, ours)


def test_a_worker_added_by_ttin_after_the_retirement_is_promoted_and_its_mold_retires():
    with refork_server([60], workers=2) as server:
        server.wait_workers(2)
        with Load(server) as load:
            mold = int(server.wait_for(r"refork 1: the mold \(pid (\d+)\) retires", timeout=60).group(1))
        assert not load.failures, load.failures
        wait_until(lambda: not alive(mold) and not mold_pids(server), message="the mold gone")
        warm = set(serving_workers(server))
        os.kill(server.pid, signal.SIGTTIN)  # no mold: the arbiter forks the third worker cold
        [cold] = wait_until(lambda: set(serving_workers(server)) - warm, message="a third worker")
        with Load(server, keepalive=False) as load:
            server.wait_for(rf"refork 2: worker \d+ \(pid {cold}\) is the mold", timeout=30)
            server.wait_for(r"refork 2 done: 1 worker forked from the mold", timeout=30)
            new_mold = int(server.wait_for(r"refork 2: the mold \(pid (\d+)\) retires", timeout=10).group(1))
        assert not load.failures, load.failures
        assert new_mold == cold and "refork 2: replacing it" not in server.output
        wait_until(lambda: not alive(cold) and not mold_pids(server), message="the second mold gone")
        assert len(serving_workers(server)) == 3 and warm <= set(serving_workers(server))
