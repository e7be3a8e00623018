"""The master's status channel: /metrics, /healthz, /status and preforkstatus (docs/observability.md).

Each test starts a real server with PREFORK_METRICS on a free port and reads
what the master says while workers are busy, die, recycle and reload.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import REPO, alive, forked_as, metrics_url, receive_all, wait_until

RAW_APPS = "tests.fixtureapp.rawapps.application"


def start(serve, *args, env=None, serving=True, addr="127.0.0.1:0", **settings):
    """A server with PREFORK_METRICS on a port of the kernel's choosing; by default, once its
    first generation serves. `server.metrics_url` is read from what the master logs: a port
    picked here and bound there could be taken in between."""
    settings = {"PREFORK_WORKERS": 2, "PREFORK_METRICS": "127.0.0.1:0", **settings}
    server = serve(*args, settings=settings, env=env, addr=addr)
    server.metrics_url = metrics_url(server)
    if serving:
        wait_until(lambda: healthz(server) == 200, timeout=20,
                   message=f"generation 1 serving (output:\n{server.output})")
    return server


def healthz(server):
    """/healthz's status, or None while it cannot be fetched."""
    try:
        return fetch(server, "/healthz")[0]
    except OSError:
        return None


def fetch(server, path, timeout=5):
    """(status, body) from the master's metrics address."""
    try:
        with urllib.request.urlopen(server.metrics_url + path, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metrics(server):
    status, body = fetch(server, "/metrics")
    assert status == 200, body
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            key = sample.name + "".join(f",{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[key] = sample.value
    return samples


def requests_total(samples):
    return sum(v for k, v in samples.items() if k.startswith("prefork_requests_total,"))


@contextlib.contextmanager
def holding(server, path, count):
    """`count` connections sending GET `path`, held open for the with block."""
    with contextlib.ExitStack() as stack:
        for _ in range(count):
            sock = stack.enter_context(server.connect(timeout=30))
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        yield


def preforkstatus(*args, env=None):
    environment = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.fixtureapp.settings",
                       PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "testproject")]), **(env or {}))
    return subprocess.run([sys.executable, "-m", "django", "preforkstatus", *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=30)


def test_busy_workers_and_the_queue_are_seen_while_every_worker_is_held(serve):
    server = start(serve)
    server.wait_workers(2)
    with holding(server, "/slow?s=8", 2):
        wait_until(lambda: metrics(server).get("prefork_workers_busy") == 2, message="both workers busy")
        with holding(server, "/pid", 5):
            def five_waiting():
                value = metrics(server).get(f"prefork_queued_connections,listener=http://127.0.0.1:{server.port}/")
                return value is not None and abs(value - 5) <= 1

            wait_until(five_waiting, message="5 connections in the listen queue")
            for path in ("/metrics", "/healthz"):
                best = min(_timed(fetch, server, path) for _ in range(3))
                assert best < 0.1, f"{path} took {best:.3f} s with every worker busy"
            assert fetch(server, "/healthz") == (200, b"ok\n")
            result = preforkstatus("--pid", str(server.pid), "--json")
            assert result.returncode == 0, result.stderr
            doc = json.loads(result.stdout)
            held = [w for w in doc["worker_list"] if w["state"] == "busy"]
            assert [w["request"] for w in held] == ["GET /slow?s=8", "GET /slow?s=8"]
            assert all(w["request_age"] > 0 for w in held)
            assert doc["listeners"][0]["backlog"] == 2048
            table = preforkstatus("--pid", str(server.pid))
            assert "GET /slow?s=8" in table.stdout and "waiting in the listen queue" in table.stdout
            os.kill(server.pid, signal.SIGTTIN)
            wait_until(lambda: metrics(server).get("prefork_workers") == 3, message="a third worker")


def test_the_queue_of_a_unix_listener_is_counted_too(serve, tmp_path):
    # A unix socket has no tcp_info: the count comes from sock_diag, as `ss -xl` gets it.
    server = start(serve, addr=f"unix:{tmp_path}/app.sock")
    server.wait_workers(2)
    samples = metrics(server)
    assert samples[f"prefork_queued_connections,listener={server.url}"] == 0
    assert samples[f"prefork_listen_backlog,listener={server.url}"] == 2048
    with holding(server, "/slow?s=8", 2):
        wait_until(lambda: metrics(server).get("prefork_workers_busy") == 2, message="both workers busy")
        with holding(server, "/pid", 5):
            wait_until(lambda: metrics(server).get(f"prefork_queued_connections,listener={server.url}") == 5,
                       message="5 connections in the unix listener's queue")
            table = preforkstatus("--pid", str(server.pid))
            assert f"{server.url}: 5 waiting in the listen queue" in table.stdout, table.stdout


def _timed(fn, *args):
    started = time.monotonic()
    fn(*args)
    return time.monotonic() - started


def test_counters_never_go_down_across_deaths_recycles_and_reloads(serve):
    server = start(serve, PREFORK_MAX_REQUESTS=4, WSGI_APPLICATION=RAW_APPS)
    server.wait_workers(2)
    seen = [0.0]

    def served(count):
        for _ in range(count):
            assert server.get("/rss")[0] == 200
        total = requests_total(metrics(server))
        assert total >= seen[-1], f"a counter went down: {seen} then {total}"
        seen.append(total)
        return total

    assert served(10) >= 10  # and workers recycled on the way (4 requests each)
    wait_until(lambda: metrics(server).get("prefork_worker_restarts_total,reason=max_requests", 0) >= 1,
               message="a max-requests recycle counted")
    victim = server.wait_workers(2)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not alive(victim), message="the killed worker gone")
    wait_until(lambda: metrics(server).get("prefork_worker_restarts_total,reason=crash", 0) >= 1,
               message="the SIGKILL counted as a crash")
    before_reload = served(3)
    os.kill(server.pid, signal.SIGHUP)
    server.wait_for(r"generation 2 \(pid \d+\) serving", timeout=30)
    wait_until(lambda: len(server.arbiter_pids()) == 1, timeout=30, message="generation 1 gone")
    samples = metrics(server)
    assert requests_total(samples) >= before_reload
    assert samples["prefork_reloads_total,result=ok"] == 1 and samples["prefork_generation"] == 2
    assert served(3) >= before_reload + 3


def test_the_apps_own_multiprocess_metrics_are_aggregated(serve, tmp_path):
    server = start(serve, WSGI_APPLICATION="tests.fixtureapp.promapp.application",
                   env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    workers = set(server.wait_workers(2))
    pids, hits = set(), 0
    deadline = time.monotonic() + 20
    while pids != workers and time.monotonic() < deadline:
        pids.add(int(server.get("/")[1]))
        hits += 1
    assert pids == workers, "both workers must have served"
    samples = metrics(server)
    assert samples["app_hits_total"] == hits
    assert samples["app_live_workers"] == 2
    victim = workers.pop()
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: metrics(server).get("app_live_workers") == 1, message="the dead worker's gauge removed")
    assert metrics(server)["app_hits_total"] == hits  # a counter keeps what the dead worker counted


def test_healthz_is_503_while_booting_and_stopping_and_200_through_a_reload(serve):
    server = start(serve, WSGI_APPLICATION="tests.fixtureapp.slowboot.application",
                   env={"PREFORK_TEST_BOOT_SECONDS": "2"}, serving=False)
    first = healthz(server)
    assert first == 503  # the workers are still loading the app
    wait_until(lambda: healthz(server) == 200, timeout=20, message="/healthz 200 once serving")
    os.kill(server.pid, signal.SIGHUP)
    statuses = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not server.output.count("generation 2 (pid"):
        statuses.append(fetch(server, "/healthz")[0])
        time.sleep(0.05)
    server.wait_for(r"generation 2 \(pid \d+\) serving", timeout=30)
    assert statuses and set(statuses) == {200}, statuses
    with holding(server, "/slow-echo", 1):  # a request in hand keeps the stop going a little
        os.kill(server.pid, signal.SIGTERM)
        wait_until(lambda: _healthz_or_gone(server) in (503, None), message="/healthz 503 while stopping")
    assert server.proc.wait(15) == 0


def _healthz_or_gone(server):
    try:
        return fetch(server, "/healthz", timeout=1)[0]
    except OSError:
        return None


def test_garbage_and_silence_on_the_metrics_port_cost_the_master_nothing(serve):
    server = start(serve)
    port = int(server.metrics_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01 garbage\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
    assert fetch(server, "/healthz") == (200, b"ok\n")
    silent = socket.create_connection(("127.0.0.1", port), timeout=5)  # connects, says nothing
    try:
        hup_at = time.monotonic()
        os.kill(server.pid, signal.SIGHUP)
        server.wait_for("starting generation 2", timeout=5)
        assert time.monotonic() - hup_at < 2
        server.wait_for(r"generation 2 \(pid \d+\) serving", timeout=30)
    finally:
        silent.close()
    assert fetch(server, "/nope")[0] == 404 and fetch(server, "/metrics")[0] == 200


def test_preforkstatus_watch_redraws_until_ctrl_c_and_says_when_the_server_is_gone(serve):
    server = start(serve)
    server.wait_workers(2)
    environment = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.fixtureapp.settings",
                       PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "testproject")]))
    # A Python started with SIGINT ignored (a shell script's background job, as a suite run
    # with `&` is) keeps ignoring it, and so, rightly, does the command. Start it as from a terminal.
    command = [sys.executable, "-c", "import signal, sys, runpy; signal.signal(signal.SIGINT, signal.default_int_handler); "
               "sys.argv[0] = 'django'; runpy.run_module('django', run_name='__main__')",
               "preforkstatus", "--pid", str(server.pid), "--watch", "--interval", "0.1"]

    def watch():
        proc = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.set_blocking(proc.stdout.fileno(), False)
        return proc

    def frames(proc, seen):
        seen += proc.stdout.read() or b""
        return seen.count(b"\x1b[H\x1b[2J")

    def exited(proc, seen):
        frames(proc, seen)  # read on while it runs: a full pipe would hold it in write()
        return proc.poll() is not None

    proc, seen = watch(), bytearray()
    try:
        # A python -m django start can take seconds on a loaded machine: that is not what is tested.
        wait_until(lambda: frames(proc, seen) >= 3, timeout=30, message="three frames of --watch")
        assert b"idle" in seen and str(server.pid).encode() in seen
        proc.send_signal(signal.SIGINT)
        wait_until(lambda: exited(proc, seen), message="--watch to end on Ctrl-C")
        assert proc.returncode == 0 and b"Traceback" not in proc.stderr.read()
        proc, seen = watch(), bytearray()
        wait_until(lambda: frames(proc, seen) >= 1, timeout=30, message="a first frame")
        os.kill(server.pid, signal.SIGTERM)
        wait_until(lambda: exited(proc, seen), timeout=20, message="--watch to end with the server")
        assert proc.returncode == 1
        error = proc.stderr.read().decode()
        assert "No runprefork master answers" in error and "Traceback" not in error, error
    finally:
        proc.kill()
        proc.wait()


def test_preforkstatus_without_a_server_says_so_in_one_line(tmp_path):
    result = preforkstatus(env={"XDG_RUNTIME_DIR": str(tmp_path)})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "No runprefork server of this project is running" in lines[0], result.stderr


def test_preforkstatus_finds_the_server_of_this_project(serve, tmp_path):
    server = start(serve, env={"XDG_RUNTIME_DIR": str(tmp_path)})
    result = preforkstatus(env={"XDG_RUNTIME_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert f"runprefork master pid {server.pid}" in result.stdout
    assert "WORKER" in result.stdout and "idle" in result.stdout


def test_a_silent_client_does_not_delay_the_probe(serve):
    server = start(serve)
    port = int(server.metrics_url.rsplit(":", 1)[1])
    silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    try:
        assert _timed(fetch, server, "/healthz") < 0.5
    finally:
        for sock in silent:
            sock.close()


def test_a_metrics_address_in_use_is_a_clear_start_up_error(serve):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        address = "127.0.0.1:%d" % taken.getsockname()[1]
        server = serve(settings={"PREFORK_METRICS": address}, wait=False)
        server.wait_exit(1)
        assert f"PREFORK_METRICS {address}: Address already in use" in server.output
        assert "Traceback" not in server.output
    finally:
        taken.close()


def test_a_live_unix_metrics_socket_is_not_taken_over(serve, tmp_path):
    path = tmp_path / "metrics.sock"
    first = serve(settings={"PREFORK_METRICS": f"unix:{path}"})
    second = serve(settings={"PREFORK_METRICS": f"unix:{path}"}, wait=False)
    second.wait_exit(1)
    assert f"PREFORK_METRICS unix:{path}" in second.output
    with socket.socket(socket.AF_UNIX) as sock:  # still the first one's
        sock.connect(str(path))
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert json.loads(receive_all(sock).split(b"\r\n\r\n", 1)[1])["master"]["pid"] == first.pid


@pytest.mark.parametrize("data, status", [
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),  # more: a head past 8 KiB
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /status HTTP/1.1\r\nHost: x\r\n\r\n", 200),  # twice: one answer
    (b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 405),
    (b"HEAD /status HTTP/1.1\r\nHost: x\r\n\r\n", 200),
], ids=["head-too-big", "pipelined", "post", "head"])
def test_what_the_status_channel_answers_to_odd_requests(serve, data, status):
    server = start(serve)
    port = int(server.metrics_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        response = receive_all(sock)
    assert response.startswith(b"HTTP/1.1 %d " % status), response[:100]
    assert response.count(b"HTTP/1.1 ") == 1
    if data.startswith(b"HEAD"):
        assert response.endswith(b"\r\n\r\n")  # no body
    assert fetch(server, "/healthz") == (200, b"ok\n")


# -- the channel and the master's answers, without a server ---------------------------------------

import select  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from django_prefork import master as master_module, status  # noqa: E402

from .helpers import hand_snapshot  # noqa: E402


def render(method, path):
    if path == "/boom":
        raise RuntimeError("a bug in rendering")
    return 200, "text/plain; charset=utf-8", f"{method} {path}\n".encode()


def serve_until_answered(channel, timeout=5):
    deadline = time.monotonic() + timeout
    while channel.clients and time.monotonic() < deadline:
        channel.serve()


def exchange(request, render=render):
    """One client over a socketpair, served by turns of the channel as the master's loop would."""
    channel = status.StatusChannel(render)
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    channel.clients.append(status.Client(theirs))
    with ours:
        ours.sendall(request)
        serve_until_answered(channel)
        assert not channel.clients, "the channel never answered"
        ours.settimeout(5)
        return receive_all(ours)


@pytest.mark.parametrize("request_bytes, status_line, body", [
    (b"GET /status?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK", b"GET /status\n"),  # the query is ignored
    (b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK", b""),  # the head only, its length kept
    (b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 501 ", None),  # an unknown method, as the workers answer it
    (b"GET /\x00 HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 ", None),
    (b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 9000, b"HTTP/1.1 431 ", None),  # a head that never ends
    (b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 500 ", b"Internal Server Error\n"),  # never the master down
])
def test_what_the_channel_answers(request_bytes, status_line, body):
    response = exchange(request_bytes)
    head, _, got = response.partition(b"\r\n\r\n")
    assert head.startswith(status_line), response[:200]
    assert b"\r\nConnection: close" in head and b"\r\nCache-Control: no-store" in head
    if body is not None:
        assert got == body
    if request_bytes.startswith(b"HEAD"):
        assert b"\r\nContent-Length: 14" in head  # the length of the body it leaves out


def test_a_client_past_its_deadline_is_dropped():
    channel = status.StatusChannel(render)
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    client = status.Client(theirs)
    channel.clients.append(client)
    assert 0 < channel.timeout() <= status.CLIENT_DEADLINE
    client.deadline = time.monotonic() - 1
    channel.serve()
    assert channel.clients == [] and channel.timeout() is None
    ours.settimeout(5)
    assert ours.recv(1) == b""  # closed, unanswered
    ours.close()


def test_silent_connections_give_way_to_a_probe():
    channel = status.StatusChannel(render)
    sock = channel.open_metrics("127.0.0.1:0")
    address = sock.getsockname()
    silent = [socket.create_connection(address) for _ in range(status.MAX_CLIENTS)]
    try:
        wait_until(lambda: channel.serve() or len(channel.clients) == status.MAX_CLIENTS,
                   message="every silent connection accepted")
        with socket.create_connection(address, timeout=5) as probe:
            probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_until(lambda: channel.serve() or select.select([probe], [], [], 0)[0], message="the probe answered")
            answer = receive_all(probe)  # answered and closed in the turn that read it
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert len(channel.clients) <= status.MAX_CLIENTS
    finally:
        for conn in silent:
            conn.close()
        channel.close()


@pytest.mark.parametrize("method, path, healthy, code", [
    ("GET", "/healthz", True, 200),
    ("GET", "/healthz", False, 503),  # booting or stopping: take it out of the load balancer
    ("POST", "/status", True, 405),
    ("GET", "/", True, 404),
    ("GET", "/status", False, 200),  # the document is there whether or not it serves
])
def test_what_the_master_renders(monkeypatch, method, path, healthy, code):
    monkeypatch.setattr(master_module.snapshot, "take", lambda master: hand_snapshot(healthy=healthy))
    stand_in = SimpleNamespace(healthy=lambda: healthy)
    got, content_type, body = master_module.Master.render_status(stand_in, method, path)
    assert got == code
    if code == 200 and path == "/status":
        assert content_type == "application/json" and json.loads(body)["healthy"] is healthy


def test_the_master_renders_metrics_from_the_snapshot(monkeypatch):
    monkeypatch.setattr(master_module.snapshot, "take", lambda master: hand_snapshot())
    answer = master_module.Master.render_status(SimpleNamespace(), "GET", "/metrics")
    assert isinstance(answer, status.Offload)  # produced in a child, off the master's loop
    content_type, body = answer.content_type, answer.produce()
    assert content_type.startswith("text/plain")
    found = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert found["prefork_workers_busy"].samples[0].value == 1


@pytest.mark.parametrize("xdg, expected", [
    ("/run/user/1000", "/run/user/1000/django-prefork"),
    (None, None),  # a private directory in the temp dir, named for the user
])
def test_the_runtime_dir(monkeypatch, xdg, expected):
    if xdg:
        monkeypatch.setenv("XDG_RUNTIME_DIR", xdg)
    else:
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
        expected = os.path.join(__import__("tempfile").gettempdir(), f"django-prefork-{os.getuid()}")
    assert status.runtime_dir() == expected


@pytest.mark.parametrize("mode, owner, why", [
    (0o755, None, "has mode 0755"),  # another user could swap the socket for theirs
    (0o700, 65534, "belongs to uid 65534"),  # made first by another user in the shared /tmp
    (0o700, "symlink", "not a directory but a symlink"),  # pointing to a directory of the attacker's choosing
])
def test_a_control_directory_not_private_to_this_user_is_refused(tmp_path, monkeypatch, mode, owner, why):
    if owner == 65534 and os.getuid() != 0:
        pytest.skip("making a directory of another uid takes root")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    directory = tmp_path / "django-prefork"
    if owner == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        directory.symlink_to(tmp_path / "elsewhere")
    else:
        directory.mkdir()
        os.chmod(directory, mode)
        if owner is not None:
            os.chown(directory, owner, -1)
    channel = status.StatusChannel(render)
    with pytest.raises(status.Untrusted, match=why) as refused:
        channel.open_control_socket("tests@/x")
    assert "Remove the directory" in str(refused.value) and "XDG_RUNTIME_DIR" in str(refused.value)
    assert channel.listeners == [] and os.listdir(tmp_path / "elsewhere" if owner == "symlink" else directory) == []


@pytest.mark.skipif(os.getuid() != 0, reason="a client of another uid takes root")
def test_the_control_socket_answers_only_its_user_and_root(tmp_path):
    # The directory's mode keeps other users out; were it opened, the kernel's word on who
    # connected (SO_PEERCRED) still would. Here the socket is open to all, to let nobody try.
    channel = status.StatusChannel(render)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = tempfile.mkdtemp(dir="/tmp") + "/control.sock"
    os.chmod(os.path.dirname(path), 0o755)
    sock.bind(path)
    os.chmod(path, 0o777)
    channel._listen(sock, private=True)
    answers_r, answers_w = os.pipe()

    def ask():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(path)
            client.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            os.write(answers_w, receive_all(client)[:12] or b"closed")

    try:
        for uid, answer in [(65534, b"closed"), (0, b"HTTP/1.1 200")]:  # nobody: dropped unanswered; root: served
            pid = forked_as(uid, ask)
            wait_until(lambda: channel.serve() or select.select([answers_r], [], [], 0)[0],
                       message=f"uid {uid}'s connection settled")
            assert os.read(answers_r, 100) == answer
            os.waitpid(pid, 0)
    finally:
        channel.close()
        shutil.rmtree(os.path.dirname(path))
        os.close(answers_r)
        os.close(answers_w)


def test_dead_masters_control_files_are_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    directory = tmp_path / "django-prefork"
    directory.mkdir(mode=0o700)
    for name in (f"{2 ** 22 + 1}.json", f"{2 ** 22 + 1}.sock", f"{os.getppid()}.json", "notes.txt"):
        (directory / name).write_text("")
    channel = status.StatusChannel(render)
    channel.open_control_socket("tests@/x")
    try:
        assert sorted(os.listdir(directory)) == sorted([f"{os.getppid()}.json", "notes.txt",
                                                       f"{os.getpid()}.json", f"{os.getpid()}.sock"])
        assert json.loads((directory / f"{os.getpid()}.json").read_text())["project"] == "tests@/x"
    finally:
        channel.close()
    assert sorted(os.listdir(directory)) == sorted([f"{os.getppid()}.json", "notes.txt"])


@pytest.mark.parametrize("umask, mode, expected", [
    (0o022, None, 0o600),  # the usual umask: /status names every request in hand, so not even readable by others
    (0o000, None, 0o600),  # no umask at all: the default alone keeps it private
    (0o077, 0o660, 0o660),  # opened on purpose (a group Prometheus shares), whatever the umask
])
def test_a_unix_metrics_socket_is_private_unless_opened(tmp_path, umask, mode, expected):
    channel = status.StatusChannel(render)
    path = tmp_path / "metrics.sock"
    old = os.umask(umask)
    try:
        channel.open_metrics(f"unix:{path}", *(() if mode is None else (mode,)))
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == expected
    finally:
        channel.close()


def test_the_metrics_socket_mode_is_a_setting_the_environment_can_give(serve, tmp_path):
    path = tmp_path / "metrics.sock"
    serve(settings={"PREFORK_METRICS": f"unix:{path}"}, env={"PREFORK_METRICS_SOCKET_MODE": "640"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


APP_SERIES = """
from prometheus_client import Counter, Histogram
requests = Counter("app_requests", "Requests by view.", ["view"])
latency = Histogram("app_latency_seconds", "Latency by view.", ["view"])
for n in range(600):  # 600 counters + 600 histograms of 12 buckets and 2 sums: some 9,000 series
    requests.labels(f"view{n}").inc(n)
    latency.labels(f"view{n}").observe(n / 1000)
"""


def test_healthz_and_signals_stay_fast_however_long_metrics_takes(serve, tmp_path):
    # The app's multiprocess metrics take the master a good 100 ms and more to aggregate and render
    # here. /healthz and a HUP must not wait on that, however many scrapes come at once.
    subprocess.run([sys.executable, "-c", APP_SERIES], env=dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path)),
                   check=True)
    server = start(serve, env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    samples = metrics(server)
    assert samples["app_requests_total,view=view599"] == 599  # the app's series are all there
    assert f"process_start_time_seconds,pid={server.pid},process=master,worker=" in samples  # the master's, not the child's
    stop = threading.Event()
    scraped = []

    def scrape():
        while not stop.is_set():
            status, body = fetch(server, "/metrics", timeout=30)
            scraped.append(status == 200 and b"view599" in body)

    scrapers = [threading.Thread(target=scrape) for _ in range(8)]
    for thread in scrapers:
        thread.start()
    try:
        waits = []
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            waits.append(_timed(fetch, server, "/healthz"))
            time.sleep(0.05)
        hup_at = time.monotonic()
        os.kill(server.pid, signal.SIGHUP)
        server.wait_for("starting generation 2", timeout=10)
        hup_wait = time.monotonic() - hup_at
    finally:
        stop.set()
        for thread in scrapers:
            thread.join(30)
    assert len(scraped) >= 8 and all(scraped), "every scrape answered in full"
    assert max(waits) < 0.2, f"/healthz took up to {max(waits):.3f} s while /metrics was scraped"
    assert hup_wait < 0.5, f"a HUP waited {hup_wait:.3f} s"


def offloading(produce):
    """A render that offloads /slow to `produce` and answers the rest in the loop."""
    def render_with(method, path):
        if path == "/slow":
            return status.Offload("/slow", "text/plain; charset=utf-8", produce)
        return render(method, path)
    return render_with


def _pid_after(seconds):
    time.sleep(seconds)
    return b"rendered by %d\n" % os.getpid()


def _fails():
    raise RuntimeError("a bug in producing")


def _bytes(n):
    return b"x" * n


GET_SLOW = b"GET /slow HTTP/1.1\r\n\r\n"


@pytest.mark.parametrize("produce, request_bytes, deadline, status_line, body", [
    (lambda: _pid_after(0.3), GET_SLOW, 10, b"HTTP/1.1 200 OK", b"rendered by "),  # by a child, not us
    (_fails, GET_SLOW, 10, b"HTTP/1.1 500 ", b"Internal Server Error\n"),  # logged, never the master down
    (lambda: _pid_after(30), GET_SLOW, 0.5, b"HTTP/1.1 503 ", b"Took too long; try again\n"),  # killed
    (lambda: _bytes(100_000), GET_SLOW, 10, b"HTTP/1.1 200 OK", b"x" * 100_000),  # > a pipe's 64 KiB
    (lambda: _pid_after(0), b"HEAD /slow HTTP/1.1\r\n\r\n", 10, b"HTTP/1.1 200 OK", b""),  # the head only, as in the loop
], ids=["answer", "failure", "too-slow", "larger-than-a-pipe", "head"])
def test_an_offloaded_answer(monkeypatch, produce, request_bytes, deadline, status_line, body):
    monkeypatch.setattr(status, "RENDER_DEADLINE", deadline)
    response = exchange(request_bytes, render=offloading(produce))
    head, _, got = response.partition(b"\r\n\r\n")
    assert head.startswith(status_line), response[:200]
    if body.startswith(b"rendered by "):
        assert got.startswith(body) and int(got.split()[-1]) != os.getpid()
    else:
        assert got == body


def test_the_loop_answers_while_a_child_renders_and_the_waiters_share_one_child():
    channel = status.StatusChannel(offloading(lambda: _pid_after(1.0)))
    sock = channel.open_metrics("127.0.0.1:0")
    address = sock.getsockname()
    scrapes = [socket.create_connection(address, timeout=5) for _ in range(3)]
    try:
        for conn in scrapes:
            conn.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: channel.serve() or sum(len(r.clients) for r in channel.renders.values()) == 3,
                   message="three scrapes waiting on one child")
        assert len(channel.renders) == 1
        started = time.monotonic()
        with socket.create_connection(address, timeout=5) as probe:
            probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_until(lambda: channel.serve() or select.select([probe], [], [], 0)[0], message="the probe answered")
            assert receive_all(probe).startswith(b"HTTP/1.1 200 OK")
        assert time.monotonic() - started < 0.5 and channel.renders, "answered while the child still renders"
        wait_until(lambda: channel.serve() or not channel.clients, message="the scrapes answered")
        bodies = {receive_all(conn).partition(b"\r\n\r\n")[2] for conn in scrapes}
        assert len(bodies) == 1 and bodies.pop().startswith(b"rendered by ")  # one child's answer, for all three
    finally:
        for conn in scrapes:
            conn.close()
        channel.close()


def test_a_client_whose_request_is_already_buffered_is_never_evicted():
    # Under a connect flood the channel makes room by evicting a client that has said nothing.
    # One whose request arrived after its last read has said it: it must be read, not reset.
    channel = status.StatusChannel(render)
    sock = channel.open_metrics("127.0.0.1:0")
    address = sock.getsockname()
    first = [socket.create_connection(address, timeout=5) for _ in range(status.MAX_CLIENTS)]
    try:
        wait_until(lambda: channel.serve() or len(channel.clients) == status.MAX_CLIENTS,
                   message="every connection accepted before it spoke")
        for conn in first:  # they speak now: in the socket, not yet read by the channel
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        flood = [socket.create_connection(address, timeout=5) for _ in range(status.MAX_CLIENTS)]
        for conn in flood:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)  # everything is in the kernel's buffers before the next turn
        everyone = first + flood
        answers = []
        for conn in everyone:
            wait_until(lambda: channel.serve() or select.select([conn], [], [], 0)[0], message="an answer")
            answers.append(receive_all(conn)[:15])
        assert answers == [b"HTTP/1.1 200 OK"] * len(everyone)
    finally:
        for conn in first + flood:
            conn.close()
        channel.close()
