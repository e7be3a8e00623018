"""The arbiter and its workers, on real processes: forking, deaths and their
reports, the watchdog (while serving and while stopping), recycling, boot failure."""

import os
import re
import signal
import threading
import time

import pytest

from .helpers import alive, receive_all, wait_until


def test_responses_come_from_the_workers(serve):
    server = serve(settings={"PREFORK_WORKERS": 2})
    workers = set(server.wait_workers(2))
    answered = {int(server.get("/pid")[1]) for _ in range(20)}
    assert answered <= workers
    assert server.pid not in answered


def test_killed_worker_is_replaced(serve):
    server = serve(settings={"PREFORK_WORKERS": 2})
    victim, survivor = server.wait_workers(2)
    os.kill(victim, signal.SIGKILL)
    server.wait_for(rf"worker \d \(pid {victim}\) was killed by SIGKILL \(out of memory\?\)")
    replaced = wait_until(lambda: len(p := server.worker_pids()) == 2 and victim not in p and p)
    assert survivor in replaced, "only the dead worker is replaced"
    assert int(server.get("/pid")[1]) in replaced


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


def test_request_outliving_the_timeout_is_answered_500_and_kills_its_worker(serve):
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_TIMEOUT": 2, "PREFORK_ACCESS_LOG": True})
    (victim,) = server.wait_workers(1)
    started = time.monotonic()
    status, body = server.get("/slow?s=30", timeout=20)
    assert time.monotonic() - started < 10
    # An answer, not a silent close: a browser retries a GET that got none,
    # and the retry would time out the next worker too.
    assert status == 500
    assert re.fullmatch(rb"500 Internal Server Error: the request timed out after \d+ s\n", body), body
    server.wait_for(rf"worker {victim} timed out after \d s serving GET /slow\?s=30; sending SIGABRT")
    # The worker's own report names where the request was stuck.
    server.wait_for(rf"worker {victim} timed out after \d s serving GET /slow\?s=30; the request's stack:"
                    r'(.|\n)*fixtureapp/views\.py", line \d+, in slow')
    server.wait_for(r'"GET /slow\?s=30" 500 \d+')
    wait_until(lambda: not alive(victim))
    status, pid = server.get()  # queued until the replacement takes it
    assert status == 200 and int(pid) != victim
    assert server.output.count("sending SIGABRT") == 1
    assert "slow request started" in server.output and server.output.count("slow request started") == 1


def test_a_timed_out_request_whose_head_went_out_is_cut_short(serve):
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_TIMEOUT": 2})
    (victim,) = server.wait_workers(1)
    sock = server.connect(timeout=20)
    sock.sendall(b"GET /stream_then_sleep?s=30 HTTP/1.1\r\nHost: x\r\n\r\n")
    response = receive_all(sock)
    sock.close()
    # The client has its 200 already: no second status line, and the missing
    # last chunk tells it the body was cut.
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.count(b"HTTP/1.1") == 1
    assert b"first chunk" in response and not response.endswith(b"0\r\n\r\n")
    server.wait_for(rf"worker {victim} timed out after \d s serving GET /stream_then_sleep\?s=30; the request's stack")
    wait_until(lambda: not alive(victim))
    assert server.get()[0] == 200


def test_a_timed_out_request_is_counted_in_the_requests_and_their_durations(serve):
    # The 500 a timeout answers is the one a user saw: leave it out of
    # prefork_requests_total and the histogram, and the error rate lies.
    from django_prefork.management.commands.preforkstatus import fetch_status

    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_TIMEOUT": 2})
    (victim,) = server.wait_workers(1)
    assert server.get("/slow?s=30", timeout=20)[0] == 500
    wait_until(lambda: not alive(victim), message="the timed-out worker to exit")
    totals = wait_until(lambda: (t := fetch_status(server.pid)["totals"])["requests"] and t,
                        message="the timed-out request in the totals")
    assert totals["requests"] == 1
    assert totals["responses"]["5xx"] == 1
    assert sum(totals["duration_buckets"].values()) == 1
    assert totals["duration_sum"] >= 2  # it ran for the whole timeout
    assert totals["bytes_out"] > 0


def multipart(name, size):
    boundary = "prefork-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + b"x" * size
    return body + f"\r\n--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.mark.parametrize("path, why", [
    ("/slow?s=30", "the server's own body buffer past PREFORK_BUFFER_BODY: a TemporaryFile, never named"),
    ("/upload_then_sleep?s=30", "Django's upload past FILE_UPLOAD_MAX_MEMORY_SIZE: a named file it deletes on close, "
     "which a worker leaving by os._exit never reaches"),
])
def test_a_timeout_kill_leaves_no_temporary_file(serve, tmp_path, path, why):
    server = serve(env={"TMPDIR": str(tmp_path)}, settings={"PREFORK_WORKERS": 1, "PREFORK_TIMEOUT": 2})
    (victim,) = server.wait_workers(1)
    control = set(os.listdir(tmp_path))  # the master's control directory lives there too
    body, headers = multipart("big.bin", 3 << 20)  # past both 1 MiB and Django's 2.5 MB
    assert server.request("POST", path, body=body, headers=headers, timeout=20)[0] == 500
    wait_until(lambda: not alive(victim), message="the timed-out worker to exit")
    if "upload" in path:
        assert "upload spooled to" in server.output  # the case happened: Django had named a file
    assert set(os.listdir(tmp_path)) - control == set(), why


def test_broken_app_exits_1_once_without_fork_loop(serve):
    server = serve(settings={"WSGI_APPLICATION": "tests.fixtureapp.broken_wsgi.application"}, wait=False)
    server.wait_exit(1)
    out = server.output
    assert "fixture app is broken on purpose" in out
    assert out.count("could not load the application") == 1
    assert out.count("RuntimeError: fixture app is broken on purpose") == 1


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


def test_a_worker_exits_when_its_arbiter_dies(serve):
    server = serve(settings={"PREFORK_WORKERS": 2, "PREFORK_TIMEOUT": 60})
    workers = server.wait_workers(2)
    (arbiter,) = server.arbiter_pids()
    server.wait_for(rf"generation 1 \(pid {arbiter}\) serving")
    os.kill(arbiter, signal.SIGKILL)
    # With a 60 s timeout the getppid() check would take 30 s: PR_SET_PDEATHSIG is faster.
    wait_until(lambda: not any(alive(p) for p in workers), timeout=5, message="orphaned workers to exit")


# -- unit: what the arbiter decides without forking ---------------------------------------------

def test_the_generation_spec_crosses_exec_through_the_environment():
    from django_prefork.arbiter import GenerationSpec

    spec = GenerationSpec(number=3, ready_fd=7, listen_fds=[3, 4], worker_count=2, scoreboard_fd=9, block=1)
    environ = spec.to_environ({"PATH": "/bin"})
    assert environ["PATH"] == "/bin"
    assert GenerationSpec.pop_from_environ(environ) == spec
    assert GenerationSpec.ENV not in environ  # taken out: the workers never see it
    assert GenerationSpec.pop_from_environ(environ) is None


@pytest.mark.parametrize("aborted, recycling, retiring, stopping, code, reason", [
    (True, None, False, False, -9, "timeout"),
    (False, "memory", True, False, 0, "memory"),
    (False, None, True, False, -15, None),  # retired by scaling or a reload
    (False, None, False, True, 0, None),  # the server stops
    (False, None, False, False, 0, "max_requests"),
    (False, None, False, False, 1, "crash"),
])
def test_restart_reason_reads_the_worker_record(aborted, recycling, retiring, stopping, code, reason):
    from django_prefork.arbiter import WorkerProcess, restart_reason

    w = WorkerProcess(4242, 1, beat=None, slot=None)
    w.aborted_at = 1.0 if aborted else None
    w.recycling, w.retiring = recycling, retiring
    assert restart_reason(w, code, stopping) == reason
