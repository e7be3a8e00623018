"""What operators rely on: stuck-request reports, recycling, preload, draining TERM,
faults under load, sd_notify."""

import http.client
import json
import os
import re
import signal
import socket
import threading

import pytest

from .server import alive, wait_until


def test_a_worker_stuck_in_c_code_is_sigkilled_and_still_named(serve):
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_TIMEOUT": 2})
    (victim,) = server.wait_workers(1)
    with pytest.raises(ConnectionError):
        server.get("/csleep?s=60", timeout=20)
    # SIGABRT cannot run a Python handler inside libc's sleep(): the arbiter
    # names the request itself, from the heartbeat page.
    server.wait_for(rf"worker {victim} timed out after \d s serving GET /csleep\?s=60; sending SIGABRT")
    server.wait_for(rf"worker 1 \(pid {victim}\) was killed with SIGKILL: it did not answer SIGABRT "
                    r"\(stuck in C code\?\); it timed out after \d s serving GET /csleep\?s=60")
    assert "the request's stack" not in server.output
    assert server.get()[0] == 200


def test_max_requests_recycles_and_the_replacement_serves_at_once(serve):
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_MAX_REQUESTS": 3})
    (first,) = server.wait_workers(1)
    pids = [int(server.get()[1]) for _ in range(6)]
    assert pids[:3] == [first] * 3
    assert first not in pids[3:] and len(set(pids[3:])) == 1
    server.wait_for(rf"worker 1 \(pid {first}\) served 3 requests; recycling")


def test_jitter_gives_each_worker_its_own_limit(serve):
    server = serve(settings={"PREFORK_WORKERS": 4, "PREFORK_MAX_REQUESTS": 1000, "PREFORK_MAX_REQUESTS_JITTER": 10000})
    server.wait_workers(4)
    limits = wait_until(lambda: len(found := re.findall(r"will recycle after (\d+) requests", server.output)) == 4
                        and found)
    assert all(1000 <= int(n) <= 11000 for n in limits)
    assert len(set(limits)) > 1, "workers must not recycle in step"


def test_preloaded_workers_share_the_app_memory(serve):
    server = serve("--preload", settings={"PREFORK_WORKERS": 2})
    server.wait_workers(2)
    memory = json.loads(server.get("/shared")[1])
    assert memory["Shared_Clean"] + memory["Shared_Dirty"] > 10 * 1024, memory  # KiB


def test_term_drains_the_queued_requests(serve):
    server = serve(settings={"PREFORK_WORKERS": 2})
    server.wait_workers(2)
    results, threads = [], []
    for _ in range(8):
        t = threading.Thread(target=lambda: results.append(server.get("/slow?s=0.5", timeout=30)))
        t.start()
        threads.append(t)
    wait_until(lambda: server.output.count("slow request started") >= 2)  # both workers busy, six queued
    assert server.stop(signal.SIGTERM) == 0
    for t in threads:
        t.join(30)
    assert [status for status, _ in results] == [200] * 8


def test_five_kill_9s_under_load_lose_at_most_five_requests(serve):
    server = serve(settings={"PREFORK_WORKERS": 2})
    server.wait_workers(2)
    outcomes, stop = [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
                conn.request("GET", "/pid")
                outcomes.append(conn.getresponse().status)
                conn.close()
            except (OSError, http.client.HTTPException):
                outcomes.append("failed")

    clients = [threading.Thread(target=client) for _ in range(3)]
    for c in clients:
        c.start()
    try:
        for _ in range(5):
            victim = server.wait_workers(2)[0]
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2)
            mark = len(outcomes)
            wait_until(lambda: len(outcomes) > mark + 5)  # the replacement is serving
    finally:
        stop.set()
        for c in clients:
            c.join(15)
    assert outcomes.count("failed") <= 5
    assert outcomes.count(200) > 50


@pytest.mark.parametrize("how, logged", [
    ("7", "exited with code 7"),
    ("3", "exited with code 3"),  # the boot-error code, but after booting: no halt
    ("segv", "was killed by SIGSEGV"),
])
def test_a_worker_dying_on_its_own_is_replaced_at_once(serve, how, logged):
    server = serve(settings={"PREFORK_WORKERS": 1})
    (victim,) = server.wait_workers(1)
    with pytest.raises(ConnectionError):
        server.get(f"/die?how={how}")
    server.wait_for(rf"worker 1 \(pid {victim}\) \(serving GET /die\?how={how}\) {logged}")
    (replacement,) = wait_until(lambda: [p for p in server.worker_pids() if p != victim])
    assert int(server.get()[1]) == replacement
    assert server.proc.poll() is None


def test_sd_notify_ready_reloading_stopping(serve, tmp_path):
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(20)
    try:
        server = serve(settings={"PREFORK_WORKERS": 1}, env={"NOTIFY_SOCKET": path})

        def expect(word):
            while True:
                message = listener.recv(4096).decode()
                if word in message.split("\n"):
                    return message

        assert "STATUS=generation 1 serving, 1 workers" in expect("READY=1")
        os.kill(server.pid, signal.SIGHUP)
        assert re.search(r"MONOTONIC_USEC=\d+", expect("RELOADING=1"))
        assert "STATUS=generation 2 serving" in expect("READY=1")
        os.kill(server.pid, signal.SIGTERM)
        expect("STOPPING=1")
        assert server.stop() == 0
    finally:
        listener.close()


def test_a_worker_exits_when_its_arbiter_dies(serve):
    server = serve(settings={"PREFORK_WORKERS": 2, "PREFORK_TIMEOUT": 60})
    workers = server.wait_workers(2)
    (arbiter,) = server.arbiter_pids()
    server.wait_for(rf"generation 1 \(pid {arbiter}\) serving")
    os.kill(arbiter, signal.SIGKILL)
    # With a 60 s timeout the getppid() check would take 30 s: PR_SET_PDEATHSIG is faster.
    wait_until(lambda: not any(alive(p) for p in workers), timeout=5, message="orphaned workers to exit")


def test_process_titles(serve):
    pytest.importorskip("setproctitle")
    server = serve(settings={"PREFORK_WORKERS": 2})
    workers = server.wait_workers(2)
    (arbiter,) = server.arbiter_pids()

    def title(pid):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode().strip()

    assert title(server.pid) == "runprefork master [tests]"
    assert title(arbiter) == "runprefork arbiter [tests] generation 1"
    assert sorted(title(w) for w in workers) == ["runprefork worker 1 [tests]", "runprefork worker 2 [tests]"]
