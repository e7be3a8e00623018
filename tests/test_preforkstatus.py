"""manage.py preforkstatus: its table rendered from a document, finding the master, asking it; no server."""

import dataclasses
import json
import os
import socket
import threading
import time

import pytest
from django.core.management.base import CommandError

from django_prefork.management.commands import preforkstatus
from django_prefork.metrics import document
from django_prefork.scoreboard import Counters
from django_prefork.status import control_paths, project_id

from .helpers import forked_as, hand_snapshot, wait_until


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
    assert preforkstatus.Command().find_master(None, None) == (os.getpid(), str(runtime), os.getuid())


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


def private_listener(path):
    """A unix socket bound as the master binds its control socket: private (0700)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(1)
    return listener


def answer_once(path, response):
    """A stand-in master: one connection on the control socket, answered with `response`."""
    listener = private_listener(path)

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


# -- trusting nothing it did not check ------------------------------------------------------

NOBODY = 65534
as_root = pytest.mark.skipif(os.getuid() != 0, reason="making files of another uid takes root")


@pytest.mark.parametrize("text, shown", [
    ("\x1b[H\x1b[2J", "\\x1b[H\\x1b[2J"),  # clear the screen: hides what came before
    ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # OSC 0: the window title
    ("\x1b]52;c;cm0gLXJmIH4K\x07", "\\x1b]52;c;cm0gLXJmIH4K\\x07"),  # OSC 52: writes the clipboard, to be pasted
    ("\x9b2J", "\\x9b2J"),  # C1 CSI: one character does what ESC [ does
    ("ok\rGET /", "ok\\x0dGET /"),  # CR: a line overwritten with another
    ("a\x7fb\x00c", "a\\x7fb\\x00c"),  # DEL and NUL
    ("GET /café?q=✓", "GET /café?q=✓"),  # printable text beyond ASCII stays as it is
])
def test_a_forged_document_reaches_the_terminal_escaped(text, shown):
    doc = document(hand_snapshot())
    doc["master"]["name"] = text
    doc["worker_list"][1]["request"] = text
    doc["listeners"][1]["address"] = text
    doc["restarts"][text] = 1  # keys are printed too
    table = preforkstatus.render(doc)
    assert not preforkstatus._CONTROLS.search(table.replace("\n", "")), repr(table)
    assert table.count(shown) == 4  # the name, the request, the address, the key
    assert not preforkstatus._CONTROLS.search(json.dumps(doc, indent=2).replace("\n", ""))  # --json: JSON escapes them


def _mkdir(path, mode=0o700, uid=None):
    path.mkdir()
    os.chmod(path, mode)
    if uid is not None:
        os.chown(path, uid, -1)
    return path


@pytest.mark.parametrize("directory_mode, directory_owner, socket_mode, socket_owner, why", [
    (0o755, None, 0o700, None, "has mode 0755"),  # others may not replace the socket, even unnamed
    (0o700, NOBODY, 0o700, None, f"belongs to uid {NOBODY}"),  # made first by another user in the shared /tmp
    (0o700, None, 0o777, None, "has mode 0777"),  # a socket anyone may connect to is not the master's own
    (0o700, None, 0o700, NOBODY, f"belongs to uid {NOBODY}"),  # the socket of another user
])
@as_root
def test_a_control_directory_or_socket_not_private_to_the_user_is_refused(
        tmp_path, directory_mode, directory_owner, socket_mode, socket_owner, why):
    directory = _mkdir(tmp_path / "django-prefork", directory_mode, directory_owner)
    listener = private_listener(directory / "4242.sock")
    os.chmod(directory / "4242.sock", socket_mode)
    if socket_owner is not None:
        os.chown(directory / "4242.sock", socket_owner, -1)
    try:
        with pytest.raises(CommandError, match=f"Refusing .*{why}") as refused:
            preforkstatus.fetch_status(4242, str(directory), os.getuid())
        assert "\n" not in str(refused.value) and "Remove it" in str(refused.value)
        listener.settimeout(0.2)
        with pytest.raises(socket.timeout):  # refused before connecting: nothing asked, nothing read
            listener.accept()
    finally:
        listener.close()


@as_root
def test_a_server_socket_answered_by_another_uid_is_refused(runtime):
    # Files as the real master makes them, root's and private; but the process listening on the
    # socket (the one SO_PEERCRED names: who called listen()) is nobody. Its answer is not read.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        listener.bind(control_paths(4242)[0])
    finally:
        os.umask(old)
    forged = b"HTTP/1.1 200 OK\r\n\r\n" + json.dumps(document(hand_snapshot())).encode()

    listening_r, listening_w = os.pipe()

    def serve():
        listener.listen(1)
        os.write(listening_w, b"L")
        conn, _ = listener.accept()
        conn.sendall(forged)
        conn.close()

    child = forked_as(NOBODY, serve)
    listener.close()
    assert os.read(listening_r, 1) == b"L"
    os.close(listening_r)
    os.close(listening_w)
    try:
        with pytest.raises(CommandError, match=f"runs as uid {NOBODY}, not {os.getuid()}"):
            preforkstatus.fetch_status(4242, str(runtime), os.getuid())
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)


@as_root
def test_root_finds_the_server_of_the_app_user(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    alive = os.getpid()
    for uid, mode, owner, why in [
        (NOBODY, 0o700, NOBODY, "the app user's own: found"),
        (NOBODY - 1, 0o700, 0, "made by someone else for that uid: skipped"),
        (NOBODY - 2, 0o750, NOBODY - 2, "open to its group: skipped"),
    ]:
        directory = _mkdir(tmp_path / f"django-prefork-{uid}", mode, owner)
        register(directory, alive, project_id())
    assert preforkstatus.Command().find_master(None, None) == (
        alive, str(tmp_path / f"django-prefork-{NOBODY}"), NOBODY)

    sleeper = forked_as(NOBODY, lambda: time.sleep(30))  # --pid: the directory of the uid it runs as
    try:
        wait_until(lambda: preforkstatus.owner_of(sleeper) == NOBODY, message="the child to become nobody")
        assert preforkstatus.Command().find_master(sleeper, None) == (
            sleeper, str(tmp_path / f"django-prefork-{NOBODY}"), NOBODY)
    finally:
        os.kill(sleeper, 9)
        os.waitpid(sleeper, 0)


@as_root
def test_its_own_control_directory_not_private_is_an_error(runtime):
    os.chmod(runtime, 0o777)
    with pytest.raises(CommandError, match="has mode 0777.*Remove it"):
        preforkstatus.Command().find_master(None, None)
