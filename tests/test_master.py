"""The master, on real processes: reloads under load (HUP and autoreload replace
every worker and refuse nothing), failed reloads, and the signals it acts on or
passes on; no process outlives it."""

import http.client
import os
import signal
import threading
import time

import pytest

from .helpers import Server, alive, children, wait_until

SETTINGS = """
from pathlib import Path
BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "reload-tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django_prefork", "liveapp"]
ROOT_URLCONF = "liveapp.urls"
WSGI_APPLICATION = "liveapp.wsgi.application"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
PREFORK_WORKERS = 2
"""
URLS = """
from django.urls import path
from liveapp import views
urlpatterns = [path("version", views.version), path("page", views.page)]
"""
VIEWS = """
import os
from django.http import HttpResponse
from django.shortcuts import render
VERSION = "{version}"
def version(request):
    return HttpResponse(f"{{VERSION}} {{os.getpid()}}")
def page(request):
    return render(request, "liveapp/page.html")
"""
WSGI = """
from django.core.wsgi import get_wsgi_application
application = get_wsgi_application()
"""


@pytest.fixture
def project(tmp_path):
    app = tmp_path / "liveapp"
    (app / "templates" / "liveapp").mkdir(parents=True)
    (app / "__init__.py").write_text("")
    (app / "settings.py").write_text(SETTINGS)
    (app / "urls.py").write_text(URLS)
    (app / "wsgi.py").write_text(WSGI)
    (app / "templates" / "liveapp" / "page.html").write_text("template one")
    write_views(tmp_path, "v1")
    return tmp_path


def write_views(project, version_or_source):
    source = version_or_source if "\n" in version_or_source else VIEWS.format(version=version_or_source)
    path = project / "liveapp" / "views.py"
    path.write_text(source)
    # A later mtime even on a coarse clock, and no stale bytecode either way.
    stamp = time.time() + 1 + len(source) % 7
    os.utime(path, (stamp, stamp))


def start(project, *args):
    server = Server(*args, env={
        "PYTHONPATH": f"{project}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "DJANGO_SETTINGS_MODULE": "liveapp.settings",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    server.start()
    server.wait_workers(2)
    return server


class Load:
    """A few clients, a new connection per request, recording every answer."""

    def __init__(self, server, path="/version", clients=3):
        self.server, self.path = server, path
        self.results = []  # (body or error, latency)
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]

    def client(self):
        while not self.stopped.is_set():
            started = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
                body = response.read().decode()
                outcome = body if response.status == 200 else f"status {response.status}"
            except Exception as exc:  # refused, reset, timed out: all failures
                outcome = f"error {exc!r}"
            finally:
                conn.close()
            self.results.append((outcome, time.monotonic() - started))

    def __enter__(self):
        for t in self.threads:
            t.start()
        wait_until(lambda: len(self.results) > 10, message="load to start")
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        for t in self.threads:
            t.join(15)

    def failures(self):
        return [r for r, _ in self.results if not r.startswith("v")]

    def served(self, version):
        return [r for r, _ in self.results if r.startswith(version + " ")]

    def worst_latency(self):
        return max(latency for _, latency in self.results)


def test_hup_under_load_replaces_every_worker_and_fails_nothing(project):
    with start(project, "--noreload") as server:
        old_workers = wait_until(lambda: len(w := set(server.worker_pids())) == 2 and w)
        with Load(server) as load:
            write_views(project, "v2")
            os.kill(server.pid, signal.SIGHUP)
            server.wait_for(r"generation 2 \(pid \d+\) serving, 2 workers; stopping generation 1", timeout=30)
            wait_until(lambda: not any(alive(p) for p in old_workers), timeout=30)
            mark = len(load.results)
            wait_until(lambda: len(load.results) > mark + 20)
        assert load.failures() == []
        assert load.served("v1") and load.served("v2")
        # Once the old workers are gone only new code answers (each of the three
        # clients may still finish one request an old worker had taken).
        late = [r for r, _ in load.results[mark + len(load.threads):]]
        assert late and all(r.startswith("v2 ") for r in late)
        new_workers = set(server.worker_pids())
        assert len(new_workers) == 2 and not new_workers & old_workers


def test_autoreload_on_save_under_load(project):
    with start(project, "--reload") as server:
        assert "reload with kill -HUP" in server.output and "autoreload on" in server.output
        with Load(server) as load:
            write_views(project, "v2")
            server.wait_for(r"views\.py changed: starting generation 2 with fresh code", timeout=15)
            server.wait_for(r"generation 2 \(pid \d+\) serving", timeout=30)
            wait_until(lambda: load.served("v2"), timeout=10)
        assert load.failures() == []
        assert load.worst_latency() < 2.0


def test_broken_code_keeps_the_previous_generation_serving(project):
    with start(project, "--reload") as server:
        write_views(project, "def broken(:\n    pass\n")
        server.wait_for(r"generation 2 \(pid \d+\) failed \(exit \d+\): still serving the previous code; "
                        r"fix the error and save \(or send HUP\) to retry", timeout=30)
        assert "SyntaxError" in server.output
        assert server.get("/version")[1].startswith(b"v1 ")
        write_views(project, "v3")
        server.wait_for(r"generation 3 \(pid \d+\) serving", timeout=30)
        wait_until(lambda: server.get("/version")[1].startswith(b"v3 "), timeout=10)


def test_noreload_ignores_file_changes_until_hup(project):
    with start(project, "--noreload") as server:
        write_views(project, "v2")
        # What is tested is that nothing happens: the sleep spreads the looks over more than
        # two turns of the watcher's one-second poll, which a reload would have followed.
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            assert server.get("/version")[1].startswith(b"v1 ")
            time.sleep(0.2)
        assert "starting generation 2" not in server.output
        os.kill(server.pid, signal.SIGHUP)
        wait_until(lambda: server.get("/version")[1].startswith(b"v2 "), timeout=30)


def test_template_edit_is_picked_up(project):
    with start(project, "--reload") as server:
        assert server.get("/page")[1] == b"template one"
        page = project / "liveapp" / "templates" / "liveapp" / "page.html"
        page.write_text("template two")
        stamp = time.time() + 2
        os.utime(page, (stamp, stamp))
        wait_until(lambda: server.get("/page")[1] == b"template two", timeout=30)


def test_no_process_survives_the_server(project):
    with start(project, "--noreload") as server:
        os.kill(server.pid, signal.SIGHUP)
        server.wait_for(r"generation 2 \(pid \d+\) serving", timeout=30)
        everyone = set(children(server.pid)) | set(server.worker_pids())
        assert len(everyone) >= 3
        assert server.stop(signal.SIGTERM) == 0
        wait_until(lambda: not any(alive(p) for p in everyone), timeout=10, message="every process to exit")


def test_ctrl_c_during_a_reload_stops_everything(project):
    with start(project, "--noreload") as server:
        everyone = set(children(server.pid)) | set(server.worker_pids())
        os.kill(server.pid, signal.SIGHUP)
        server.wait_for("starting generation 2", timeout=10)
        everyone |= set(children(server.pid))
        started = time.monotonic()
        assert server.stop(signal.SIGINT) == 0
        assert time.monotonic() - started < 8
        wait_until(lambda: not any(alive(p) for p in everyone), timeout=10, message="every process to exit")


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


def test_workers_exit_when_the_master_is_killed(serve):
    server = serve(settings={"PREFORK_WORKERS": 2, "PREFORK_TIMEOUT": 2})
    workers = server.wait_workers(2)
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(5)
    wait_until(lambda: not any(alive(p) for p in workers), timeout=4, message="orphaned workers to exit")


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


def test_broken_code_at_start_waits_for_the_fix_with_autoreload(project):
    """As runserver: a syntax error at start (the master's system checks import the views)
    is printed, the command waits for a change, then starts afresh in the same pid."""
    write_views(project, "def broken(:\n    pass\n")
    server = start_broken(project, "--reload")
    with server:
        server.wait_for(r"fix the error and save a file to retry", timeout=30)
        assert "SyntaxError" in server.output and server.proc.poll() is None
        write_views(project, "v2")
        server.wait_banner(timeout=30)
        assert server.pid == server.proc.pid  # the pid the user started stays the server's
        server.wait_workers(2)
        assert server.get("/version")[1].startswith(b"v2 ")


def test_an_app_that_cannot_load_at_start_waits_for_the_fix_with_autoreload(project):
    """The checks pass but the workers cannot load the app: generation 1 ends, the master waits
    for a change and starts the next generation from fresh code."""
    (project / "liveapp" / "wsgi.py").write_text(WSGI + "raise RuntimeError('wsgi.py is broken')\n")
    server = start_broken(project, "--reload")
    with server:
        server.wait_banner(timeout=30)
        server.wait_for(r"generation 1 \(pid \d+\) failed \(exit 1\): nothing serves yet; fix the error", timeout=30)
        assert "RuntimeError: wsgi.py is broken" in server.output and server.proc.poll() is None
        write_source(project / "liveapp" / "wsgi.py", WSGI)
        server.wait_for(r"generation 2 \(pid \d+\) serving", timeout=30)
        assert server.get("/version")[1].startswith(b"v1 ")


def test_broken_code_at_start_without_autoreload_exits_1(project):
    write_views(project, "def broken(:\n    pass\n")
    server = start_broken(project, "--noreload")
    with server:
        server.wait_exit(1)
        assert "SyntaxError" in server.output and "retry" not in server.output


def start_broken(project, *args):
    server = Server(*args, env={
        "PYTHONPATH": f"{project}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "DJANGO_SETTINGS_MODULE": "liveapp.settings",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return server.start(wait=False)


def write_source(path, source):
    path.write_text(source)
    stamp = time.time() + 2
    os.utime(path, (stamp, stamp))


# -- unit: the master's view of a generation, no server ----------------------------------------

def test_a_generation_is_ready_once_its_arbiter_writes_r():
    from django_prefork.master import BOOTING, Generation

    read_end, write_end = os.pipe()
    generation = Generation(2, 4242, read_end, 2, None)
    try:
        assert generation.state == BOOTING and generation.is_reload
        assert not generation.said_ready()  # nothing written yet: never blocks
        os.write(write_end, b"R")
        assert generation.said_ready()
        assert generation.ready_fd is None  # the pipe is closed once it said so
        assert not generation.said_ready()
    finally:
        os.close(write_end)


def test_generation_one_is_no_reload():
    from django_prefork.master import Generation

    assert not Generation(1, 4242, None, 2, None).is_reload
