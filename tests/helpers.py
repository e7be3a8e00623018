"""What the tests share: `Server` starts `runprefork` as a real process and
talks to it over real sockets; the functions below it speak raw HTTP/1.1 to it."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BANNER_URL = re.compile(r"Starting prefork server at (\S+)")
BANNER_PID = re.compile(r"Master pid (\d+): (\d+) sync worker")
METRICS_AT = re.compile(r"metrics at (http://\S+):(\d+)/metrics")
EXIT_WAIT = 20  # seconds a server that fails to start may take to say why and exit


def h11_client(method="GET", data=None):
    """An h11 client that has sent `method` / (its response is what it reads next), fed `data`."""
    import h11

    client = h11.Connection(h11.CLIENT)
    method = method.decode() if isinstance(method, bytes) else method
    client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    if data is not None:
        client.receive_data(data)
    return client


def wait_until(predicate, timeout=10.0, interval=0.05, message="condition"):
    """Poll `predicate` until it returns something truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def busy_workers(server):
    """How many workers hold a request, as the master says on its control socket (every server has one)."""
    from django_prefork.management.commands.preforkstatus import fetch_status

    return fetch_status(server.pid)["busy"]


def held_connections(server):
    """Client connections the workers hold, by state (reading, waiting, writing, idle, lingering)."""
    from django_prefork.management.commands.preforkstatus import fetch_status

    return fetch_status(server.pid)["connections"]


def metrics_url(server, timeout=10):
    """The address a server with PREFORK_METRICS on port 0 bound, as its master logs it."""
    match = server.wait_for(METRICS_AT, timeout)
    return f"{match.group(1)}:{match.group(2)}"


def children(pid):
    """Live (non-zombie) child pids of `pid`, read from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Server:
    """One runprefork process. Use as a context manager: it never leaks processes."""

    def __init__(self, *args, settings=None, addr="127.0.0.1:0", env=None, manage=None):
        self.args = list(args)
        self.addr = addr
        self.settings = settings or {}
        self.extra_env = env or {}
        self.manage = manage  # a manage.py to run instead of `python -m django`
        self.lines = []
        self.proc = None
        self.url = None
        self.port = None
        self.pid = None
        self.seen_workers = set()

    # -- life cycle ----------------------------------------------------------

    def start(self, wait=True, timeout=30):
        env = dict(os.environ)
        env.update(
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "testproject")]),
            PREFORK_TEST_SETTINGS=json.dumps(self.settings),
        )
        if not self.manage:
            env.setdefault("DJANGO_SETTINGS_MODULE", "tests.fixtureapp.settings")
        env.update(self.extra_env)
        cmd = [sys.executable, self.manage] if self.manage else [sys.executable, "-m", "django"]
        cmd += ["runprefork"] + ([self.addr] if self.addr else []) + self.args
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, errors="replace",
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait:
            self.wait_banner(timeout)
        return self

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_banner(self, timeout=30):
        match = self.wait_for(BANNER_PID, timeout)
        self.pid = int(match.group(1))
        self.url = BANNER_URL.search(self.output).group(1)
        if self.url.startswith("http://"):
            self.port = int(self.url.rsplit(":", 1)[1].rstrip("/"))
        return self

    def wait_workers(self, count, timeout=15):
        def ready():
            pids = self.worker_pids()
            return pids if len(pids) == count else None

        return wait_until(ready, timeout, message=f"{count} workers (output:\n{self.output})")

    def wait_exit(self, code, timeout=EXIT_WAIT):
        """Wait for the server to exit by itself with status `code`; its output is then complete."""
        status = self.proc.wait(timeout)
        self._reader.join(5)
        assert status == code, f"exited {status}, not {code}:\n{self.output}"

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(2)

    def close(self):
        """Kill whatever is left, the server's children included."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.worker_pids()
            self.proc.kill()
            self.proc.wait(10)
        for pid in self.seen_workers:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # it exited between the look and the kill
        if self.proc.stdout:
            self._reader.join(2)
            self.proc.stdout.close()

    def __enter__(self):
        return self if self.proc else self.start()

    def __exit__(self, *exc):
        self.close()

    # -- looking at it ---------------------------------------------------------

    @property
    def output(self):
        return "\n".join(self.lines)

    def wait_for(self, pattern, timeout=10):
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern

        def found():
            match = regex.search(self.output)
            if match is None and self.proc.poll() is not None:
                self._reader.join(5)  # the pipe's end: every line the server wrote is read
                match = regex.search(self.output)
                if match is None:
                    raise AssertionError(
                        f"server exited ({self.proc.returncode}) before printing {regex.pattern!r}:\n{self.output}"
                    )
            return match

        return wait_until(found, timeout, message=f"{regex.pattern!r} in output:\n{self.output}")

    def arbiter_pids(self):
        """The generations' arbiters: the master's children."""
        pids = children(self.pid)
        self.seen_workers.update(pids)
        return pids

    def worker_pids(self):
        """Every generation's workers: the master's grandchildren."""
        pids = sorted(w for arbiter in self.arbiter_pids() for w in children(arbiter))
        self.seen_workers.update(pids)
        return pids

    # -- talking to it -----------------------------------------------------------

    def connect(self, timeout=10):
        if self.url.startswith("unix:"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(self.url[len("unix:"):])
            return sock
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def request(self, method="GET", path="/pid", body=None, headers=None, timeout=10):
        """One HTTP request; returns (status, headers dict, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port or 80, timeout=timeout)
        if self.url.startswith("unix:"):
            conn.sock = self.connect(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def get(self, path="/pid", **kwargs):
        status, _, body = self.request("GET", path, **kwargs)
        return status, body

    def raw(self, data, timeout=10):
        """Send raw bytes; return everything the server sent before closing."""
        sock = self.connect(timeout)
        try:
            sock.sendall(data)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            sock.close()


# -- raw HTTP ----------------------------------------------------------------------

CRLF = b"\r\n"


def head(*lines, body=b""):
    return CRLF.join(lines) + CRLF + CRLF + body


GOOD = head(b"GET /echo HTTP/1.1", b"Host: x")

STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")


def receive_all(sock):
    """Everything the server sends until it closes (a reset ends it too)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def send(server, data, half_close=True, timeout=10):
    """Send `data` (then shut our side) and return all the server answered."""
    sock = server.connect(timeout)
    try:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except ConnectionResetError:
        return b"".join(chunks)
    finally:
        sock.close()


def status_of(response):
    match = STATUS.match(response)
    assert match, f"not an HTTP/1.1 response: {response[:200]!r}"
    return int(match.group(1))


def worker_pid(server):
    return json.loads(split(send(server, GOOD))[1])["pid"]


def split(response):
    """(head, body) of a response, the body de-chunked when it was sent chunked."""
    head, _, body = response.partition(b"\r\n\r\n")
    if re.search(rb"\r\nTransfer-Encoding: chunked\r\n", head + b"\r\n"):
        body = dechunk(body)
    return head, body


def dechunk(data):
    """The chunked body's content; AssertionError if the last chunk is missing."""
    out = b""
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        assert sep, "the chunked body was cut short"
        size = int(size_line, 16)
        if size == 0:
            assert data == b"\r\n", data[:100]
            return out
        assert data[size:size + 2] == b"\r\n", "the chunked body was cut short"
        out += data[:size]
        data = data[size + 2:]


# -- a server's snapshot, built by hand -------------------------------------------------

def hand_snapshot(**fields):
    """A Snapshot of a made-up server: one serving generation, two workers, one of them busy.

    Keyword arguments replace its fields; what the renderers show is then
    known exactly, with no server started.
    """
    from django_prefork.scoreboard import BUCKETS, RESTART_REASONS, Counters
    from django_prefork.snapshot import GenerationInfo, ListenerInfo, MasterInfo, Snapshot, WorkerInfo

    buckets = [0] * (len(BUCKETS) + 1)
    buckets[0], buckets[4], buckets[-1] = 5, 2, 1  # <= 5 ms, <= 100 ms, past 10 s
    totals = Counters((8, 4096, 0, 6, 1, 1, 0, *buckets, 12.75))
    defaults = dict(
        master=MasterInfo(pid=4242, name="testproject", uptime=3725.0),
        healthy=True,
        generation=2,
        generations=(GenerationInfo(2, "serving", 4300, 2),),
        workers=(
            WorkerInfo(slot=0, number=1, pid=4301, state="idle", age=61.5, request=None, request_age=None,
                       requests=5, rss=52428800, uss=20971520, generation=2),
            WorkerInfo(slot=1, number=2, pid=4302, state="busy", age=12.0, request="GET /slow?x=1",
                       request_age=2.5, requests=3, rss=None, uss=None, generation=2),
        ),
        listeners=(ListenerInfo("http://127.0.0.1:8000/", queued=3, backlog=2048), ListenerInfo("unix:/run/x.sock")),
        worker_target=2,
        worker_bounds=None,
        scaling={"up": 0, "down": 0},
        reloads={"ok": 1, "failed": 0},
        restarts={**dict.fromkeys(RESTART_REASONS, 0), "timeout": 1},
        totals=totals,
    )
    defaults.update(fields)
    return Snapshot(**defaults)


def forked_as(uid, work):
    """Fork a child that becomes `uid` (its group too) and runs `work()`; its pid. Takes root."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            work()
        finally:
            os._exit(0)
    return pid
