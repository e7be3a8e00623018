"""The management command's front door: arguments, platform, socket activation, the demo site."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from .server import REPO, Server, wait_until


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


def test_usr1_reopens_log_files(serve, tmp_path):
    log = tmp_path / "access.log"
    logging_config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(log)}},
        "loggers": {"django.server": {"handlers": ["file"], "level": "INFO", "propagate": False}},
    }
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_ACCESS_LOG": True, "LOGGING": logging_config})
    server.get("/pid?first")
    wait_until(lambda: "first" in log.read_text())
    log.rename(tmp_path / "access.log.1")  # what logrotate does
    os.kill(server.pid, signal.SIGUSR1)
    wait_until(lambda: log.exists(), message="the log file to be reopened")
    server.get("/pid?second")
    wait_until(lambda: "second" in log.read_text(), message="a line in the new log file")
    assert "second" not in (tmp_path / "access.log.1").read_text()
