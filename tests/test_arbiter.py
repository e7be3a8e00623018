"""The process model, tested on real processes: banner, workers, signals, deaths."""

import json
import os
import signal
import socket
import threading
import time

import pytest

from .server import alive, wait_until


def test_banner_says_what_runs(serve):
    server = serve(settings={"PREFORK_WORKERS": 3, "PREFORK_BACKLOG": 64})
    out = server.output
    assert "Performing system checks..." in out
    assert "Django version " in out and "using settings 'tests.fixtureapp.settings'" in out
    assert f"Starting prefork server at http://127.0.0.1:{server.port}/" in out
    assert (
        f"Master pid {server.proc.pid}: 3 sync workers, 1 thread each, blocking I/O; "
        "at most 3 requests at once, the rest queue (backlog 64)"
    ) in out
    assert "Quit the server with CONTROL-C." in out


def test_worker_count_from_setting_and_option(serve):
    assert len(serve(settings={"PREFORK_WORKERS": 3}).wait_workers(3)) == 3
    server = serve("--workers", "1", settings={"PREFORK_WORKERS": 3})
    assert "1 sync worker, 1 thread each" in server.output
    assert len(server.wait_workers(1)) == 1


def test_responses_come_from_the_workers(serve):
    server = serve(settings={"PREFORK_WORKERS": 2})
    workers = set(server.wait_workers(2))
    answered = {int(server.get("/pid")[1]) for _ in range(20)}
    assert answered <= workers
    assert server.pid not in answered


def test_killed_worker_is_replaced(serve):
    server = serve(settings={"PREFORK_WORKERS": 2})
    victim = server.wait_workers(2)[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_for(rf"worker \d \(pid {victim}\) was killed by SIGKILL \(out of memory\?\)")
    replaced = wait_until(lambda: len(p := server.worker_pids()) == 2 and victim not in p and p)
    assert victim not in replaced
    assert server.get("/pid")[0] == 200


def test_ttin_and_ttou_change_the_count_never_below_one(serve):
    server = serve(settings={"PREFORK_WORKERS": 1})
    server.wait_workers(1)
    os.kill(server.pid, signal.SIGTTIN)
    server.wait_workers(2)
    for _ in range(3):
        os.kill(server.pid, signal.SIGTTOU)
    server.wait_for("TTOU: 1 workers")
    server.wait_workers(1)
    assert server.get()[0] == 200


def test_stopped_worker_is_killed_after_timeout_and_replaced(serve):
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_TIMEOUT": 2})
    (victim,) = server.wait_workers(1)
    assert server.get()[0] == 200  # booted and serving
    os.kill(victim, signal.SIGSTOP)
    # "serving GET /pid" if the stop caught it between its answer and its bookkeeping
    server.wait_for(rf"worker {victim} timed out after \d+ s (while idle|serving GET /pid); sending SIGABRT",
                    timeout=10)
    server.wait_for(rf"worker 1 \(pid {victim}\) was killed with SIGKILL: it did not answer SIGABRT", timeout=10)
    (replacement,) = wait_until(lambda: [p for p in server.worker_pids() if p != victim], timeout=10)
    assert int(server.get()[1]) == replacement


def test_request_outliving_the_timeout_kills_its_worker(serve):
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_TIMEOUT": 2})
    (victim,) = server.wait_workers(1)
    started = time.monotonic()
    with pytest.raises(ConnectionError):  # http.client.RemoteDisconnected is one
        server.get("/slow?s=30", timeout=20)
    assert time.monotonic() - started < 10
    server.wait_for(rf"worker {victim} timed out after \d s serving GET /slow\?s=30; sending SIGABRT")
    # The worker's own report names where the request was stuck.
    server.wait_for(rf"worker {victim} timed out after \d s serving GET /slow\?s=30; the request's stack:"
                    r'(.|\n)*fixtureapp/views\.py", line \d+, in slow')
    wait_until(lambda: not alive(victim))
    assert server.get()[0] == 200


def test_term_lets_a_slow_request_finish_and_leaves_nothing(serve):
    server = serve(settings={"PREFORK_WORKERS": 2})
    workers = server.wait_workers(2)
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=server.get("/slow?s=1.5")))
    thread.start()
    server.wait_for("slow request started")  # the worker holds it now
    assert server.stop(signal.SIGTERM) == 0
    thread.join(5)
    assert result["r"][0] == 200 and result["r"][1].startswith(b"slept in")
    wait_until(lambda: not any(alive(p) for p in workers), timeout=5)
    assert "crashed" not in server.output and "exited with code" not in server.output


def test_int_stops_at_once(serve):
    server = serve(settings={"PREFORK_WORKERS": 2})
    workers = server.wait_workers(2)
    started = time.monotonic()
    assert server.stop(signal.SIGINT) == 0
    assert time.monotonic() - started < 3
    wait_until(lambda: not any(alive(p) for p in workers), timeout=3)


def test_workers_exit_when_the_arbiter_is_killed(serve):
    server = serve(settings={"PREFORK_WORKERS": 2, "PREFORK_TIMEOUT": 2})
    workers = server.wait_workers(2)
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(5)
    wait_until(lambda: not any(alive(p) for p in workers), timeout=4, message="orphaned workers to exit")


def test_broken_app_exits_1_once_without_fork_loop(serve):
    server = serve(settings={"WSGI_APPLICATION": "tests.fixtureapp.broken_wsgi.application"}, wait=False)
    assert server.proc.wait(20) == 1
    server._reader.join(5)
    out = server.output
    assert "fixture app is broken on purpose" in out
    assert out.count("could not load the application") == 1
    assert out.count("RuntimeError: fixture app is broken on purpose") == 1


def test_bad_setting_fails_the_checks_with_its_id(serve):
    server = serve(settings={"PREFORK_WORKERS": 0}, wait=False)
    assert server.proc.wait(20) == 1
    server._reader.join(5)
    assert "prefork.E001" in server.output
    assert "PREFORK_WORKERS is 0; it must be an integer ≥ 1." in server.output
    assert "Traceback" not in server.output


def test_bad_option_is_a_command_error(serve):
    server = serve("--workers", "0", wait=False)
    assert server.proc.wait(20) == 1
    server._reader.join(5)
    assert "--workers 0: it must be an integer ≥ 1." in server.output
    assert "Traceback" not in server.output


def test_port_in_use_prints_runservers_message(serve):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        server = serve(addr=f"127.0.0.1:{taken.getsockname()[1]}", wait=False)
        assert server.proc.wait(20) == 1
        server._reader.join(5)
        assert "Error: That port is already in use." in server.output
        assert "Traceback" not in server.output
    finally:
        taken.close()


def test_unix_socket_bind_serves_and_is_removed(serve, tmp_path):
    path = tmp_path / "app.sock"
    server = serve(addr=f"unix:{path}")
    assert f"Starting prefork server at unix:{path}" in server.output
    status, body = server.get("/pid")
    assert status == 200 and int(body) in server.wait_workers(2)
    environ = json.loads(server.get("/environ", headers={"Host": "app.example:8443"})[1])
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("app.example", "8443")
    assert environ["REMOTE_ADDR"] == ""
    assert server.stop() == 0
    assert not path.exists()


def test_pidfile_written_removed_and_refusing_a_live_pid(serve, tmp_path):
    pidfile = tmp_path / "server.pid"
    server = serve("--pidfile", str(pidfile))
    assert int(pidfile.read_text()) == server.pid
    second = serve("--pidfile", str(pidfile), wait=False)
    assert second.proc.wait(20) == 1
    second._reader.join(5)
    assert f"names pid {server.pid}, which is running" in second.output
    assert server.stop() == 0
    assert not pidfile.exists()


def test_a_killed_generation_arbiter_is_replaced(serve):
    server = serve(settings={"PREFORK_WORKERS": 2, "PREFORK_TIMEOUT": 2})
    old_workers = server.wait_workers(2)
    (arbiter,) = server.arbiter_pids()
    server.wait_for(rf"generation 1 \(pid {arbiter}\) serving")
    os.kill(arbiter, signal.SIGKILL)
    server.wait_for(rf"generation 1 \(pid {arbiter}\) exited unexpectedly \(exit -9\); starting a new one")
    server.wait_for(r"generation 2 \(pid \d+\) serving", timeout=30)
    wait_until(lambda: not any(alive(p) for p in old_workers), timeout=5, message="the orphaned workers to exit")
    assert int(server.get("/pid")[1]) in server.wait_workers(2)


def test_a_stuck_worker_of_a_retiring_generation_gets_the_timeout_not_the_grace_period(serve):
    timeout = 6
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_TIMEOUT": timeout, "PREFORK_GRACEFUL_TIMEOUT": 60})
    (victim,) = server.wait_workers(1)
    closed = {}

    def hold_a_request():
        try:
            server.get("/slow?s=60", timeout=60)
        except OSError as exc:  # the kill closes the connection: RemoteDisconnected or a reset
            closed["error"] = exc
        closed["at"] = time.monotonic()

    thread = threading.Thread(target=hold_a_request, daemon=True)
    thread.start()
    server.wait_for("slow request started")
    os.kill(victim, signal.SIGSTOP)
    hup_at = time.monotonic()
    os.kill(server.pid, signal.SIGHUP)  # generation 1 retires while its worker is stuck
    server.wait_for(r"generation 2 \(pid \d+\) serving, 1 workers; stopping generation 1", timeout=30)
    thread.join(timeout + 3 + 5)
    assert "at" in closed, "the stuck request was held past the timeout, as if for the grace period"
    assert closed["at"] - hup_at < timeout + 3
    assert "error" in closed
    server.wait_for(rf"worker 1 \(pid {victim}\) was killed with SIGKILL: it did not answer SIGABRT")
