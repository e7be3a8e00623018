"""The management command's front door: arguments, checks, the banner, binding
(TCP, unix, socket activation), the pidfile, the demo site."""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import textwrap

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from django_prefork import cpus
from django_prefork.management.commands import runprefork

from .helpers import EXIT_WAIT, REPO, Server, wait_until


def test_no_fork_is_a_command_error(monkeypatch):
    monkeypatch.delattr(os, "fork")
    with pytest.raises(CommandError, match="no os.fork.*Use runserver"):
        call_command("runprefork")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["unix:"], "needs a path"),
        (["not a port"], "is not a valid port number or address:port pair"),  # runserver's own
        (["--workers=-1"], "--workers -1: it must be an integer ≥ 1"),
        (["--timeout=-3"], "--timeout -3.0: it must be a number of seconds ≥ 0"),
        (["--max-requests=-1"], "--max-requests -1: it must be an integer ≥ 0"),
    ],
)
def test_bad_arguments_are_command_errors(argv, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("runprefork", *argv)


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_socket_activation_serves_on_an_fd_it_did_not_bind(tmp_path, family):
    """A stand-in for systemd: bind, put the socket on fd 3, set LISTEN_*, exec runprefork."""
    if family == "unix":
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(tmp_path / "activated.sock"))
        where = f"unix:{tmp_path / 'activated.sock'}"
    else:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        where = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    listener.listen(16)
    address = listener.getsockname()
    launcher = textwrap.dedent(f"""
        import os, sys
        os.dup2({listener.fileno()}, 3)
        os.environ["LISTEN_FDS"] = "1"
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.execv(sys.executable, [sys.executable, "-m", "django", "runprefork", "--noreload"])
    """)
    env = dict(os.environ, PYTHONPATH=REPO, DJANGO_SETTINGS_MODULE="tests.fixtureapp.settings",
               PYTHONUNBUFFERED="1", PREFORK_TEST_SETTINGS=json.dumps({"PREFORK_WORKERS": 1}))
    proc = subprocess.Popen([sys.executable, "-c", launcher], env=env, cwd=REPO, pass_fds=[listener.fileno()],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    family_ = listener.family
    listener.close()  # only the server holds it now
    try:
        banner = ""
        while "Quit the server" not in banner:
            line = proc.stdout.readline()
            assert line, banner
            banner += line
        assert f"Starting prefork server at {where}" in banner
        assert "(backlog 16)" in banner  # the inherited socket's own, not PREFORK_BACKLOG's 2048
        with socket.socket(family_) as sock:
            sock.settimeout(10)
            sock.connect(address)
            sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200 OK")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        if family == "unix":
            assert (tmp_path / "activated.sock").exists()  # systemd's socket: not ours to remove
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_the_demo_site(tmp_path):
    """testproject/, as the README's first command serves it: pages, JSON, SQLite, CSRF form, static."""
    env = {"TESTPROJECT_DB": str(tmp_path / "db.sqlite3"), "PREFORK_WORKERS": "2",
           "DJANGO_SETTINGS_MODULE": "testproject.settings"}
    manage = os.path.join(REPO, "testproject", "manage.py")
    subprocess.run([sys.executable, manage, "migrate", "-v0"], check=True, cwd=REPO,
                   env=dict(os.environ, **env))
    with Server(manage=manage, env=env) as server:
        assert server.get("/")[0] == 200
        assert json.loads(server.get("/json?a=1")[1])["query"] == {"a": "1"}
        assert json.loads(server.get("/db")[1])["count"] == 10
        status, headers, body = server.request("GET", "/form")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1).decode()
        cookie = headers["Set-Cookie"].split(";")[0]
        form = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
        status, _, _ = server.request("POST", "/form", body=f"csrfmiddlewaretoken={token}&text=from+a+test",
                                      headers=form)
        assert status == 302
        assert server.request("POST", "/form", body="text=forged", headers=form)[0] == 403
        assert json.loads(server.get("/db")[1])["count"] == 11
        status, headers, body = server.request("GET", "/static/demo/style.css")
        assert status == 200 and b"font-family" in body
        assert len(server.get("/file")[1]) == 1 << 20
        # DEBUG is on in the demo: the access log is too, in runserver's format.
        server.wait_for(r'"GET /db HTTP/1.1" 200 \d+')


def test_banner_says_what_runs(serve):
    server = serve(settings={"PREFORK_WORKERS": 3, "PREFORK_BACKLOG": 64})
    out = server.output
    assert "Performing system checks..." in out
    assert "Django version " in out and "using settings 'tests.fixtureapp.settings'" in out
    assert f"Starting prefork server at http://127.0.0.1:{server.port}/" in out
    assert (
        f"Master pid {server.proc.pid}: 3 sync workers, 1 thread each, slow clients held by an event loop; "
        "at most 3 requests at once, the rest queue (backlog 64)"
    ) in out
    assert "Quit the server with CONTROL-C." in out


def test_the_banner_gives_the_range_scaling_moves_in(serve):
    server = serve(settings={"PREFORK_WORKERS": 2, "PREFORK_MAX_WORKERS": 4})
    assert "2 sync workers, 1 thread each" in server.output
    assert "at most 2 to 4 requests at once, the rest queue" in server.output


# (the count's source, the CPUs found, what the banner says, why)
WORKERS_SAID = [
    ({"PREFORK_WORKERS": 3}, None, "3 sync workers", "a count the user chose needs no explanation"),
    ({}, cpus.Cpus(2, 8, 1.5), "2 sync workers (the CPU quota: 1.5 CPUs)",
     "the default, capped by the quota: say so, or 2 workers on 8 CPUs looks like a bug"),
    ({}, cpus.Cpus(8, 8), "8 sync workers (the CPUs it may use)", "the default without a quota"),
]


@pytest.mark.parametrize("overrides, found, said, why", WORKERS_SAID, ids=[row[-1] for row in WORKERS_SAID])
def test_the_banner_says_where_the_worker_count_came_from(monkeypatch, overrides, found, said, why):
    monkeypatch.setattr(cpus, "default_workers", lambda: found)
    monkeypatch.delenv("PREFORK_WORKERS", raising=False)
    with override_settings():
        del settings.PREFORK_WORKERS  # the fixture's settings set it; the default is the case here
        count = overrides.get("PREFORK_WORKERS") or found.count
        assert runprefork.workers_said(count, overrides) == said, why


def test_the_banner_is_printed_once_however_often_processes_fork(serve, tmp_path):
    """stdout a pipe, as under systemd: the banner waits in its buffer, and a
    fork copies the buffer into every child, which would print it again on exit."""
    sock = tmp_path / "app.sock"
    server = serve(addr=f"unix:{sock}", wait=False, env={"PYTHONUNBUFFERED": ""},  # "" is unset to Python
                   settings={"PREFORK_WORKERS": 1, "PREFORK_MAX_REQUESTS": 1})
    server.pid, server.url = server.proc.pid, f"unix:{sock}"
    (first,) = server.wait_workers(1, timeout=30)
    assert server.get("/pid")[0] == 200  # its last request: a worker recycled, a new one forked
    wait_until(lambda: first not in server.worker_pids() and len(server.worker_pids()) == 1,
               message="the recycled worker's successor")
    os.kill(server.pid, signal.SIGHUP)  # a generation started, generation 1's workers exit
    server.wait_for(r"generation 2 \(pid \d+\) serving", timeout=30)
    assert server.stop() == 0
    assert server.output.count("Starting prefork server at") == 1, server.output


def test_worker_count_from_setting_and_option(serve):
    assert len(serve(settings={"PREFORK_WORKERS": 3}).wait_workers(3)) == 3
    server = serve("--workers", "1", settings={"PREFORK_WORKERS": 3})
    assert "1 sync worker, 1 thread each" in server.output
    assert len(server.wait_workers(1)) == 1


def test_bad_setting_fails_the_checks_with_its_id(serve):
    server = serve(settings={"PREFORK_WORKERS": 0}, wait=False)
    server.wait_exit(1)
    assert "prefork.E001" in server.output
    assert "PREFORK_WORKERS is 0; it must be an integer ≥ 1." in server.output
    assert "Traceback" not in server.output


def test_bad_option_is_a_command_error(serve):
    server = serve("--workers", "0", wait=False)
    server.wait_exit(1)
    assert "--workers 0: it must be an integer ≥ 1." in server.output
    assert "Traceback" not in server.output


def test_port_in_use_prints_runservers_message(serve):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        server = serve(addr=f"127.0.0.1:{taken.getsockname()[1]}", wait=False)
        server.wait_exit(1)
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


@pytest.mark.parametrize("mode", [None, 0o660])
def test_unix_socket_mode_whatever_the_umask(serve, tmp_path, mode):
    path = tmp_path / "app.sock"
    settings = {} if mode is None else {"PREFORK_UNIX_SOCKET_MODE": mode}
    old = os.umask(0o077)  # the server inherits it: without the setting, srwx------
    try:
        serve(addr=f"unix:{path}", settings=settings)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == (0o666 if mode is None else mode)


def test_pidfile_written_removed_and_refusing_a_live_pid(serve, tmp_path):
    pidfile = tmp_path / "server.pid"
    server = serve("--pidfile", str(pidfile))
    assert int(pidfile.read_text()) == server.pid
    second = serve("--pidfile", str(pidfile), wait=False)
    second.wait_exit(1)
    assert f"names pid {server.pid}, which is running" in second.output
    assert server.stop() == 0
    assert not pidfile.exists()


def test_print_config_shows_values_and_sources_and_serves_nothing(tmp_path):
    """An environment variable, a flag and settings.py each win where they should; nothing is bound."""
    sock = tmp_path / "never.sock"
    env = dict(os.environ, PYTHONPATH=REPO, DJANGO_SETTINGS_MODULE="tests.fixtureapp.settings",
               PREFORK_KEEPALIVE="620", PREFORK_TIMEOUT="12.5",
               PREFORK_TEST_SETTINGS=json.dumps({"PREFORK_BACKLOG": 64, "PREFORK_TIMEOUT": 5}))
    done = subprocess.run([sys.executable, "-m", "django", "runprefork", f"unix:{sock}", "--print-config",
                           "--workers", "3", "--timeout", "9"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=EXIT_WAIT)
    assert done.returncode == 0, done.stderr
    lines = {line.split(" = ")[0]: line.split()[2:] for line in done.stdout.splitlines()}
    assert lines["PREFORK_WORKERS"] == ["3", "#", "command", "line"]
    assert lines["PREFORK_TIMEOUT"] == ["9.0", "#", "command", "line"]  # over the environment's 12.5
    assert lines["PREFORK_KEEPALIVE"] == ["620", "#", "environment"]
    assert lines["PREFORK_BACKLOG"] == ["64", "#", "settings"]
    assert lines["PREFORK_GC_FREEZE"] == ["True", "#", "default"]
    assert not sock.exists() and "Starting prefork server" not in done.stdout + done.stderr


def test_an_unknown_setting_is_a_warning_at_start(serve):
    server = serve(settings={"PREFORK_TIMOUT": 3})
    assert ("(prefork.W002) PREFORK_TIMOUT in settings is not a django-prefork setting; "
            "did you mean PREFORK_TIMEOUT?") in server.output
    assert server.get("/pid")[0] == 200  # a warning does not stop the start
