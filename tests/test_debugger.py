"""pdb in a worker, on a real terminal: the timeout waits for the person at the
prompt, and the terminal's echo comes back when a worker dies there or the
server stops.

The server runs as a developer runs it: its own session, with a pty as its
controlling terminal and as stdin, stdout and stderr (`setsid --ctty`), so
it is the terminal's foreground job. A thread drains the pty's output, or
the server would block writing its log once the pty's buffer is full.
"""

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time

import pytest

from .helpers import BANNER_PID, BANNER_URL, REPO, alive, children, wait_until

# util-linux's setsid gives the server the pty as its controlling terminal, as a shell would.
pytestmark = pytest.mark.skipif(shutil.which("setsid") is None, reason="setsid (util-linux) is not installed")

PROMPT = "(Pdb) "
ECHOING = termios.ECHO | termios.ICANON


class PtyServer:
    def __init__(self, *args, settings=None):
        self.master_fd, slave_fd = os.openpty()
        env = dict(os.environ)
        env.update(
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "testproject")]),
            PREFORK_TEST_SETTINGS=json.dumps(settings or {}),
            DJANGO_SETTINGS_MODULE="tests.fixtureapp.settings",
            TERM="dumb",
        )
        env.pop("PYTHONBREAKPOINT", None)
        cmd = ["setsid", "--ctty", sys.executable, "-m", "django", "runprefork", "127.0.0.1:0", *args]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=slave_fd, stdout=slave_fd, stderr=slave_fd)
        os.close(slave_fd)
        self.chunks = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.pid = self.port = None
        self.seen = set()

    def wait_banner(self):
        banner = self.wait_for(BANNER_PID, timeout=30)
        self.pid = int(banner.group(1))
        self.port = int(BANNER_URL.search(self.output).group(1).rstrip("/").rsplit(":", 1)[1])
        return self

    def _read(self):
        while True:
            try:
                data = os.read(self.master_fd, 65536)
            except OSError:  # EIO: every process holding the slave has gone
                return
            if not data:
                return
            self.chunks.append(data)

    @property
    def output(self):
        return b"".join(self.chunks).decode("utf-8", "replace")

    def wait_for(self, pattern, timeout=15, since=0):
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        return wait_until(lambda: regex.search(self.output, since), timeout,
                          message=f"{regex.pattern!r} in output:\n{self.output}")

    def type(self, text):
        os.write(self.master_fd, text.encode())

    def lflag(self):
        return termios.tcgetattr(self.master_fd)[3]  # the slave's settings, seen from the master side

    def worker_pids(self):
        if self.pid is None:
            return []
        pids = [w for arbiter in children(self.pid) for w in children(arbiter)]
        self.seen.update(pids)
        return pids

    def get_in_background(self, path):
        """GET `path` in a thread; returns a dict that gets "status" and "body" (or "error")."""
        result = {}

        def run():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                result["body"] = response.read()
                result["status"] = response.status
            except OSError as exc:
                result["error"] = exc
            finally:
                conn.close()

        result["thread"] = threading.Thread(target=run, daemon=True)
        result["thread"].start()
        return result

    def get(self, path="/pid"):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def close(self):
        self.worker_pids()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in self.seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.reader.join(2)
        os.close(self.master_fd)


@pytest.fixture
def pty_server():
    started = []

    def start(*args, **kwargs):
        started.append(PtyServer(*args, **kwargs))  # killed at teardown even if it never starts
        return started[-1].wait_banner()

    yield start
    for server in started:
        server.close()


def test_a_worker_at_the_pdb_prompt_outlives_the_timeout(pty_server):
    server = pty_server("--timeout", "2", settings={"PREFORK_WORKERS": 1})
    (worker,) = wait_until(lambda: len(p := server.worker_pids()) == 1 and p)
    assert server.get()[0] == 200
    request = server.get_in_background("/debug")
    server.wait_for(re.escape(PROMPT))
    time.sleep(5)  # the point of the test: well past the 2 s timeout, at the prompt
    assert alive(worker)
    assert "timed out" not in server.output
    since = len(server.output)
    server.type("p answer\n")  # pdb answers: the worker is still there, and listening
    server.wait_for(r"'before the breakpoint'", since=since)
    server.type("c\n")
    request["thread"].join(15)
    assert request.get("status") == 200, (request, server.output)
    assert request["body"] == b"after the breakpoint"
    # The silence counts afresh once pdb lets go: the worker lives on and serves.
    assert server.get() == (200, str(worker).encode())
    assert "timed out" not in server.output


def test_echo_comes_back_when_a_worker_dies_at_the_prompt(pty_server):
    server = pty_server("--timeout", "2", settings={"PREFORK_WORKERS": 2})
    wait_until(lambda: len(server.worker_pids()) == 2)
    assert server.lflag() & ECHOING == ECHOING, "the terminal starts cooked"
    request = server.get_in_background("/debug")
    server.wait_for(re.escape(PROMPT))
    # readline, waiting for a line, turned echo and canonical mode off.
    wait_until(lambda: server.lflag() & ECHOING == 0, message="readline to switch echo off")
    os.kill(int(server.wait_for(r"breakpoint in pid (\d+)").group(1)), signal.SIGKILL)
    wait_until(lambda: server.lflag() & ECHOING == ECHOING, message="echo and icanon back on")
    request["thread"].join(15)
    assert "error" in request  # its worker died: no answer
    server.wait_for(r"was killed by SIGKILL")
    wait_until(lambda: len(server.worker_pids()) == 2, message="a replacement")
    assert server.get()[0] == 200


def test_echo_comes_back_when_the_server_stops_with_a_worker_at_the_prompt(pty_server):
    server = pty_server("--timeout", "2", settings={"PREFORK_WORKERS": 1})
    wait_until(lambda: len(server.worker_pids()) == 1)
    server.get_in_background("/debug")
    server.wait_for(re.escape(PROMPT))
    wait_until(lambda: server.lflag() & ECHOING == 0, message="readline to switch echo off")
    server.type("\x03")  # Ctrl-C: SIGINT to the whole foreground job, as from a keyboard
    assert server.proc.wait(20) == 0
    assert server.lflag() & ECHOING == ECHOING



def test_a_reload_during_a_pdb_session_restores_the_masters_settings_not_pdbs(pty_server):
    server = pty_server("--timeout", "2", settings={"PREFORK_WORKERS": 1})
    wait_until(lambda: len(server.worker_pids()) == 1)
    first = server.get_in_background("/debug")
    server.wait_for(re.escape(PROMPT))
    wait_until(lambda: server.lflag() & ECHOING == 0, message="readline to switch echo off")
    # Generation 2 starts while echo is off; it must not take that for the terminal's own state.
    os.kill(server.pid, signal.SIGHUP)
    server.wait_for(r"generation 2 \(pid \d+\) serving, 1 workers; stopping generation 1", timeout=30)
    since = len(server.output)
    server.type("c\n")  # generation 1's worker finishes its request, then leaves
    first["thread"].join(15)
    assert first.get("status") == 200, (first, server.output)
    server.wait_for(r"generation 1 \(pid \d+\) stopped", since=since)
    second = server.get_in_background("/debug")  # generation 2's worker, now the only one
    victim = int(server.wait_for(r"breakpoint in pid (\d+)", since=since).group(1))
    server.wait_for(re.escape(PROMPT), since=since)
    wait_until(lambda: server.lflag() & ECHOING == 0, message="readline to switch echo off")
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: server.lflag() & ECHOING == ECHOING, message="echo and icanon back on")
    second["thread"].join(15)
    assert server.get()[0] == 200


def test_ctrl_c_after_continuing_from_pdb_stops_the_server(pty_server):
    """`c` leaves pdb's SIGINT handler behind; the worker's own must be back, or Ctrl-C
    would open a (Pdb) prompt in the worker's loop instead of stopping it."""
    server = pty_server("--timeout", "2", settings={"PREFORK_WORKERS": 1})
    wait_until(lambda: len(server.worker_pids()) == 1)
    request = server.get_in_background("/debug")
    server.wait_for(re.escape(PROMPT))
    server.type("c\n")
    request["thread"].join(15)
    assert request.get("status") == 200, (request, server.output)
    assert server.get()[0] == 200  # the worker is back in its loop
    since = len(server.output)
    server.type("\x03")  # Ctrl-C: SIGINT to the whole foreground job
    assert server.proc.wait(20) == 0
    assert PROMPT not in server.output[since:], server.output[since:]


def test_the_workers_sigint_handler_is_back_when_pdb_lets_go(monkeypatch):
    """Unit: whatever pdb installed during the interaction, the outermost one's end restores the worker's."""
    import pdb

    from django_prefork import debugger

    def pdbs_handler(signum, frame):
        pass

    def workers_handler(signum, frame):
        pass

    def interaction(self, *args):
        signal.signal(signal.SIGINT, pdbs_handler)  # what `c` does
        pdb.Pdb._previous_sigint_handler = workers_handler

    class Beat:
        def set_debugging(self, on):
            pass

        def notify(self):
            pass

    monkeypatch.setattr(pdb.Pdb, "interaction", interaction)
    previous = signal.signal(signal.SIGINT, workers_handler)
    debugger.install()
    debugger.attach(Beat())
    try:
        pdb.Pdb.interaction(object())
        assert signal.getsignal(signal.SIGINT) is workers_handler
        assert pdb.Pdb._previous_sigint_handler is None
    finally:
        debugger.attach(None)
        signal.signal(signal.SIGINT, previous)


def test_a_reload_never_kills_a_worker_at_the_pdb_prompt(pty_server):
    """The old generation's grace period ends with the person still at the prompt: the
    worker lives on; when they continue, its request is answered and its generation ends."""
    server = pty_server("--timeout", "2", "--graceful-timeout", "1", settings={"PREFORK_WORKERS": 1})
    (worker,) = wait_until(lambda: len(p := server.worker_pids()) == 1 and p)
    request = server.get_in_background("/debug")
    server.wait_for(re.escape(PROMPT))
    os.kill(server.pid, signal.SIGHUP)
    server.wait_for(r"generation 2 \(pid \d+\) serving, 1 workers; stopping generation 1", timeout=30)
    server.wait_for(r"generation 1: a worker is at the pdb prompt; it ends when you continue")
    time.sleep(3)  # the point of the test: past the 1 s grace period (and the 2 s timeout), at the prompt
    assert alive(worker)
    assert "killing" not in server.output and "SIGKILL" not in server.output
    since = len(server.output)
    server.type("c\n")
    request["thread"].join(15)
    assert request.get("status") == 200, (request, server.output)
    assert request["body"] == b"after the breakpoint"
    server.wait_for(r"generation 1 \(pid \d+\) stopped", since=since)
    wait_until(lambda: not alive(worker), message="the debugged worker to exit")
    assert server.get()[0] == 200  # generation 2's worker


def test_ctrl_c_stops_a_graceful_stop_held_by_pdb(pty_server):
    """A TERM waits for the person at the prompt too; Ctrl-C then stops everything at once."""
    server = pty_server("--graceful-timeout", "1", settings={"PREFORK_WORKERS": 1})
    wait_until(lambda: len(server.worker_pids()) == 1)
    server.get_in_background("/debug")
    server.wait_for(re.escape(PROMPT))
    os.kill(server.pid, signal.SIGTERM)
    server.wait_for(r"a worker is at the pdb prompt; it ends when you continue")
    time.sleep(2)
    assert server.proc.poll() is None
    server.type("\x03")
    assert server.proc.wait(20) == 0


# -- unit: the debugger's flag and pauses, no server --------------------------------------------

def test_a_pause_is_given_back_only_after_the_request_started(monkeypatch):
    from django_prefork import debugger

    monkeypatch.setattr(debugger, "released_at", 100.0)
    assert debugger.paused_since(90.0) == 10.0  # pdb let go 10 s into the request: the watchdog counts from then
    assert debugger.paused_since(120.0) == 0.0  # a pause before the request is none of its business
    assert not debugger.held()


def test_install_wraps_pdb_once():
    import pdb

    from django_prefork import debugger

    debugger.install()
    wrapped = pdb.Pdb.interaction
    debugger.install()
    assert pdb.Pdb.interaction is wrapped and wrapped.prefork_wrapped
