"""runprefork side by side with its peers, in one run, on testproject/.

    python benchmarks/run.py                 # all scenarios, 2 workers, 3 rounds
    python benchmarks/run.py --quick         # hello only, short rounds
    python benchmarks/run.py --scenarios burst --servers runprefork --no-memory
                                             # the burst scenario alone

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
"""

import argparse
import datetime
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
}
POST_BODY = b"x" * 100_000
BURST = "burst"  # a scenario of its own kind: runprefork only, see the docstring
BURST_PATH = "/slow?seconds=0.2"
BURST_CLIENTS = 6
BURST_CONFIGS = {  # name: (--workers, PREFORK_MAX_WORKERS or None)
    "fixed 1 worker": (1, None),
    "fixed 4 workers": (4, None),
    "scaling 1→4": (1, 4),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has_module(name):
    return subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True).returncode == 0


def server_commands(workers, port):
    """The servers to compare, by name: the command that runs each on `port`."""
    py = sys.executable
    manage = os.path.join(PROJECT, "manage.py")
    servers = {
        "runprefork": [py, manage, "runprefork", f"127.0.0.1:{port}", "--workers", str(workers), "--noreload"],
        "gunicorn": [py, "-m", "gunicorn", "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
                     "--worker-class", "sync", "testproject.wsgi:application"],
        "runserver": [py, manage, "runserver", f"127.0.0.1:{port}", "--noreload"],
    }
    if has_module("granian"):
        servers["granian"] = [py, "-m", "granian", "--interface", "wsgi", "--workers", str(workers),
                              "--host", "127.0.0.1", "--port", str(port), "testproject.wsgi:application"]
    if has_module("pyuwsgi"):
        servers["uwsgi"] = [py, "-c", "import pyuwsgi; pyuwsgi.run()", "--http-socket", f"127.0.0.1:{port}", "--master",
                            "--processes", str(workers), "--module", "testproject.wsgi:application",
                            "--disable-logging"]
    return servers


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


def wrk(url, method, seconds, connections):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", "Connection: close"]
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
    errors = sum(int(x) for x in m.groups()) if (m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)) else 0
    lat = {p: _ms(m.group(1), m.group(2)) for p in ("50", "99")
           if (m := re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out))}
    return {"rps": rps, "non2xx": non2xx, "errors": errors, "p50": lat.get("50"), "p99": lat.get("99")}


def _ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def python_load(url, method, seconds, connections):
    """A small closed-loop client for machines without wrk."""
    host, port, path = re.match(r"http://([^:/]+):(\d+)(/.*)", url).groups()
    body = POST_BODY if method == "POST" else b""
    request = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    latencies, failures, deadline = [], [0], time.monotonic() + seconds

    def client():
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                with socket.create_connection((host, int(port)), timeout=10) as s:
                    s.sendall(request)
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                if not data.startswith(b"HTTP/1.1 2"):
                    failures[0] += 1
                latencies.append((time.monotonic() - t0) * 1000)
            except OSError:
                failures[0] += 1

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None  # noqa: E731
    return {"rps": len(latencies) / seconds, "non2xx": failures[0], "errors": 0, "p50": pick(0.5), "p99": pick(0.99)}


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


def prepare_env(tmp):
    db = os.path.join(tmp, "db.sqlite3")
    env = dict(os.environ, DJANGO_DEBUG="0", TESTPROJECT_DB=db, DJANGO_SETTINGS_MODULE="testproject.settings",
               PYTHONPATH=PROJECT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, os.path.join(PROJECT, "manage.py"), "migrate", "-v0"], env=env, check=True)
    return env


def measure_throughput(args, env, load):
    if not args.scenarios:
        return {}, {}
    servers = server_commands(args.workers, 0)
    running = {}
    try:
        for name in servers:
            if name not in args.servers:
                continue
            port = free_port()
            running[name] = Running(name, server_commands(args.workers, port)[name], port, env)
        for server in running.values():  # warm-up: imports, caches, the SQLite page cache
            for path, method in SCENARIOS.values():
                load(f"http://127.0.0.1:{server.port}{path}", method, 1, 4)
        results = {}  # (scenario, server) -> [round results]
        names = list(running)
        for round_no in range(args.rounds):
            order = names if round_no % 2 == 0 else names[::-1]
            for scenario in args.scenarios:
                path, method = SCENARIOS[scenario]
                for name in order:
                    url = f"http://127.0.0.1:{running[name].port}{path}"
                    r = load(url, method, args.duration, args.connections)
                    results.setdefault((scenario, name), []).append(r)
                    print(f"round {round_no + 1} {scenario:12} {name:11} {r['rps']:9.0f} req/s "
                          f"p99 {r['p99'] or 0:.1f} ms non-2xx {r['non2xx']} errors {r['errors']}", flush=True)
        first_200 = {name: s.first_200 for name, s in running.items()}
        return results, first_200
    finally:
        for server in running.values():
            server.stop()


def measure_memory(args, env, load):
    memory = {}
    for workers in (2, 8):
        for name in args.servers:
            if name == "runserver" or name not in server_commands(workers, 0):
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


def report(args, results, first_200, memory, loader, burst=None):
    lines = [f"# Benchmark {datetime.datetime.now():%Y-%m-%d %H:%M}", ""]
    machine = (f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}; "
               f"Python {platform.python_version()}; Django {_version('django')}; ")
    if not results:
        lines += [machine + "DEBUG off.", ""] + burst_report(args, burst or {})
        lines += ["", f"Reproduce: `python benchmarks/run.py {' '.join(sys.argv[1:])}`".rstrip() + ""]
        return "\n".join(lines) + "\n"
    lines += [machine + f"gunicorn {_version('gunicorn')}; "
              f"load: {loader}, {args.connections} connections, `Connection: close`, "
              f"{args.rounds} rounds × {args.duration} s, {args.workers} workers, DEBUG off.", ""]
    names = [n for n in args.servers if any((s, n) in results for s in args.scenarios)]
    lines += ["## Requests per second (median of rounds)", "",
              "| scenario | " + " | ".join(names) + " | runprefork / gunicorn |",
              "|---" * (len(names) + 2) + "|"]
    for scenario in args.scenarios:
        row = [scenario]
        for name in names:
            rounds = results.get((scenario, name), [])
            med = statistics.median(r["rps"] for r in rounds) if rounds else 0
            bad = sum(r["non2xx"] + r["errors"] for r in rounds)
            row.append(f"{med:,.0f}" + (f" ({bad} failed)" if bad else ""))
        if ("gunicorn" in names) and ("runprefork" in names):
            ratios = [a["rps"] / b["rps"] for a, b in zip(results[(scenario, "runprefork")],
                                                          results[(scenario, "gunicorn")]) if b["rps"]]
            row.append(f"**{statistics.median(ratios):.2f}×**" if ratios else "–")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Latency, hello (median of rounds, ms)", "", "| server | p50 | p99 |", "|---|---|---|"]
    for name in names:
        rounds = results.get(("hello", name)) or results.get((args.scenarios[0], name), [])
        if rounds:
            p50 = statistics.median(r["p50"] or 0 for r in rounds)
            p99 = statistics.median(r["p99"] or 0 for r in rounds)
            lines.append(f"| {name} | {p50:.2f} | {p99:.2f} |")
    lines += ["", "## Start to first 200 (s)", "", "| server | s |", "|---|---|"]
    lines += [f"| {name} | {t:.2f} |" for name, t in first_200.items()]
    if memory:
        lines += ["", "## Memory: sum of PSS over all the server's processes (MiB)", "",
                  "| server | 2 workers | 8 workers |", "|---|---|---|"]
        for label in dict.fromkeys(label for label, _ in memory):
            cells = [f"{memory[(label, w)][0]:.1f}" if (label, w) in memory else "–" for w in (2, 8)]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if burst:
        lines += [""] + burst_report(args, burst)
    lines += ["", f"Reproduce: `python benchmarks/run.py {' '.join(sys.argv[1:])}`".rstrip() + ""]
    return "\n".join(lines) + "\n"


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


def chart(path, args, results):
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
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(args.scenarios))], args.scenarios)
    ax.set_ylabel("requests/s (higher is better)")
    ax.set_title(f"testproject, {args.workers} workers, Connection: close")
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--scenarios", default=",".join([*SCENARIOS, BURST]),
                        help=f"comma-separated, from: {', '.join([*SCENARIOS, BURST])}")
    parser.add_argument("--burst-seconds", type=float, default=8, help="length of the burst scenario's load")
    parser.add_argument("--servers", default="runprefork,gunicorn,runserver,granian,uwsgi")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--quick", action="store_true", help="hello only, 2 rounds of 4 s, no memory")
    args = parser.parse_args()
    if args.quick:
        args.scenarios, args.rounds, args.duration, args.no_memory = "hello", 2, 4, True
    wanted = args.scenarios.split(",")
    args.scenarios = [s for s in wanted if s in SCENARIOS]
    args.servers = args.servers.split(",")
    args.burst = BURST in wanted and "runprefork" in args.servers
    if "gunicorn" in args.servers and args.scenarios and not has_module("gunicorn"):
        sys.exit("gunicorn is missing: pip install -e '.[bench]'")
    load, loader = (wrk, "wrk") if shutil.which("wrk") else (python_load, "python fallback (no wrk: apt-get install wrk)")
    print(f"load generator: {loader}")
    with tempfile.TemporaryDirectory() as tmp:
        env = prepare_env(tmp)
        results, first_200 = measure_throughput(args, env, load)
        memory = {} if args.no_memory else measure_memory(args, env, load)
        burst = measure_burst(args, env, tmp) if args.burst else {}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    text = report(args, results, first_200, memory, loader, burst)
    # A quick run is a check, not a result, and a run of the burst alone is
    # not a full one: both leave the last full report alone.
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    latest = "quick" if args.quick else "latest" if results else "burst"
    for name in ((f"{stamp}.md", "latest.md") if latest == "latest" else (latest + ".md",)):
        with open(os.path.join(HERE, "results", name), "w") as f:
            f.write(text)
    png = chart(os.path.join(HERE, "results", latest + ".png"), args, results) if results else None
    with open(os.path.join(HERE, "results", latest + ".json"), "w") as f:
        json.dump({**{f"{s}|{n}": r for (s, n), r in results.items()},
                   **{f"{BURST}|runprefork {c}": r for c, r in burst.items()}}, f, indent=1)
    print(text)
    if png:
        print(f"chart: {png}")


if __name__ == "__main__":
    main()
