"""The hooks, in real processes: a fixture app's AppConfig.ready connects a receiver to
each, and every receiver appends a JSON line (the hook, the pid it ran in, what it was
sent) to a file; the tests read that file against the server's process tree."""

import json
import os
import signal

from django_prefork import hooks

from .helpers import Server, wait_until

APPS = ["django.contrib.staticfiles", "django_prefork", "tests.fixtureapp.hooksapp"]


def hook_server(tmp_path, *args, env=None, **settings):
    log = tmp_path / "hooks.jsonl"
    server = Server(*args, settings={"INSTALLED_APPS": APPS, "PREFORK_WORKERS": 2, **settings},
                    env={"PREFORK_TEST_HOOKS_LOG": str(log), **(env or {})})
    return server, log


def events(log, hook=None):
    if not log.exists():
        return []
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return [e for e in lines if hook is None or e["hook"] == hook]


def test_each_hook_runs_in_the_process_it_concerns(tmp_path):
    server, log = hook_server(tmp_path)
    with server:
        first = server.wait_workers(2)
        wait_until(lambda: events(log, "server_ready"), message="server_ready")
        # worker_started: in each worker, after the fork and before it serves.
        started = wait_until(lambda: len(e := events(log, "worker_started")) == 2 and e)
        assert sorted(e["in_pid"] for e in started) == first
        assert sorted(e["pid"] for e in started) == first and {e["generation"] for e in started} == {1}
        assert sorted(e["worker"] for e in started) == [1, 2]
        # server_ready: once, in the master, when generation 1 serves.
        (ready,) = events(log, "server_ready")
        assert ready["in_pid"] == ready["pid"] == server.pid
        assert (ready["generation"], ready["workers"], ready["sender"]) == (1, 2, "Master")

        os.kill(server.pid, signal.SIGHUP)
        server.wait_for(r"generation 2 \(pid \d+\) serving", timeout=30)
        # reloading: in the master, naming the generation it starts and why.
        (reload,) = events(log, "reloading")
        assert (reload["in_pid"], reload["generation"], reload["reason"]) == (server.pid, 2, "HUP received")
        # worker_exiting: in each retired worker as it leaves (TERM: code 0).
        exiting = wait_until(lambda: len(e := events(log, "worker_exiting")) == 2 and e, timeout=15)
        assert sorted(e["in_pid"] for e in exiting) == first
        assert {(e["generation"], e["code"]) for e in exiting} == {(1, 0)}
        assert len(events(log, "worker_started")) == 4  # generation 2's, in its fresh processes
        assert len(events(log, "server_ready")) == 1  # a reload is no new start
        assert server.get()[0] == 200


def test_worker_exiting_is_sent_on_a_quick_stop(tmp_path):
    server, log = hook_server(tmp_path)
    with server:
        workers = server.wait_workers(2)
        wait_until(lambda: len(events(log, "worker_started")) == 2)
        assert server.stop(signal.SIGINT) == 0
        assert sorted(e["in_pid"] for e in events(log, "worker_exiting")) == workers


def test_a_failing_receiver_is_logged_and_the_worker_serves(tmp_path):
    server, log = hook_server(tmp_path, env={"PREFORK_TEST_HOOKS_FAIL": "1"})
    with server:
        server.wait_workers(2)
        server.wait_for(r"worker_started receiver record_worker_started failed")
        assert "RuntimeError: a broken exporter" in server.output
        assert server.get()[0] == 200


def test_send_calls_every_receiver_and_logs_the_failures(caplog):
    """Unit: one broken receiver neither stops the others nor raises into the server."""
    seen = []

    def broken(sender, **kwargs):
        raise ValueError("boom")

    def working(sender, **kwargs):
        seen.append(kwargs["pid"])

    hooks.reloading.connect(broken)
    hooks.reloading.connect(working)
    try:
        hooks.send(hooks.reloading, object, pid=7, reason="test", generation=2)
    finally:
        hooks.reloading.disconnect(broken)
        hooks.reloading.disconnect(working)
    assert seen == [7]
    assert "reloading receiver" in caplog.text and "ValueError: boom" in caplog.text
