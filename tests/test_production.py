"""What operators rely on in production: preload, draining TERM, faults under
load, sd_notify, process titles."""

import http.client
import json
import os
import re
import signal
import socket
import threading

import pytest

from .helpers import wait_until


def test_preloaded_workers_share_the_app_memory(serve):
    server = serve("--preload", settings={"PREFORK_WORKERS": 2})
    workers = server.wait_workers(2)
    (arbiter,) = server.arbiter_pids()
    process = json.loads(server.get("/loaded_by")[1])
    assert process["loaded_by"] == arbiter and process["pid"] in workers
    memory = json.loads(server.get("/shared")[1])
    assert memory["Shared_Clean"] + memory["Shared_Dirty"] > 10 * 1024, memory  # KiB


@pytest.mark.parametrize("listener", ["tcp", "unix"])
def test_term_drains_the_queued_requests(serve, listener, tmp_path):
    # Each worker takes as many more as the kernel counts waiting (sockets.queued_connections).
    addr = f"unix:{tmp_path}/app.sock" if listener == "unix" else "127.0.0.1:0"
    server = serve(settings={"PREFORK_WORKERS": 2}, addr=addr)
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
