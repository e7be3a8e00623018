"""manage.py preforkstatus: its table rendered from a document, finding the master, asking it; no server."""

import dataclasses
import json
import os
import socket
import threading

import pytest
from django.core.management.base import CommandError

from django_prefork.management.commands import preforkstatus
from django_prefork.metrics import document
from django_prefork.scoreboard import Counters
from django_prefork.status import control_paths, project_id

from .helpers import hand_snapshot


def test_the_table_from_a_document():
    text = preforkstatus.render(document(hand_snapshot()))
    lines = text.splitlines()
    assert lines[0] == "runprefork master pid 4242 [testproject], up 1.0h, healthy; generation 2"
    assert lines[1] == "  http://127.0.0.1:8000/: 3 waiting in the listen queue (backlog 2048)"
    assert lines[2] == "  unix:/run/x.sock: listen queue not known on this platform"
    assert lines[3] == "  workers: 1 busy of 2 (target 2)"
    assert lines[4] == "  connections: none held"
    assert lines[5] == "  requests: 8 (2xx 6, 3xx 1, 4xx 1)"
    assert lines[6] == "  reloads: 1 ok, 0 failed; worker restarts: timeout 1"
    header, idle, busy = lines[8:]
    assert header.split() == ["WORKER", "PID", "GEN", "STATE", "FOR", "REQUESTS", "CONNS(r/w/o/i)", "RSS", "USS", "AGE",
                              "REQUEST"]
    assert idle.split() == ["1", "4301", "2", "idle", "5", "-", "50M", "20M", "1m"]
    assert busy.split() == ["2", "4302", "2", "busy", "2.5s", "3", "-", "-", "-", "12.0s", "GET", "/slow?x=1"]
    assert header.index("STATE") == idle.index("idle") == busy.index("busy")  # the columns line up
    assert header.rindex("REQUEST") == busy.index("GET /slow")


def test_connections_by_state_in_total_and_per_worker():
    snapshot = hand_snapshot()
    held = {"reading": 2, "waiting": 1, "writing": 0, "idle": 7, "lingering": 0}
    workers = tuple(dataclasses.replace(w, connections=held) for w in snapshot.workers)
    text = preforkstatus.render(document(dataclasses.replace(snapshot, workers=workers)))
    assert "  connections: 4 reading, 2 waiting, 14 idle" in text
    assert " 2/1/0/7 " in text


def test_scaling_is_shown_only_between_two_bounds():
    scaling = document(hand_snapshot(worker_bounds=(2, 6), scaling={"up": 4, "down": 2}))
    assert "  workers: 1 busy of 2 (target 2, scaling 2-6: 4 up, 2 down)" in preforkstatus.render(scaling)
    fixed = document(hand_snapshot(worker_bounds=(2, 2)))
    assert "  workers: 1 busy of 2 (target 2)" in preforkstatus.render(fixed)


def test_a_server_not_serving_says_so():
    doc = document(hand_snapshot(healthy=False, generation=None, workers=(), totals=Counters()))
    text = preforkstatus.render(doc)
    assert "NOT SERVING; generation None" in text and "requests: 0 (none yet)" in text


@pytest.mark.parametrize("seconds, shown", [
    (None, ""), (0.25, "0.2s"), (59.9, "59.9s"), (90, "2m"), (3599, "60m"), (7200, "2.0h"),
])
def test_durations(seconds, shown):
    assert preforkstatus._seconds(seconds) == shown


@pytest.mark.parametrize("size, shown", [(None, "-"), (0, "-"), (3 << 20, "3M")])
def test_sizes(size, shown):
    assert preforkstatus._size(size) == shown


# -- finding and asking the master ---------------------------------------------------------

@pytest.fixture
def runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    directory = tmp_path / "django-prefork"
    directory.mkdir(mode=0o700)
    return directory


def register(directory, pid, project):
    (directory / f"{pid}.json").write_text(json.dumps({"pid": pid, "project": project}))


def test_this_projects_live_master_is_found(runtime):
    register(runtime, os.getpid(), project_id())
    register(runtime, os.getppid(), "other.settings@/elsewhere")
    register(runtime, 2 ** 22 + 1, project_id())  # dead: above pid_max's ceiling
    (runtime / "garbage.json").write_text("{")
    assert preforkstatus.Command().find_master(None, None) == os.getpid()


@pytest.mark.parametrize("pids, message", [
    ([], "No runprefork server of this project is running"),
    (["self", "parent"], "Several runprefork servers of this project run"),
])
def test_none_or_several_is_an_error_that_says_what_to_do(runtime, pids, message):
    for pid in pids:
        register(runtime, os.getpid() if pid == "self" else os.getppid(), project_id())
    with pytest.raises(CommandError, match=message):
        preforkstatus.Command().find_master(None, None)


def test_a_pidfile_naming_no_process_is_an_error(tmp_path):
    (tmp_path / "server.pid").write_text(f"{2 ** 22 + 1}\n")
    with pytest.raises(CommandError, match="names no running process"):
        preforkstatus.Command().find_master(None, str(tmp_path / "server.pid"))


def answer_once(path, response):
    """A stand-in master: one connection on the control socket, answered with `response`."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        with conn, listener:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            assert request.startswith(b"GET /status HTTP/1.1\r\n")
            conn.sendall(response)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_the_document_is_fetched_from_the_control_socket(runtime):
    doc = document(hand_snapshot())
    body = json.dumps(doc).encode()
    thread = answer_once(control_paths(4242)[0], b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert preforkstatus.fetch_status(4242) == doc
    thread.join(5)


def test_an_error_from_the_master_is_one_line(runtime):
    thread = answer_once(control_paths(4242)[0], b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    with pytest.raises(CommandError, match="answered"):
        preforkstatus.fetch_status(4242)
    thread.join(5)


def test_no_master_at_the_socket_is_one_line(runtime):
    with pytest.raises(CommandError, match="No runprefork master answers"):
        preforkstatus.fetch_status(4242)
