"""runprefork side by side with its peers, in one run, on testproject/.

    python benchmarks/run.py                 # all scenarios, 2 workers, 3 rounds
    python benchmarks/run.py --quick         # hello only, short rounds, no overload
    python benchmarks/run.py --scenarios burst --servers runprefork --no-memory
                                             # the burst scenario alone
    python benchmarks/run.py --scenarios hello-keepalive,json-keepalive,attack --rounds 2 --no-memory
                                             # the keep-alive and attack scenarios (and hello, json)
    python benchmarks/run.py --scenarios io --servers runprefork,gunicorn,uwsgi,granian --no-memory
                                             # the I/O-bound scenario alone: threads against processes

Each round runs every scenario against every server in turn (the order
alternating between rounds) after a warm-up; the report gives medians and
the median of the per-round ratios against gunicorn's sync worker. Load:
wrk (`apt-get install wrk`) with `Connection: close`, since sync servers
close every connection; without wrk, a small Python client does the job
(slower: compare ratios, not absolute numbers). Also measured: memory (sum
of PSS over the server's processes) at 2 and 8 workers, and start to first
200 response. Writes benchmarks/results/<date>.md (and latest.md), plus a
PNG chart when matplotlib is installed.

The "burst" scenario (issue #13; runprefork only; part of a full run) puts
one load on three configurations, each a fresh server: a fixed 1 worker, a
fixed 4 workers, and scaling from 1 to 4 (`PREFORK_WORKERS=1`,
`PREFORK_MAX_WORKERS=4`, which testproject's settings read from the
environment). The load: 6 clients, each requesting `/slow?seconds=0.2` in a
loop for 8 s (`--burst-seconds`), closed loop, one connection a request.
The client is a Python one with a thread a client (`burst_load`), wrk or
not: it counts each client's requests and failures on its own, and at 5 to
30 requests a second its timing is precise enough. Reported per
configuration: throughput (completed requests over the time until the last
one finished), p50, p99, failures (errors and non-2xx), and for scaling the
most workers seen, when the count first reached 4, and how long after the
load stopped it was back at 1 (the workers are counted by their process
titles every 0.1 s). A run of the burst alone writes results/burst.md and
burst.json and leaves latest.md alone.

The "io" scenario (issue #21; part of a full run): an I/O-bound view, testproject's
`/slow?seconds=0.05` (50 ms of time.sleep, no CPU), under wrk with 32 connections
(`--io-connections`), `Connection: close` and keep-alive, each in turn on five fresh
servers (IO_CONFIGS), warmed up for a second with the same load: runprefork with
`PREFORK_WORKERS=2 PREFORK_THREADS=8` in its environment (its command line without
--workers; PREFORK_KEEPALIVE for keep-alive), gunicorn `-k gthread --workers 2 --threads 8`,
uWSGI `--processes 2 --threads 8` (--http-socket, --http11-socket for keep-alive), granian
`--workers 2 --blocking-threads 8`, and runprefork with processes only, `PREFORK_WORKERS=16`
(threads 1). Sixteen requests wait at once in each: at most 320 req/s. Reported per server
and mode: requests/s, p50/p99, failures, and the sum of PSS over the server's processes read
as the load ends (its threads all started); then runprefork 2×8's requests/s over each
other's, and its memory over runprefork 16×1's (the target: ≤ 0.4). A run of the io alone
writes results/io.md and io.json and leaves latest.md alone.

The limit (issue #14), measured in the same run, per scenario: what no
server can pass on this machine with this client. Two parts:

- the transport ceiling: a minimal server answering a fixed 200 ("Hello,
  world!", and the same 1 MiB file by sendfile for the file scenario) with
  the same client and connection pattern, taking its turn in the rotation
  like a server: nginx `return 200` (`daemon off`, one worker a CPU, access
  log off, a temp config on a free loopback port) when nginx is installed,
  else the simplest Python accept loop (one process a CPU; the report says
  which). Its transport CPU per request (wrk, kernel and server) is taken
  as cores × wall time / requests, as if it kept every core busy; the report
  gives how busy the CPUs were during its runs (/proc/stat) and, where they
  were not, the limit with the busy CPU time instead (with wrk's one
  thread, the client can be what holds the ceiling back);
- the app's CPU per request: testproject's WSGI application
  (`testproject.wsgi.application`, in a child with the servers' environment)
  called in-process in a tight loop with the environ a server would build
  for wrk's request, the body consumed and closed (a FileResponse through a
  `wsgi.file_wrapper`, left to sendfile as the servers do), after a
  warm-up, timed with time.process_time; once a round.

    limit (req/s) = cores / (transport CPU + app CPU per request)
                  = 1 / (1 / ceiling req/s + app CPU per request / cores)

Each server's requests/s is reported as a fraction of the limit (median of
the per-round fractions), alongside the ratios of runprefork to gunicorn,
uWSGI and granian.

The "bare app" scenario: every server started a second time, on
benchmarks/bare_app.py (a WSGI callable answering nginx's "Hello, world!",
no Django; runprefork and runserver get it through bare_settings.py), and
measured like the others: what a server costs on its own.

For every measurement the harness also reads the CPU (user and system) of
the server's process and its descendants from /proc, and reports it per
request answered: on hello it is the server plus Django as its workers pay
it, on the bare app the server alone; the difference is Django's part in
that server's workers, cold caches included (the in-process figure of the
limit is Django with hot ones).

The "overload" scenario (issue #14): hello with 64 connections
(`--overload-connections`) on the same 2 workers, part of every run that has
hello (not of --quick; `--no-overload` leaves it out): p50/p99/max latency,
requests/s and % of the limit, and the errors by kind (wrk's socket errors:
connect, read, write, timeout after 2 s; and non-2xx answers), in a table of
its own.

Servers that answer a `Connection: close` request without saying
`Connection: close` (uWSGI's --http-socket, runserver) get one wrk read
error for every request answered: wrk goes by the answer and sends its next
request on the connection they close. The harness asks each server once at
start and counts, for those, only the read errors beyond the requests
answered as failures; wrk's raw counts stay in the JSON and the overload
table.

The keep-alive scenarios (issue #19), "hello-keepalive" and "json-keepalive": wrk
without `Connection: close`, each server started a third time in its keep-alive
configuration (_keepalive_commands: gunicorn's sync worker cannot keep a connection, so
gunicorn runs `-k gthread --threads 1`; uWSGI `--http11-socket`, its `--http-socket
--http-keepalive` reusing nothing; runprefork with PREFORK_KEEPALIVE=75 in its environment,
which testproject's settings read; granian and nginx as they are; runserver left out). Each
brings its `Connection: close` twin (hello, json) into the run, and a table of its own sets
them side by side with what each server did with a connection after an answer (asked once
at start: reused, closed, closed without saying so), and runprefork's ratios: keep-alive to
its own close, to granian's keep-alive, to the minimal loop's.

The minimal loop (issue #23; `minimal` in --servers): benchmarks/minimal_loop.py, a
pre-fork accept loop of about sixty lines around testproject's application that checks
nothing, on hello and JSON, close and keep-alive: the floor that Python and Django set,
shown in every run beside runprefork. A ceiling, not a design.

The "attack" scenario (issue #19; benchmarks/attack.py): each of runprefork, gunicorn
(sync), uWSGI, granian and waitress (one process of --workers threads), fresh and with
--workers workers, held by 200 idle connections, 50 slowloris heads (a byte a second), 10
slow 1 MB uploads (4 KB/s) and 10 slow readers of /file (4 KiB/s, 4 KiB SO_RCVBUF) at once
(`--attack-idle`, `--attack-slowloris`, `--attack-uploads`, `--attack-readers`), while a
probe sends a GET /hello every 50 ms for 8 s (`--attack-seconds`, 4 with --quick), open
loop: probes sent, answered, failed by kind, p50/p99/max of the answered, over all rounds.
A run of the attack alone writes results/attack.md and leaves latest.md alone.

The machine is shared at times: before each measurement the harness waits
(up to `--wait-quiet` seconds) for any wrk it did not start to end, and the
report counts the measurements that still overlapped one.
"""

import argparse
import datetime
import functools
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PROJECT = os.path.join(REPO, "testproject")
SCENARIOS = {  # name: (path, method)
    "hello": ("/hello", "GET"),
    "json": ("/json", "GET"),
    "sqlite": ("/db", "GET"),
    "file 1 MiB": ("/file", "GET"),
    "POST 100 KB": ("/upload", "POST"),
    # Not testproject: each server started again on benchmarks/bare_app.py, a WSGI callable
    # answering what nginx's `return 200` answers. What a server costs on its own.
    "bare app": ("/hello", "GET"),
    # Persistent connections (wrk without `Connection: close`), each server in its keep-alive
    # configuration (server_commands); beside the twin in KEEPALIVE.
    "hello-keepalive": ("/hello", "GET"),
    "json-keepalive": ("/json", "GET"),
}
BARE = "bare app"
KEEPALIVE = {"hello-keepalive": "hello", "json-keepalive": "json"}  # each with its `Connection: close` twin
KEEPALIVE_SECONDS = "75"  # runprefork's PREFORK_KEEPALIVE in the keep-alive configuration
MINIMAL = "minimal loop"  # benchmarks/minimal_loop.py: the floor, on hello and JSON only
# runprefork with the app loaded before the fork, as uWSGI and the minimal loop load theirs: the
# workers then run one copy of Django's code and data, which the CPUs' shared cache holds once.
PRELOAD = "runprefork --preload"
MINIMAL_SCENARIOS = ("hello", "json", *KEEPALIVE)
ATTACK = "attack"  # slow clients beside a probe (benchmarks/attack.py), in a table of its own
ATTACK_SERVERS = ("runprefork", "gunicorn", "uwsgi", "granian", "waitress")
POST_BODY = b"x" * 100_000
OVERLOAD = "overload"  # hello at --overload-connections, reported in a table of its own
IO = "io"  # threads against processes on an I/O-bound view (issue #21), in a table of its own
IO_PATH = "/slow?seconds=0.05"  # testproject's slow view: time.sleep, the GIL let go, no CPU
IO_CONFIGS = {  # name: (server, workers, threads a worker)
    "runprefork 2×8": ("runprefork", 2, 8),
    "gunicorn gthread 2×8": ("gunicorn", 2, 8),
    "uwsgi 2×8": ("uwsgi", 2, 8),
    "granian 2×8": ("granian", 2, 8),
    "runprefork 16×1": ("runprefork", 16, 1),
}
IO_THREADS, IO_PROCESSES = "runprefork 2×8", "runprefork 16×1"
BURST = "burst"  # a scenario of its own kind: runprefork only, see the docstring
BURST_PATH = "/slow?seconds=0.2"
BURST_CLIENTS = 6
BURST_CONFIGS = {  # name: (--workers, PREFORK_MAX_WORKERS or None)
    "fixed 1 worker": (1, None),
    "fixed 4 workers": (4, None),
    "scaling 1→4": (1, 4),
}


CEILING = "ceiling"  # the transport ceiling's name among the servers (nginx or a Python accept loop)
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
NGINX_CONF = """
daemon off;
{user}
worker_processes {cores};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type text/plain;
            return 200 "Hello, world!\\n";
        }}
        location = /file {{
            default_type application/octet-stream;
            alias {tmp}/1MiB.bin;
        }}
    }}
}}
"""


def cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def ceiling_command(port, tmp):
    """(label, command) of the transport ceiling on `port`; `tmp` is a directory of its own."""
    big = os.path.join(tmp, "1MiB.bin")
    if not os.path.exists(big):
        with open(big, "wb") as f:
            f.write(os.urandom(1 << 20))
        os.chmod(big, 0o644)
    if NGINX:
        conf = os.path.join(tmp, f"nginx-{port}.conf")
        user = "user nobody nogroup;" if os.geteuid() == 0 else ""  # else nginx runs as us anyway
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(user=user, cores=cores(), tmp=tmp, port=port))
        version = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
        return f"nginx {version} `return 200`", [NGINX, "-p", tmp, "-e", os.path.join(tmp, "error.log"), "-c", conf]
    return "Python accept loop", [sys.executable, os.path.abspath(__file__), "--transport-child", str(port), big]


def transport_child(port, big):
    """The fallback ceiling: the simplest accept loop answering a fixed 200, one process a CPU."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(port)))
    sock.listen(1024)
    hello = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: close\r\n\r\n"
             b"Hello, world!\n")
    file_head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n" % os.path.getsize(big))
    for _ in range(cores() - 1):
        if os.fork() == 0:
            break
    while True:
        conn, _ = sock.accept()
        try:
            _answer(conn, hello, file_head, big)
        except OSError:
            pass
        finally:
            conn.close()


def _answer(conn, hello, file_head, big):
    data = b""
    while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)\r\ncontent-length:[ \t]*(\d+)", head)
    left = int(m.group(1)) - len(rest) if m else 0
    while left > 0 and (chunk := conn.recv(min(left, 65536))):
        left -= len(chunk)
    if head.startswith(b"GET /file "):
        conn.sendall(file_head)
        with open(big, "rb") as f:
            conn.sendfile(f)
    else:
        conn.sendall(hello)


class _FileWrapper:
    """wsgi.file_wrapper for the in-process measure: the file is left to sendfile, as the servers do."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike

    def __iter__(self):
        return iter(())

    def close(self):
        self.filelike.close()


def app_cost_child(spec):
    """In a child with the servers' environment: µs of CPU per request of testproject's WSGI
    application called in-process, for each path; prints {path: µs} as JSON."""
    import io

    from testproject.wsgi import application

    statuses = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    out = {}
    for path, method in spec["paths"]:
        body = POST_BODY if method == "POST" else b""
        base = {
            "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000",
            "HTTP_HOST": "127.0.0.1:8000", "HTTP_CONNECTION": "close",
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
            "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
            "wsgi.file_wrapper": _FileWrapper,
        }
        if method == "POST":
            base.update(CONTENT_LENGTH=str(len(body)), CONTENT_TYPE="application/octet-stream")

        def once():
            environ = dict(base)
            environ["wsgi.input"] = io.BytesIO(body)
            result = application(environ, start_response)
            try:
                for _ in result:
                    pass
            finally:
                if hasattr(result, "close"):
                    result.close()

        statuses.clear()
        warm_until = time.process_time() + spec["seconds"] / 3
        while time.process_time() < warm_until:
            once()
        if not statuses or not statuses[-1].startswith("200"):
            sys.exit(f"{method} {path} answered {statuses[-1:] or 'nothing'} in-process")
        done, started = 0, time.process_time()
        while (elapsed := time.process_time() - started) < spec["seconds"]:
            for _ in range(20):  # the clock read (a system call) every 20 requests
                once()
            done += 20
        out[path] = elapsed / done * 1e6
    print(json.dumps(out))


def bare_app_cost(seconds):
    """µs of CPU per request of benchmarks/bare_app.py called in-process (no Django: a few µs at most)."""
    from bare_app import application

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/hello"}
    done, started = 0, time.process_time()
    while (elapsed := time.process_time() - started) < seconds / 4:
        for _ in range(100):
            for _ in application(environ, lambda status, headers, exc_info=None: None):
                pass
        done += 100
    return elapsed / done * 1e6


def measure_app_cost(env, paths, seconds):
    """{(path, method): µs of CPU per request} of the app called in-process (see app_cost_child)."""
    spec = {"paths": sorted(set(paths)), "seconds": seconds}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--app-cost-child", json.dumps(spec)],
                          cwd=PROJECT, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"the in-process measure failed: {proc.stderr.strip()[-2000:]}")
    by_path = json.loads(proc.stdout.strip().splitlines()[-1])
    return {(path, method): by_path[path] for path, method in paths}


def cpu_busy():
    """(busy, total) jiffies of all the machine's CPUs, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    except (OSError, ValueError):
        return None
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return total - idle - iowait, total


def foreign_wrk():
    """pids of the wrk processes on the machine that this run did not start."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "wrk":
                    continue
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid != os.getpid():
            found.append(int(entry))
    return found


def measured(load, url, method, seconds, connections, wait_quiet):
    """One load, after waiting up to `wait_quiet` s for other wrk runs on the machine to end; the
    result also says how busy the CPUs were and whether a wrk not ours overlapped it."""
    deadline, said = time.monotonic() + wait_quiet, False
    while (others := foreign_wrk()) and time.monotonic() < deadline:
        if not said:
            print(f"  waiting for another wrk on the machine to end (pid {', '.join(map(str, others))})", flush=True)
            said = True
        time.sleep(0.5)
    overlap, stop = [bool(foreign_wrk())], threading.Event()

    def watch():
        while not stop.wait(0.5):
            overlap[0] = overlap[0] or bool(foreign_wrk())

    watcher = threading.Thread(target=watch)
    watcher.start()
    before = cpu_busy()
    try:
        r = load(url, method, seconds, connections)
    finally:
        after = cpu_busy()
        stop.set()
        watcher.join()
    r["cpu_busy"] = ((after[0] - before[0]) / (after[1] - before[1])
                     if before and after and after[1] > before[1] else None)
    r["shared"] = overlap[0]
    return r


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has_module(name):
    return subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True).returncode == 0


def server_commands(workers, port, bare=False, keepalive=False):
    """The servers to compare, by name: the command that runs each on `port`; with `bare`, serving
    benchmarks/bare_app.py instead of testproject (Django's commands through bare_settings.py);
    with `keepalive`, each in its keep-alive configuration, runserver left out (runprefork's is
    its environment: PREFORK_KEEPALIVE, see keepalive_env)."""
    if keepalive:
        return _keepalive_commands(server_commands(workers, port, bare), workers, port)
    py = sys.executable
    manage = os.path.join(PROJECT, "manage.py")
    app = "bare_app:application" if bare else "testproject.wsgi:application"
    settings = ["--settings", "bare_settings"] if bare else []
    servers = {
        "runprefork": [py, manage, "runprefork", f"127.0.0.1:{port}", "--workers", str(workers), "--noreload",
                       *settings],
        "gunicorn": [py, "-m", "gunicorn", "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
                     "--worker-class", "sync", app],
        "runserver": [py, manage, "runserver", f"127.0.0.1:{port}", "--noreload", *settings],
    }
    if has_module("granian"):
        servers["granian"] = [py, "-m", "granian", "--interface", "wsgi", "--workers", str(workers),
                              "--host", "127.0.0.1", "--port", str(port), app]
    if has_module("pyuwsgi"):
        servers["uwsgi"] = [py, "-c", "import pyuwsgi; pyuwsgi.run()", "--http-socket", f"127.0.0.1:{port}", "--master",
                            "--processes", str(workers), "--module", app,
                            "--disable-logging", "--die-on-term"]  # else SIGTERM makes uWSGI 2.0 reload
    if has_module("waitress"):  # threads, not processes: one process of `workers` threads
        servers["waitress"] = [py, "-m", "waitress", f"--threads={workers}", f"--listen=127.0.0.1:{port}", app]
    if not bare:
        servers[PRELOAD] = servers["runprefork"] + ["--preload"]
        servers[MINIMAL] = [py, os.path.join(HERE, "minimal_loop.py"), str(port), str(workers)]
    return servers


def _keepalive_commands(servers, workers, port):
    """The keep-alive configuration of each server that has one: gunicorn's sync worker closes
    every connection, so gunicorn runs its gthread worker with one thread (one request at a time
    a process, as sync; idle connections wait in its poller); uWSGI's --http-socket closes too
    (2.0's --http-keepalive is taken but curl -v sees no connection reused), its --http11-socket
    keeps them; granian, waitress and nginx keep them by default."""
    servers.pop("runserver", None)
    if "gunicorn" in servers:
        servers["gunicorn"] = [arg if arg != "sync" else "gthread" for arg in servers["gunicorn"]] + ["--threads", "1"]
    if "uwsgi" in servers:
        servers["uwsgi"] = [arg if arg != "--http-socket" else "--http11-socket" for arg in servers["uwsgi"]]
    if MINIMAL in servers:
        servers[MINIMAL] = servers[MINIMAL] + ["--keepalive"]
    return servers


def keepalive_env(env):
    """runprefork's keep-alive configuration (PREFORK_KEEPALIVE, which testproject's settings read
    from the environment; a runprefork without the setting closes every connection still)."""
    return dict(env, PREFORK_KEEPALIVE=KEEPALIVE_SECONDS)


def applies(scenario, name):
    """Whether `name` takes part in `scenario`: the minimal loop serves hello and JSON only;
    waitress is there for the attack only; runserver, a development server, has no keep-alive
    configuration and is left out of the attack's comparison."""
    if scenario == ATTACK:
        return name in ATTACK_SERVERS
    if name == MINIMAL:
        return scenario in MINIMAL_SCENARIOS
    if name == "waitress":
        return scenario == ATTACK
    if name == "runserver":
        return scenario not in KEEPALIVE and scenario != ATTACK
    return True


class Running:
    """One server process, started and timed to its first 200."""

    def __init__(self, name, cmd, port, env, log=None):
        self.name, self.port = name, port
        started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=PROJECT, env=env, stdout=subprocess.DEVNULL,
                                     stderr=log or subprocess.DEVNULL, start_new_session=True)
        deadline = started + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer within 60 s")
            time.sleep(0.01)
        self.first_200 = time.monotonic() - started

    def pids(self):
        """The process and all its descendants."""
        pids, frontier = [self.proc.pid], [self.proc.pid]
        while frontier:
            parent = frontier.pop()
            try:
                with open(f"/proc/{parent}/task/{parent}/children") as f:
                    kids = [int(p) for p in f.read().split()]
            except OSError:
                kids = []
            pids += kids
            frontier += kids
        return pids

    def cpu_seconds(self):
        """(user, system) CPU seconds so far of the process and its descendants (live ones: a
        worker that exited takes its figures with it, so a measurement keeps its workers)."""
        user = system = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()  # the name may hold spaces
            except OSError:
                continue
            user, system = user + int(fields[11]), system + int(fields[12])
        tick = os.sysconf("SC_CLK_TCK")
        return user / tick, system / tick

    def worker_count(self):
        """runprefork's workers alive now, by their process titles (setproctitle)."""
        count = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    count += f.read().startswith(b"runprefork worker")
            except OSError:
                pass
        return count

    def pss_mib(self):
        """Sum of PSS over the process and all its descendants."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
            except (OSError, StopIteration):
                pass
        return total / 1024

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


SOCKET_ERRORS = ("connect", "read", "write", "timeout")


def wrk(url, method, seconds, connections, keepalive=False):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s", "--latency"]
    if not keepalive:
        cmd += ["-H", "Connection: close"]
    script = None
    if method == "POST":
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write('wrk.method = "POST"\nwrk.body = string.rep("x", 100000)\n'
                     'wrk.headers["Content-Type"] = "application/octet-stream"\n')
        script.close()
        cmd += ["-s", script.name]
    out = subprocess.run(cmd + [url], capture_output=True, text=True).stdout
    if script:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = dict(zip(SOCKET_ERRORS, (int(x) for x in m.groups()) if m else (0, 0, 0, 0)))
    lat = {p: _ms(m.group(1), m.group(2)) for p in ("50", "99")
           if (m := re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s|m)\b", out))}
    m = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m)\b", out)  # avg, stdev, max
    return {"rps": rps, "non2xx": non2xx, "errors": sum(socket_errors.values()), "socket_errors": socket_errors,
            "p50": lat.get("50"), "p99": lat.get("99"), "max": _ms(m.group(1), m.group(2)) if m else None,
            "requests": int(m.group(1)) if (m := re.search(r"(\d+) requests in", out)) else None}


def _ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000}[unit]


def python_load(url, method, seconds, connections, keepalive=False):
    """A small closed-loop client for machines without wrk (with `keepalive`, see _keepalive_client)."""
    host, port, path = re.match(r"http://([^:/]+):(\d+)(/.*)", url).groups()
    body = POST_BODY if method == "POST" else b""
    connection = "" if keepalive else "Connection: close\r\n"
    request = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{connection}"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    latencies, non2xx, deadline = [], [0], time.monotonic() + seconds
    errors = dict.fromkeys(SOCKET_ERRORS, 0)

    def client():
        if keepalive:
            return _keepalive_client(host, int(port), request, deadline, latencies, non2xx, errors)
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            stage = "connect"
            try:
                with socket.create_connection((host, int(port)), timeout=2) as s:
                    stage = "write"
                    s.sendall(request)
                    stage = "read"
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                if not data.startswith(b"HTTP/1.1 2"):
                    non2xx[0] += 1
                latencies.append((time.monotonic() - t0) * 1000)
            except socket.timeout:
                errors["timeout"] += 1
            except OSError:
                errors[stage] += 1

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None  # noqa: E731
    return {"rps": len(latencies) / seconds, "non2xx": non2xx[0], "errors": sum(errors.values()),
            "socket_errors": errors, "p50": pick(0.5), "p99": pick(0.99), "max": pick(1),
            "requests": len(latencies)}


def _keepalive_client(host, port, request, deadline, latencies, non2xx, errors):
    """python_load's client on one connection for as long as the server keeps it: each answer read
    to its Content-Length (the scenarios' answers all have one), a new connection when it closes."""
    sock, data = None, b""
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        try:
            if sock is None:
                sock, data = socket.create_connection((host, port), timeout=2), b""
            sock.sendall(request)
            while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            m = re.search(rb"(?i)\r\ncontent-length:[ \t]*(\d+)", head)
            while m and len(data) < int(m.group(1)) and (chunk := sock.recv(65536)):
                data += chunk
            data = data[int(m.group(1)):] if m else b""
            if not head.startswith(b"HTTP/1.1 2"):
                non2xx[0] += 1
            latencies.append((time.monotonic() - t0) * 1000)
            if not m or re.search(rb"(?i)\r\nconnection:[ \t]*close", head):
                sock.close()
                sock = None
        except socket.timeout:
            errors["timeout"] += 1
            sock = sock.close() if sock else None
        except OSError:
            errors["read"] += 1
            sock = sock.close() if sock else None
    if sock:
        sock.close()


def burst_load(port, clients, seconds):
    """`clients` threads, each requesting BURST_PATH in a loop for `seconds`, one connection a request."""
    request = f"GET {BURST_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    latencies, failures = [], []
    started = time.monotonic()
    deadline = started + seconds

    def client():
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                    s.sendall(request)
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
            except OSError as exc:
                failures.append(repr(exc))
                continue
            if data.startswith(b"HTTP/1.1 200"):
                latencies.append((time.monotonic() - t0) * 1000)
            else:
                failures.append(data[:12])

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started  # to the last answer: requests in flight at the deadline count
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None  # noqa: E731
    return {"requests": len(latencies), "rps": len(latencies) / elapsed, "failures": len(failures),
            "p50": pick(0.5), "p99": pick(0.99), "elapsed": elapsed}


def measure_burst(args, env, tmp):
    """The burst scenario: {config: [round results]} (see the docstring)."""
    results = {}
    for round_no in range(args.rounds):
        order = list(BURST_CONFIGS) if round_no % 2 == 0 else list(BURST_CONFIGS)[::-1]
        for config in order:
            workers, ceiling = BURST_CONFIGS[config]
            config_env = dict(env, PREFORK_WORKERS=str(workers))
            config_env.pop("PREFORK_MAX_WORKERS", None)
            if ceiling:
                config_env["PREFORK_MAX_WORKERS"] = str(ceiling)
            port = free_port()
            cmd = server_commands(workers, port)["runprefork"]
            with open(os.path.join(tmp, "burst.log"), "w+") as log:
                server = Running("runprefork", cmd, port, config_env, log=log)
                try:
                    r = _burst_round(server, workers, args.burst_seconds)
                finally:
                    server.stop()
                log.seek(0)
                text = log.read()
            r["scaled_up"] = len(re.findall(r"scaling up to \d+ workers", text))
            r["scaled_down"] = len(re.findall(r"scaling down to \d+ workers", text))
            results.setdefault(config, []).append(r)
            extra = ""
            if ceiling:
                extra = (f" peak {r['peak']} workers, at 4 after {_s(r['at_ceiling'])}, back to 1 "
                         f"{_s(r['back_to_floor'])} after the load, {r['scaled_up']} up / {r['scaled_down']} down")
            print(f"round {round_no + 1} burst {config:16} {r['rps']:6.1f} req/s p50 {r['p50'] or 0:.0f} ms "
                  f"p99 {r['p99'] or 0:.0f} ms failures {r['failures']}{extra}", flush=True)
    return results


def _burst_round(server, floor, seconds):
    """One burst on a fresh server, the worker count sampled until it is back at the floor."""
    samples, stop = [], threading.Event()
    started = time.monotonic()

    def sample():
        while not stop.is_set():
            samples.append((time.monotonic() - started, server.worker_count()))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        r = burst_load(server.port, BURST_CLIENTS, seconds)
        load_end = time.monotonic() - started
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (samples and samples[-1][0] > load_end
                                                   and samples[-1][1] <= floor):
            time.sleep(0.1)
    finally:
        stop.set()
        sampler.join()
    peak = max((n for _, n in samples), default=0)
    r["peak"] = peak
    r["at_ceiling"] = next((t for t, n in samples if n >= 4), None)
    back = [t for t, n in samples if t > load_end and n <= floor]
    r["back_to_floor"] = back[0] - load_end if back else None
    return r


def _s(value):
    return "–" if value is None else f"{value:.1f} s"


def io_command(config, port, env, keepalive):
    """(command, environment) of one of IO_CONFIGS on `port`, `Connection: close` or keep-alive.
    runprefork takes its workers and threads from the environment (PREFORK_WORKERS,
    PREFORK_THREADS: conf.resolve reads every PREFORK_* there), its keep-alive from
    PREFORK_KEEPALIVE (keepalive_env); gunicorn runs its gthread worker (keeping connections
    alive, 2 s, unless asked to close); uWSGI its --http-socket, --http11-socket for keep-alive
    (as _keepalive_commands); granian its WSGI blocking threads."""
    name, workers, threads = IO_CONFIGS[config]
    cmd = list(server_commands(workers, port, keepalive=keepalive)[name])
    if name == "runprefork":
        i = cmd.index("--workers")
        del cmd[i:i + 2]
        env = dict(keepalive_env(env) if keepalive else env, PREFORK_WORKERS=str(workers),
                   PREFORK_THREADS=str(threads))
        env.pop("PREFORK_MAX_WORKERS", None)
    elif name == "gunicorn":
        cmd = [arg if arg != "sync" else "gthread" for arg in cmd]
        if "--threads" in cmd:
            cmd[cmd.index("--threads") + 1] = str(threads)
        else:
            cmd += ["--threads", str(threads)]
    elif name == "uwsgi":
        cmd += ["--threads", str(threads)]
    elif name == "granian":
        cmd += ["--blocking-threads", str(threads)]
    return cmd, env


def measure_io(args, env, load):
    """The io scenario: {(config, "close" or "keep-alive"): [round results]}, each a fresh server
    warmed up for a second with the same load, then loaded for --duration s; its memory (sum of
    PSS over its processes) read as the load ends, every thread it started still there."""
    results = {}
    configs = [c for c in IO_CONFIGS if IO_CONFIGS[c][0] in args.servers
               and IO_CONFIGS[c][0] in server_commands(2, 0)]
    for round_no in range(args.rounds):
        for mode in ("close", "keep-alive"):
            keepalive = mode == "keep-alive"
            for config in configs if round_no % 2 == 0 else configs[::-1]:
                port = free_port()
                cmd, config_env = io_command(config, port, env, keepalive)
                server = Running(config, cmd, port, config_env)
                try:
                    silent = not keepalive and not says_close(port)
                    url = f"http://127.0.0.1:{port}{IO_PATH}"
                    load(url, "GET", 1, args.io_connections, keepalive=keepalive)  # warm-up
                    before = server.cpu_seconds()
                    r = measured(functools.partial(load, keepalive=keepalive), url, "GET", args.duration,
                                 args.io_connections, args.wait_quiet)
                    r["pss_mib"] = server.pss_mib()
                    after = server.cpu_seconds()
                    r["processes"] = len(server.pids())
                finally:
                    server.stop()
                if r["requests"]:
                    r["cpu_us"] = [(b - a) / r["requests"] * 1e6 for a, b in zip(before, after)]
                r["failed"] = failed([r], config, [config] if silent else [])
                r["silent_close"] = silent
                results.setdefault((config, mode), []).append(r)
                print(f"round {round_no + 1} io {mode:10} {config:21} {r['rps']:6.0f} req/s p50 {r['p50'] or 0:.0f} ms "
                      f"p99 {r['p99'] or 0:.0f} ms failed {r['failed']} {r['pss_mib']:6.1f} MiB PSS "
                      f"({r['processes']} processes)" + (" (another wrk overlapped)" if r["shared"] else ""),
                      flush=True)
    return results


def prepare_env(tmp):
    db = os.path.join(tmp, "db.sqlite3")
    env = dict(os.environ, DJANGO_DEBUG="0", TESTPROJECT_DB=db, DJANGO_SETTINGS_MODULE="testproject.settings",
               # REPO: this checkout's django_prefork, installed or not, is the one measured
               PYTHONPATH=os.pathsep.join([PROJECT, HERE, REPO, os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, os.path.join(PROJECT, "manage.py"), "migrate", "-v0"], env=env, check=True)
    return env


def says_close(port):
    """Whether the server's answer to a `Connection: close` request says `Connection: close`. wrk
    decides from the answer alone: without it, it sends its next request on the connection the server
    then closes, and counts a read error for every request answered (not a failed request)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data and (chunk := s.recv(65536)):
            data += chunk
    head = data.split(b"\r\n\r\n")[0].lower()
    return any(line.split(b":", 1)[0].strip() == b"connection" and b"close" in line.split(b":", 1)[1]
               for line in head.split(b"\r\n")[1:] if b":" in line)


def failed(rounds, name, no_close):
    """Failed requests over the rounds: non-2xx and socket errors, a server in `no_close` having its
    read errors counted beyond one for each request answered (see says_close)."""
    total = 0
    for r in rounds:
        errors = dict(r["socket_errors"])
        if name in no_close and r.get("requests") is not None:
            errors["read"] = max(0, errors["read"] - r["requests"])
        total += r["non2xx"] + sum(errors.values())
    return total


def scenario_request(scenario):
    """(path, method) of a scenario: the overload is hello's."""
    return SCENARIOS["hello" if scenario == OVERLOAD else scenario]


def measure_throughput(args, env, load):
    """{(scenario, server): [round results]}, the transport ceiling among the servers as CEILING;
    {server: start to first 200 (s)}; {scenario: [the app's µs of CPU per request, one a round]}."""
    scenarios = args.scenarios + ([OVERLOAD] if args.overload else [])
    if not scenarios:
        return {}, {}, {}
    running, bare, keep, ceiling_dir = {}, {}, {}, None  # bare: on the bare app; keep: keep-alive
    closing = [s for s in scenarios if s not in KEEPALIVE]
    try:
        for name in server_commands(args.workers, 0):
            if name not in args.servers:
                continue
            if any(applies(s, name) for s in closing if s != BARE):
                port = free_port()
                running[name] = Running(name, server_commands(args.workers, port)[name], port, env)
            if BARE in scenarios and applies(BARE, name) and name in server_commands(args.workers, 0, bare=True):
                port = free_port()
                bare[name] = Running(name, server_commands(args.workers, port, bare=True)[name], port, env)
            if any(applies(s, name) for s in scenarios if s in KEEPALIVE) \
                    and name in server_commands(args.workers, 0, keepalive=True):
                port = free_port()
                keep[name] = Running(name, server_commands(args.workers, port, keepalive=True)[name], port,
                                     keepalive_env(env))
        if args.limit:
            ceiling_dir = tempfile.mkdtemp(prefix="prefork-ceiling-")
            os.chmod(ceiling_dir, 0o755)  # nginx's unprivileged workers read the 1 MiB file there
            port = free_port()
            args.ceiling_label, cmd = ceiling_command(port, ceiling_dir)
            running[CEILING] = Running(CEILING, cmd, port, env)
            if keep:  # nginx keeps connections alive as it is; the Python accept loop closes them
                keep[CEILING] = running[CEILING]
        args.no_close = [name for name, server in running.items() if not says_close(server.port)]
        args.kept = {name: keeps_alive(server.port) for name, server in keep.items()}
        warm_up(load, running, bare, keep)
        results, app_us = {}, {}  # (scenario, server) -> [round results]; scenario -> [µs]
        names = list(dict.fromkeys([*running, *keep]))
        for round_no in range(args.rounds):
            if args.limit:
                cost = measure_app_cost(env, [scenario_request(s) for s in scenarios if s != BARE], args.app_seconds)
                for scenario in scenarios:
                    app_us.setdefault(scenario, []).append(
                        bare_app_cost(args.app_seconds) if scenario == BARE else cost[scenario_request(scenario)])
                print(f"round {round_no + 1} app in-process, CPU per request: " + ", ".join(
                    f"{s} {app_us[s][-1]:.1f} µs" for s in scenarios if s != OVERLOAD), flush=True)
            order = names if round_no % 2 == 0 else names[::-1]
            for scenario in scenarios:
                path, method = scenario_request(scenario)
                connections = args.overload_connections if scenario == OVERLOAD else args.connections
                instances = keep if scenario in KEEPALIVE else bare if scenario == BARE else running
                scenario_load = functools.partial(load, keepalive=scenario in KEEPALIVE)
                for name in order:
                    server = instances.get(name) or (running.get(name) if scenario == BARE else None)
                    if server is None or not applies(scenario, name):
                        continue
                    url = f"http://127.0.0.1:{server.port}{path}"
                    before = server.cpu_seconds()
                    r = measured(scenario_load, url, method, args.duration, connections, args.wait_quiet)
                    after = server.cpu_seconds()
                    if r["requests"]:  # the server's processes' CPU per request answered, in µs
                        r["cpu_us"] = [(b - a) / r["requests"] * 1e6 for a, b in zip(before, after)]
                    results.setdefault((scenario, name), []).append(r)
                    busy = f" CPUs {r['cpu_busy']:.0%} busy" if r["cpu_busy"] is not None else ""
                    print(f"round {round_no + 1} {scenario:15} {name:12} {r['rps']:9.0f} req/s "
                          f"p99 {r['p99'] or 0:.1f} ms non-2xx {r['non2xx']} errors {r['errors']}{busy}"
                          + (" (another wrk overlapped)" if r["shared"] else ""), flush=True)
        first_200 = {name: s.first_200 for name, s in running.items() if name != CEILING}
        return results, first_200, app_us
    finally:
        for server in dict.fromkeys([*running.values(), *bare.values(), *keep.values()]):
            server.stop()
        if ceiling_dir:
            shutil.rmtree(ceiling_dir, ignore_errors=True)


def warm_up(load, running, bare, keep):
    """A second of load on each path a server will serve: imports, caches, the SQLite page cache."""
    for instances, kinds in ((running, [s for s in SCENARIOS if s not in KEEPALIVE and s != BARE]),
                             (bare, [BARE]), (keep, list(KEEPALIVE))):
        for name, server in instances.items():
            for path, method in dict.fromkeys(SCENARIOS[s] for s in kinds if applies(s, name)):
                load(f"http://127.0.0.1:{server.port}{path}", method, 1, 4, keepalive=instances is keep)


def keeps_alive(port):
    """What the server does with the connection after answering a request that did not ask for
    `Connection: close`: "reused" (a second request on it was answered), "closed" (it said
    `Connection: close`) or "closed silently" (it did not say so: wrk then counts a read error
    for each answer, as in says_close)."""
    request = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        said_close = re.search(rb"(?i)\r\nconnection:[ \t]*close", _answer_head(s)) is not None
        try:
            s.sendall(request)
            if _answer_head(s).startswith(b"HTTP/1.1 200"):
                return "reused"
        except OSError:
            pass
    return "closed" if said_close else "closed silently"


def _answer_head(sock):
    """One answer read off `sock` to the end of its Content-Length body; its head (b"" if closed)."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)\r\ncontent-length:[ \t]*(\d+)", head)
    while m and len(body) < int(m.group(1)) and (chunk := sock.recv(65536)):
        body += chunk
    return head


# The scenarios whose request is a GET the bare app answers as the ceiling does ("Hello, world!"):
# for them, every server's run on the bare app in the same round is a ceiling too.
FIXED_200 = ("hello", "json", "sqlite", BARE)


def ceilings(results, scenario):
    """The ceiling of each round, as the run that set it (its `by`: CEILING or a server's name):
    the transport ceiling's run and, for FIXED_200, any faster run of a server on the bare app
    (each is a minimal server answering a fixed 200 to the same client; on a small machine
    runprefork and uWSGI on the bare app outrun nginx, whose lingering close costs it more)."""
    best = []
    for i, run in enumerate(results.get((scenario, CEILING), [])):
        top = dict(run, by=CEILING)
        if scenario in FIXED_200:
            for (s, name), runs in results.items():
                if s == BARE and name != CEILING and i < len(runs) and not runs[i]["non2xx"] \
                        and runs[i]["rps"] > top["rps"]:
                    top = dict(runs[i], by=name)
        best.append(top)
    return best


def limits(results, app_us, scenario):
    """The limit of each round (req/s): 1 / (1 / ceiling req/s + app CPU per request / cores)."""
    return [1 / (1 / c["rps"] + us / 1e6 / cores())
            for c, us in zip(ceilings(results, scenario), app_us.get(scenario, [])) if c["rps"]]


def of_limit(results, app_us, scenario, name):
    """Median of the per-round fractions of the limit, or None."""
    fractions = [r["rps"] / lim for r, lim in zip(results.get((scenario, name), []), limits(results, app_us, scenario))]
    return statistics.median(fractions) if fractions else None


def ratio(results, scenario, a, b, scenario_b=None):
    """Median of the per-round ratios of a's requests/s to b's (b's in `scenario_b` if given), or None."""
    ratios = [x["rps"] / y["rps"] for x, y in zip(results.get((scenario, a), []),
                                                   results.get((scenario_b or scenario, b), [])) if y["rps"]]
    return statistics.median(ratios) if ratios else None


def silent_closers(args, scenario):
    """The servers whose read errors in `scenario` are mostly wrk's misreading of a silent close."""
    if scenario in KEEPALIVE:
        return [name for name, kind in args.kept.items() if kind == "closed silently"]
    return args.no_close


def measure_memory(args, env, load):
    memory = {}
    for workers in (2, 8):
        for name in args.servers:
            if name in ("runserver", "waitress", MINIMAL) or name not in server_commands(workers, 0):
                continue
            for preload in ((False, True) if name in ("gunicorn", "runprefork") else (False,)):
                port = free_port()
                cmd = server_commands(workers, port)[name] + (["--preload"] if preload else [])
                server = Running(name, cmd, port, env)
                try:
                    load(f"http://127.0.0.1:{port}/db", "GET", 1, 4)
                    time.sleep(0.5)
                    label = name + (" --preload" if preload else "")
                    memory[(label, workers)] = (server.pss_mib(), server.first_200)
                    print(f"memory {label:22} {workers} workers: {memory[(label, workers)][0]:.1f} MiB PSS, "
                          f"first 200 after {server.first_200:.2f} s", flush=True)
                finally:
                    server.stop()
    return memory


PEERS = ("gunicorn", "uwsgi", "granian")  # runprefork's ratios to these, when they ran


def report(args, results, first_200, memory, loader, burst=None, app_us=None, attacked=None, io=None):
    app_us = app_us or {}
    lines = [f"# Benchmark {datetime.datetime.now():%Y-%m-%d %H:%M}", ""]
    machine = (f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}; "
               f"Python {platform.python_version()}; Django {_version('django')}; ")
    if not results:
        lines += [machine + "DEBUG off."]
        lines += ["", *io_report(args, io)] if io else []
        lines += ["", *attack_report(args, attacked)] if attacked else []
        lines += ["", *burst_report(args, burst)] if burst else []
        lines += ["", f"Reproduce: `python benchmarks/run.py {' '.join(sys.argv[1:])}`".rstrip() + ""]
        return "\n".join(lines) + "\n"
    peers = "; ".join(f"{name} {_version(dist)}" for name, dist in (
        ("gunicorn", "gunicorn"), ("granian", "granian"), ("uWSGI", "pyuwsgi")) if _version(dist) != "not installed")
    lines += [machine + f"{peers}; load: {loader}, {args.connections} connections, `Connection: close` (persistent "
              "connections in the keep-alive scenarios), "
              f"{args.rounds} rounds × {args.duration} s, {args.workers} workers, DEBUG off.", ""]
    names = [n for n in args.servers if any((s, n) in results for s in args.scenarios + [OVERLOAD])]
    has_limit = any((s, CEILING) in results for s in args.scenarios + [OVERLOAD])
    peers = [p for p in (*PEERS, MINIMAL) if p in names] if "runprefork" in names else []
    ours = [n for n in ("runprefork", PRELOAD) if n in names]
    if args.scenarios:
        header = ["scenario"] + (["limit"] if has_limit else [])
        for name in names:
            header += [name] + (["% of limit"] if has_limit else [])
        header += [f"{n} / {p}" for n in ours for p in peers]
        lines += ["## Requests per second (median of rounds)", "", "| " + " | ".join(header) + " |",
                  "|---" * len(header) + "|"]
        for scenario in args.scenarios:
            row = [scenario]
            if has_limit:
                lims = limits(results, app_us, scenario)
                row.append(f"{statistics.median(lims):,.0f}" if lims else "–")
            for name in names:
                rounds = results.get((scenario, name), [])
                if not rounds:  # not applicable (see applies)
                    row += ["–"] + (["–"] if has_limit else [])
                    continue
                med = statistics.median(r["rps"] for r in rounds)
                bad = failed(rounds, name, silent_closers(args, scenario))
                row.append(f"{med:,.0f}" + (f" ({bad:,} failed)" if bad else ""))
                if has_limit:
                    row.append(_pct(of_limit(results, app_us, scenario, name)))
            for n in ours:
                for p in peers:
                    x = ratio(results, scenario, n, p)
                    row.append(f"**{x:.2f}×**" if x else "–")
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", "\"failed\" counts wrk's socket errors and non-2xx answers over all rounds; "
                  "% of limit and the ratios are medians of the per-round values."]
        if any(n in args.no_close for n in names):
            them = sum(n in args.no_close for n in names)
            lines += ["", _no_close_note(args, names, f"{'Their' if them > 1 else 'Its'} failures count only the "
                                         "read errors beyond the requests answered" + (
                                             "; the overload table gives wrk's raw counts." if args.overload else "."))]
    if has_limit:
        lines += [""] + limit_report(args, results, app_us)
    if any(r.get("cpu_us") for rounds in results.values() for r in rounds):
        lines += [""] + cpu_report(args, results, names)
    if args.scenarios:
        lines += ["", "## Latency, hello (median of rounds, ms)", "", "| server | p50 | p99 |", "|---|---|---|"]
        for name in names:
            rounds = results.get(("hello", name)) or results.get((args.scenarios[0], name), [])
            if rounds:
                p50 = statistics.median(r["p50"] or 0 for r in rounds)
                p99 = statistics.median(r["p99"] or 0 for r in rounds)
                lines.append(f"| {name} | {p50:.2f} | {p99:.2f} |")
    if any((OVERLOAD, n) in results for n in names):
        lines += [""] + overload_report(args, results, app_us, names)
    if any(s in KEEPALIVE for s in args.scenarios):
        lines += [""] + keepalive_report(args, results, names + [CEILING])
    shared = [f"{s} {n if n != CEILING else 'ceiling'} round {i + 1}" for (s, n), rounds in results.items()
              for i, r in enumerate(rounds) if r.get("shared")]
    total = sum(len(rounds) for rounds in results.values())
    lines += ["", f"{len(shared)} of {total} measurements overlapped a wrk this run did not start "
              "(another benchmark or profile on the machine)" + (": " + ", ".join(shared) + "." if shared else ".")]
    lines += ["", "## Start to first 200 (s)", "", "| server | s |", "|---|---|"]
    lines += [f"| {name} | {t:.2f} |" for name, t in first_200.items()]
    if memory:
        lines += ["", "## Memory: sum of PSS over all the server's processes (MiB)", "",
                  "| server | 2 workers | 8 workers |", "|---|---|---|"]
        for label in dict.fromkeys(label for label, _ in memory):
            cells = [f"{memory[(label, w)][0]:.1f}" if (label, w) in memory else "–" for w in (2, 8)]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if io:
        lines += [""] + io_report(args, io)
    if attacked:
        lines += [""] + attack_report(args, attacked)
    if burst:
        lines += [""] + burst_report(args, burst)
    lines += ["", f"Reproduce: `python benchmarks/run.py {' '.join(sys.argv[1:])}`".rstrip() + ""]
    return "\n".join(lines) + "\n"


def _no_close_note(args, names, tail):
    them = [n for n in names if n in args.no_close]
    return (f"{' and '.join(them)} answer{'s' if len(them) == 1 else ''} a `Connection: close` request without "
            "`Connection: close`: wrk then sends its next request on the connection the server closes and counts "
            "a read error for every request answered. " + tail)


def _pct(fraction):
    return "–" if fraction is None else f"{fraction:.0%}"


def limit_report(args, results, app_us):
    n = cores()
    lines = ["## The limit (median of rounds)", "",
             f"Transport ceiling: {args.ceiling_label}, answering a fixed 200 (\"Hello, world!\", the same "
             f"1 MiB file by sendfile for `/file`) with the same client and connections, in the rotation with "
             f"the servers; for {', '.join(s for s in FIXED_200 if s in args.scenarios)}, the fastest of it and "
             f"the servers on the {BARE} in the same round (they answer the same fixed 200: \"set by\" says who "
             f"did, round by round). Its CPU per request, wrk and kernel included, is taken as {n} cores × wall "
             f"time / requests. App: testproject's WSGI application called in-process in a loop, CPU time "
             f"(time.process_time) per request after a warm-up.", "",
             f"    limit = {n} cores / (transport CPU + app CPU per request)"
             f" = 1 / (1 / ceiling req/s + app CPU per request / {n})", "",
             "| scenario | ceiling (req/s) | set by | CPUs busy during it | transport CPU / request (µs) "
             "| app CPU / request (µs) | limit (req/s) |", "|---|---|---|---|---|---|---|"]
    idle = []
    for scenario in args.scenarios + ([OVERLOAD] if args.overload else []):
        ceiling = ceilings(results, scenario)
        if not ceiling:
            continue
        by = ", ".join((args.ceiling_label.split(" `")[0] if r["by"] == CEILING else f"{r['by']} ({BARE})")
                       for r in ceiling)
        rps = statistics.median(r["rps"] for r in ceiling)
        busy = [r["cpu_busy"] for r in ceiling if r.get("cpu_busy") is not None]
        app = app_us.get(scenario, [])
        lims = limits(results, app_us, scenario)
        label = scenario if scenario != OVERLOAD else f"overload (hello, {args.overload_connections} connections)"
        lines.append(f"| {label} | {rps:,.0f} | {by} | {_pct(statistics.median(busy)) if busy else '–'} | "
                     f"{n / rps * 1e6:.1f} | {statistics.median(app) if app else 0:.1f} | "
                     f"{statistics.median(lims) if lims else 0:,.0f} |")
        if busy and statistics.median(busy) < 0.95 and app:
            share = statistics.median(busy)
            transport = share * n / rps
            idle.append(f"{label} ({_pct(share)} busy: {transport * 1e6:.1f} µs, a limit of "
                        f"{n / (transport + statistics.median(app) / 1e6):,.0f} req/s)")
    if idle:
        lines += ["", "The CPUs were not all busy during the ceiling's runs, so the transport CPU per request is "
                  "overstated there and the limit understated; counted from the busy CPU time instead (/proc/stat, "
                  "which counts anything else running too): " + "; ".join(idle) + "."]
    return lines


def cpu_report(args, results, names):
    """The CPU each server's own processes spent per request answered, and the part of it that is the app's."""
    columns = names + [CEILING]
    label = {name: name for name in names} | {CEILING: f"{args.ceiling_label or 'ceiling'}"}

    def per_request(scenario, name):  # (user, system) µs, medians of rounds, or None
        cpu = [r["cpu_us"] for r in results.get((scenario, name), []) if r.get("cpu_us")]
        return (statistics.median(u for u, _ in cpu), statistics.median(s for _, s in cpu)) if cpu else None

    lines = ["## CPU per request, the server's own processes (µs, user + system, median of rounds)", "",
             "Read from /proc for the server's process and its descendants over each measurement, divided by the "
             "requests answered; wrk and the kernel's work on the client's side are not in it.", "",
             "| scenario | " + " | ".join(label[c] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for scenario in args.scenarios + ([OVERLOAD] if args.overload else []):
        cells = [f"{cpu[0]:.0f} + {cpu[1]:.0f}" if (cpu := per_request(scenario, c)) else "–" for c in columns]
        if any(cell != "–" for cell in cells):
            lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    if BARE in args.scenarios and "hello" in args.scenarios:
        parts = []
        for name in names:
            hello, bare = per_request("hello", name), per_request(BARE, name)
            if hello and bare:
                parts.append(f"{name} {sum(bare):.0f} µs on its own, {sum(hello) - sum(bare):.0f} µs more with "
                             "Django")
        if parts:
            lines += ["", f"On the {BARE} a server's CPU is its own; hello's minus it is Django's part as each "
                      "server's workers pay it (cold caches between requests included): " + "; ".join(parts) + "."]
    return lines


def overload_report(args, results, app_us, names):
    lines = [f"## Overload: hello, {args.overload_connections} connections on {args.workers} workers", "",
             f"Medians of {args.rounds} rounds; max is the worst of all rounds; errors are summed over the rounds "
             "(wrk's socket errors by kind, a timeout being no answer within 2 s, and non-2xx answers).", "",
             "| server | req/s | % of limit | p50 (ms) | p99 (ms) | max (ms) | connect | read | write | timeout "
             "| non-2xx | failed |", "|---" * 12 + "|"]
    for name in names + [CEILING]:
        rounds = results.get((OVERLOAD, name), [])
        if not rounds:
            continue
        label = name if name != CEILING else f"{args.ceiling_label} (ceiling)"
        label += " †" if name in args.no_close else ""
        med = lambda key: statistics.median(r[key] or 0 for r in rounds)  # noqa: E731
        errors = [sum(r["socket_errors"][kind] for r in rounds) for kind in SOCKET_ERRORS]
        lines.append(f"| {label} | {med('rps'):,.0f} | "
                     f"{_pct(of_limit(results, app_us, OVERLOAD, name)) if name != CEILING else '–'} | "
                     f"{med('p50'):.2f} | {med('p99'):.2f} | {max(r['max'] or 0 for r in rounds):.2f} | "
                     + " | ".join(f"{e:,}" for e in errors) + f" | {sum(r['non2xx'] for r in rounds):,} | "
                     f"{failed(rounds, name, args.no_close):,} |")
    if any(n in args.no_close for n in names):
        lines += ["", "† " + _no_close_note(args, names, "\"failed\" counts only the read errors beyond the "
                                            "requests answered.")]
    return lines


def keepalive_report(args, results, names):
    """Each server's keep-alive figures beside its `Connection: close` ones, and runprefork's ratios."""
    pairs = [(ka, close) for ka, close in KEEPALIVE.items() if ka in args.scenarios]
    header = ["server", "connection after an answer"]
    for ka, close in pairs:
        header += [f"{close}, close", f"{close}, keep-alive", "keep-alive / close"]
    lines = ["## Keep-alive: persistent connections beside `Connection: close` (req/s, median of rounds)", "",
             "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    med = lambda key: statistics.median(r["rps"] for r in results[key]) if results.get(key) else None  # noqa: E731
    for name in names:
        if not any((ka, name) in results for ka, _ in pairs):
            continue
        label = MINIMAL if name == MINIMAL else args.ceiling_label if name == CEILING else name
        row = [label, args.kept.get(name, "–")]
        for ka, close in pairs:
            x = ratio(results, ka, name, name, close)
            row += [f"{v:,.0f}" if (v := med((close, name))) else "–", f"{v:,.0f}" if (v := med((ka, name))) else "–",
                    f"{x:.2f}×" if x else "–"]
        lines.append("| " + " | ".join(row) + " |")
    facts = []
    for ka, close in pairs:
        own, granian = ratio(results, ka, "runprefork", "runprefork", close), ratio(results, ka, "runprefork", "granian")
        floor = ratio(results, ka, "runprefork", MINIMAL)
        facts.append(f"{close}: runprefork keep-alive / its close {_x(own)}, / granian keep-alive {_x(granian)}, "
                     f"/ the minimal loop keep-alive {_x(floor)}")
    lines += ["", "**" + "; ".join(facts) + "** (medians of the per-round ratios).", "",
              f"How each server keeps connections: runprefork with `PREFORK_KEEPALIVE={KEEPALIVE_SECONDS}` in its "
              "environment (\"closed\" above means this runprefork does not have the setting yet); gunicorn with "
              "`-k gthread --threads 1`, its sync worker closing every connection; uWSGI with `--http11-socket` "
              "(`--http-socket --http-keepalive` is accepted by uWSGI 2.0 but curl -v sees no connection reused); "
              "granian and nginx as they are; the minimal loop with `--keepalive`, one connection a process at a time "
              f"(the other connections of wrk's {args.connections} wait their turn). \"connection after an answer\" "
              "is asked of each server once at start (keeps_alive)."]
    return lines


def _x(value):
    return f"{value:.2f}×" if value else "–"


def _bold_x(value):
    return f"**{value:.2f}×**" if value else "–"


def measure_attack(args, env):
    """The attack scenario: {server: [round results]}, each round on a fresh server (see attack.py)."""
    from attack import attack

    results = {}
    names = [n for n in server_commands(args.workers, 0) if n in args.servers and applies(ATTACK, n)]
    for round_no in range(args.rounds):
        for name in names if round_no % 2 == 0 else names[::-1]:
            port = free_port()
            server = Running(name, server_commands(args.workers, port)[name], port, env)
            try:
                r = attack(port, args.attack_idle, args.attack_slowloris, args.attack_uploads, args.attack_readers,
                           args.attack_seconds)
            finally:
                server.stop()
            results.setdefault(name, []).append(r)
            lat = r["latencies_ms"]
            print(f"round {round_no + 1} attack {name:10} probes {r['sent']} answered {r['answered']} failed "
                  f"{r['failed']} {r['failures']}" + (f" max {lat[-1]:.0f} ms" if lat else ""), flush=True)
    return results


def attack_report(args, attacked):
    lines = [f"## Attack: slow clients held open while a probe asks for /hello every 50 ms "
             f"({args.workers} workers, {args.rounds} rounds, all rounds together)", "",
             f"Held open at once: {args.attack_idle} idle connections (nothing sent), {args.attack_slowloris} "
             f"slowloris (a request head one byte a second, never finished), {args.attack_uploads} slow uploads "
             f"(POST /upload, Content-Length 1 MB, sent at 4 KB/s), {args.attack_readers} slow readers (GET /file, "
             f"1 MiB, 4 KiB SO_RCVBUF, read at 4 KiB/s); the probe runs {args.attack_seconds:g} s, each probe on a "
             "connection of its own, open loop; a probe not answered 200 within 2 s of the last one is failed.", "",
             "| server | probes sent | answered | failed | p50 (ms) | p99 (ms) | max (ms) | failures by kind "
             "| uploaded (KB) | read by the readers (KiB) |", "|---" * 10 + "|"]
    for name, rounds in attacked.items():
        lat = sorted(x for r in rounds for x in r["latencies_ms"])
        pick = lambda q: f"{lat[min(len(lat) - 1, int(q * len(lat)))]:.1f}" if lat else "–"  # noqa: E731
        kinds = {}
        for r in rounds:
            for kind, n in r["failures"].items():
                kinds[kind] = kinds.get(kind, 0) + n
        label = name + (f" (1 process, {args.workers} threads)" if name == "waitress" else
                        " (sync)" if name == "gunicorn" else "")
        lines.append(f"| {label} | {sum(r['sent'] for r in rounds)} | {sum(r['answered'] for r in rounds)} | "
                     f"{sum(r['failed'] for r in rounds)} | {pick(0.5)} | {pick(0.99)} | {pick(1)} | "
                     + (", ".join(f"{k} {n}" for k, n in kinds.items()) or "–") + " | "
                     f"{statistics.median(r['uploaded'] for r in rounds) / 1000:,.0f} | "
                     f"{statistics.median(r['read'] for r in rounds) / 1024:,.0f} |")
    lines += ["", "Uploaded and read: the attackers' bytes through the whole attack, median of rounds. On loopback "
              "a 1 MiB answer mostly fits in the server's send buffer (which grows to MiBs), so the slow readers "
              "hold a sync worker about a second (seen alone against gunicorn), not for the minutes their reading takes."]
    return lines


def io_report(args, io):
    modes = ("close", "keep-alive")
    slots = 2 * 8
    lines = [f"## I/O-bound: `{IO_PATH}` (50 ms of time.sleep), {args.io_connections} connections "
             f"(median of {args.rounds} rounds × {args.duration} s)", "",
             f"Each configuration a fresh server, warmed up for 1 s with the same load. 2 workers × 8 threads "
             f"or 16 processes: {slots} requests waiting at once, at most {slots / 0.05:,.0f} req/s; the other "
             f"{max(0, args.io_connections - slots)} connections queue. Memory: sum of PSS over the server's "
             "processes, read as the load ends (every thread started still there).", "",
             "| server | close req/s | p50 / p99 (ms) | PSS (MiB) | keep-alive req/s | p50 / p99 (ms) | PSS (MiB) "
             "| failed | CPU / request (µs, close) |", "|---" * 9 + "|"]

    def med(config, mode, key):
        values = [r[key] for r in io.get((config, mode), []) if r.get(key) is not None]
        return statistics.median(values) if values else None

    for config in dict.fromkeys(c for c, _ in io):
        row = [config]
        for mode in modes:
            rps = med(config, mode, "rps")
            if rps is None:
                row += ["–", "–", "–"]
                continue
            row += [f"{rps:,.0f}", f"{med(config, mode, 'p50') or 0:.0f} / {med(config, mode, 'p99') or 0:.0f}",
                    f"{med(config, mode, 'pss_mib'):.1f}"]
        bad = [sum(r["failed"] for r in io.get((config, mode), [])) for mode in modes]
        row.append(" / ".join(f"{b:,}" for b in bad))
        cpu = [sum(r["cpu_us"]) for r in io.get((config, "close"), []) if r.get("cpu_us")]
        row.append(f"{statistics.median(cpu):.0f}" if cpu else "–")
        lines.append("| " + " | ".join(row) + " |")

    def io_ratio(a, b, mode, key):
        pairs = zip(io.get((a, mode), []), io.get((b, mode), []))
        values = [x[key] / y[key] for x, y in pairs if y.get(key)]
        return statistics.median(values) if values else None

    lines += ["", "failed: wrk's socket errors and non-2xx answers over all rounds, close / keep-alive"
              + ("; uWSGI's --http-socket closes without saying `Connection: close`, so only its read errors "
                 "beyond the requests answered count (see says_close)" if any(
                     r.get("silent_close") for rounds in io.values() for r in rounds) else "") + ".", "",
              "| ratio (median of the per-round ratios) | close | keep-alive |", "|---|---|---|"]
    for peer in [c for c in dict.fromkeys(c for c, _ in io) if c != IO_THREADS]:
        lines.append(f"| req/s: {IO_THREADS} / {peer} | "
                     + " | ".join(_bold_x(io_ratio(IO_THREADS, peer, mode, "rps")) for mode in modes) + " |")
    lines.append(f"| memory: {IO_THREADS} / {IO_PROCESSES} (target ≤ 0.4) | "
                 + " | ".join(_bold_x(io_ratio(IO_THREADS, IO_PROCESSES, mode, "pss_mib")) for mode in modes)
                 + " |")
    shared = sum(r.get("shared", False) for rounds in io.values() for r in rounds)
    lines += ["", f"{shared} of {sum(len(r) for r in io.values())} measurements overlapped a wrk this run did not start."]
    return lines


def burst_report(args, burst):
    lines = [f"## Burst: {BURST_CLIENTS} clients × `{BURST_PATH}` in a loop for {args.burst_seconds:g} s "
             f"(runprefork, median of {args.rounds} rounds)", "",
             "| configuration | requests/s | p50 (ms) | p99 (ms) | failed | most workers | at 4 workers after "
             "| back to 1 after the load |", "|---|---|---|---|---|---|---|---|"]
    for config, rounds in burst.items():
        def med(key):
            return statistics.median(r[key] or 0 for r in rounds)

        def timed(key):  # a time only the scaling server has; "–" if a round never got there
            if BURST_CONFIGS[config][1] is None or any(r[key] is None for r in rounds):
                return "–"
            return _s(statistics.median(r[key] for r in rounds))

        lines.append(f"| {config} | {med('rps'):.1f} | {med('p50'):.0f} | {med('p99'):.0f} | "
                     f"{sum(r['failures'] for r in rounds)} | {max(r['peak'] for r in rounds)} | "
                     f"{timed('at_ceiling')} | {timed('back_to_floor')} |")
    lines += ["", "Closed loop, one connection a request, Python client; requests/s counts the requests "
              "answered 200 over the time until the last one finished. Workers counted by process title "
              "every 0.1 s from the start of the load."]
    return lines


def chart(path, args, results, app_us=None):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart (pip install -e '.[bench]')")
        return None
    names = [n for n in args.servers if any((s, n) in results for s in args.scenarios)]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = [statistics.median(r["rps"] for r in results.get((s, name), [{"rps": 0}])) for s in args.scenarios]
        ax.bar([x + i * width for x in range(len(args.scenarios))], values, width, label=name)
    for x, scenario in enumerate(args.scenarios):
        lims = limits(results, app_us or {}, scenario)
        if lims:
            ax.hlines(statistics.median(lims), x - width / 2, x + width * (len(names) - 0.5), colors="black",
                      linestyles="dashed", label="limit" if x == 0 else None)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(args.scenarios))], args.scenarios)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.3)  # room for the legend above the bars and the limit
    ax.set_ylabel("requests/s (higher is better)")
    ax.set_title(f"testproject, {args.workers} workers, Connection: close unless keep-alive")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _version(module):
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "not installed"


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--app-cost-child":
        return app_cost_child(json.loads(sys.argv[2]))
    if len(sys.argv) == 4 and sys.argv[1] == "--transport-child":
        return transport_child(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--scenarios", help=f"comma-separated, from: {', '.join([*SCENARIOS, OVERLOAD, IO, ATTACK, BURST])} "
                        f"({OVERLOAD} comes with hello, a keep-alive one with its `Connection: close` twin); "
                        "all of them by default, hello with --quick")
    parser.add_argument("--overload-connections", type=int, default=64, help="connections of the overload scenario")
    parser.add_argument("--no-overload", action="store_true", help="leave out the overload scenario")
    parser.add_argument("--no-limit", action="store_true", help="measure neither the ceiling nor the app's cost")
    parser.add_argument("--app-seconds", type=float, default=1.0,
                        help="CPU seconds of the in-process measure, per path and round")
    parser.add_argument("--wait-quiet", type=float, default=30,
                        help="seconds to wait before each measurement for a wrk not ours to end")
    parser.add_argument("--io-connections", type=int, default=32, help="connections of the io scenario")
    parser.add_argument("--burst-seconds", type=float, default=8, help="length of the burst scenario's load")
    parser.add_argument("--attack-idle", type=int, default=200, help="idle connections of the attack")
    parser.add_argument("--attack-slowloris", type=int, default=50, help="slowloris connections of the attack")
    parser.add_argument("--attack-uploads", type=int, default=10, help="slow uploads of the attack")
    parser.add_argument("--attack-readers", type=int, default=10, help="slow readers of the attack")
    parser.add_argument("--attack-seconds", type=float, default=8, help="how long the attack's probe runs")
    parser.add_argument("--servers", default="runprefork,gunicorn,runserver,granian,uwsgi,waitress,minimal",
                        help="comma-separated (minimal: the minimal loop; preload: runprefork --preload); each "
                             "takes the scenarios it applies to")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="hello unless --scenarios says otherwise, 2 rounds of 4 s, an attack of 4 s, no memory, "
                        "no overload")
    args = parser.parse_args()
    if args.quick:
        args.scenarios, args.rounds, args.duration, args.no_memory = args.scenarios or "hello", 2, 4, True
        args.app_seconds, args.attack_seconds = min(args.app_seconds, 0.5), min(args.attack_seconds, 4)
    wanted = (args.scenarios or ",".join([*SCENARIOS, IO, ATTACK, BURST])).split(",")
    # a keep-alive scenario brings its `Connection: close` twin: the report sets one beside the other
    args.scenarios = [s for s in SCENARIOS if s in wanted or s in [KEEPALIVE.get(w) for w in wanted]]
    args.overload = (OVERLOAD in wanted or ("hello" in wanted and not args.quick)) and not args.no_overload
    args.limit = not args.no_limit
    args.ceiling_label, args.no_close = None, []
    args.servers = [{"minimal": MINIMAL, "preload": PRELOAD}.get(name, name) for name in args.servers.split(",")]
    args.kept = {}
    args.burst = BURST in wanted and "runprefork" in args.servers
    args.attack = ATTACK in wanted
    args.io = IO in wanted
    if "gunicorn" in args.servers and (args.scenarios or args.overload) and not has_module("gunicorn"):
        sys.exit("gunicorn is missing: pip install -e '.[bench]'")
    load, loader = (wrk, "wrk") if shutil.which("wrk") else (python_load, "python fallback (no wrk: apt-get install wrk)")
    print(f"load generator: {loader}")
    with tempfile.TemporaryDirectory() as tmp:
        env = prepare_env(tmp)
        results, first_200, app_us = measure_throughput(args, env, load)
        memory = {} if args.no_memory else measure_memory(args, env, load)
        io = measure_io(args, env, load) if args.io else {}
        attacked = measure_attack(args, env) if args.attack else {}
        burst = measure_burst(args, env, tmp) if args.burst else {}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    text = report(args, results, first_200, memory, loader, burst, app_us, attacked, io)
    # A quick run is a check, not a result, and a run of the burst, the io
    # or the attack alone is not a full one: they leave the last full report alone.
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    latest = "quick" if args.quick else "latest" if results else "burst" if burst else IO if io else "attack"
    for name in ((f"{stamp}.md", "latest.md") if latest == "latest" else (latest + ".md",)):
        with open(os.path.join(HERE, "results", name), "w") as f:
            f.write(text)
    png = chart(os.path.join(HERE, "results", latest + ".png"), args, results, app_us) if args.scenarios else None
    limit = {f"limit|{s}": {"ceiling": args.ceiling_label, "cores": cores(), "app_cpu_us": us,
                            "limit_rps": limits(results, app_us, s)} for s, us in app_us.items()}
    with open(os.path.join(HERE, "results", latest + ".json"), "w") as f:
        json.dump({**{f"{s}|{n}": r for (s, n), r in results.items()}, **limit,
                   **{f"{BURST}|runprefork {c}": r for c, r in burst.items()},
                   **{f"{ATTACK}|{n}": r for n, r in attacked.items()},
                   **{f"{IO}|{c}|{m}": r for (c, m), r in io.items()}}, f, indent=1)
    print(text)
    if png:
        print(f"chart: {png}")


if __name__ == "__main__":
    main()
