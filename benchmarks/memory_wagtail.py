"""Memory of a real third-party Django site, a fresh Wagtail site, under each server (issue #22).

    /tmp/wv/bin/python benchmarks/memory_wagtail.py          # a venv with wagtail, gunicorn, pyuwsgi
    /tmp/wv/bin/python benchmarks/memory_wagtail.py --workers 4 --warm 200 --only runprefork,refork

What it measures, and why this way. A pre-fork server's memory is what the fork
shares plus what each worker makes its own. A worker makes memory its own by
*writing* to a page it shares with its parent (copy on write): importing the
modules a view needs on first use, filling Django's and Wagtail's caches (URL
resolvers, templates, the site root), and in Python ≥ 3.11 quickening the code
objects it runs (the specializing interpreter rewrites bytecode in place), and
the reference counts of every object it touches. So the number that matters is
the site's memory *after* every worker has served a realistic mix for a while,
not at start.

The site: `wagtail start mysite DIR` in a temp dir, its settings extended by a
`bench` module (DEBUG off, "django_prefork" in INSTALLED_APPS with this repo on
PYTHONPATH, a middleware that adds `X-Worker-Pid` so the client knows which
worker answered), `migrate`, a superuser and an "About" page under Home. The
mix, round robin: `/` (Home), `/about/` (a page), `/admin/login/` (Wagtail's
admin: its templates, forms, icons), `/search/?query=x` (the database search
backend), each on a new connection, 4 client threads.

Each configuration, a fresh server, 4 workers: warm until every live worker has
answered at least `--warm` (200) requests (by `X-Worker-Pid`; at most 25 × that
in all), wait a second, then read /proc/PID/smaps_rollup of every process of the
server (the server's process and its descendants, walked by /proc/*/stat's
ppid; with refork the arbiter is a child subreaper, so the mold and its
grandchildren stay among them): the sum of PSS (each shared page counted once
over the processes sharing it: the site's real footprint), and each worker's
USS (Private_Clean + Private_Dirty: what killing it would free).

For `PREFORK_REFORK_AFTER=[50]`: warm until the arbiter logs "refork 1 done"
(every worker then is a child of the mold, a worker promoted after its 50th
request), then warm again as above, so the workers forked from the mold have
served as much as the others before the reading. With no PREFORK_MAX_REQUESTS
the mold retires once every worker is its child (refork.py); one still running
would be counted.

Latency, cheap: each worker's first response (the first request an unseen pid
answered) against the p50 of every response in the last warm-up. For runprefork
without preload, a first request is a cold one (Django and Wagtail load then);
with refork, the workers alive at the reading, every one a child of the mold.

Also in the JSON: one worker's private memory and every other process's, by mapping
([anon], [heap], *.so): what a worker still makes its own, and what the mold keeps.

Writes benchmarks/results/wagtail.md and wagtail.json (--out: another name).
"""

import argparse
import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
PATHS = ["/", "/about/", "/admin/login/", "/search/?query=x"]

BENCH_SETTINGS = '''\
import os
from .dev import *  # noqa

DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = INSTALLED_APPS + ["django_prefork"]
MIDDLEWARE = ["mysite.pidheader.PidHeader"] + MIDDLEWARE
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "handlers": {"err": {"class": "logging.StreamHandler"}},
           "loggers": {"django_prefork": {"handlers": ["err"], "level": "INFO"}}}
'''

PID_MIDDLEWARE = '''\
import os


class PidHeader:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response["X-Worker-Pid"] = str(os.getpid())
        return response
'''

MAKE_PAGE = '''\
from django.contrib.auth import get_user_model
from wagtail.models import Page
U = get_user_model()
if not U.objects.filter(username="admin").exists():
    U.objects.create_superuser("admin", "admin@example.com", "admin")
home = Page.objects.get(slug="home", depth=2).specific
if not Page.objects.filter(slug="about").exists():
    home.add_child(instance=type(home)(title="About", slug="about"))
'''


def make_site(root, py):
    env = site_env(root)
    subprocess.run([os.path.join(os.path.dirname(py), "wagtail"), "start", "mysite", root], check=True,
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(root, "mysite", "settings", "bench.py"), "w") as f:
        f.write(BENCH_SETTINGS)
    with open(os.path.join(root, "mysite", "pidheader.py"), "w") as f:
        f.write(PID_MIDDLEWARE)
    subprocess.run([py, "manage.py", "migrate", "-v", "0"], cwd=root, env=env, check=True)
    subprocess.run([py, "manage.py", "shell", "-c", MAKE_PAGE], cwd=root, env=env, check=True)


def site_env(root, extra=None):
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="mysite.settings.bench", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([REPO, root]))
    env.update(extra or {})
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configurations(py, port, workers):
    """name: (command, extra environment)."""
    manage = ["manage.py", "runprefork", f"127.0.0.1:{port}", "--noreload"]
    wsgi = "mysite.wsgi:application"
    gunicorn = [py, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}", "--worker-class", "sync"]
    w = {"PREFORK_WORKERS": str(workers)}
    return {
        "runprefork": ([py, *manage], w),
        "runprefork --preload": ([py, *manage, "--preload"], w),
        "runprefork refork [50]": ([py, *manage], dict(w, PREFORK_REFORK_AFTER="[50]")),
        "gunicorn": ([*gunicorn, wsgi], {}),
        "gunicorn --preload": ([*gunicorn, "--preload", wsgi], {}),
        "uWSGI": ([py, "-c", "import pyuwsgi; pyuwsgi.run()", "--http-socket", f"127.0.0.1:{port}", "--master",
                   "--processes", str(workers), "--module", wsgi, "--disable-logging", "--die-on-term"], {}),
    }


def descendants(root):
    """root and every process below it, by /proc/*/stat's ppid."""
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += [p for p, pp in parent.items() if pp == pid]
    return found


def rollup(pid):
    """{field: kB} from /proc/PID/smaps_rollup."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                    out[parts[0][:-1]] = int(parts[1])
    except OSError:
        return None
    return out


def private_by_kind(pid):
    """MiB private to pid (Private_Clean + Private_Dirty) by mapping: [anon] (pymalloc's arenas
    among them), [heap], *.so, the rest by file name; the 4 largest."""
    kinds, kind = {}, None
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                parts = line.split()
                if not parts[0].endswith(":"):  # a mapping's first line: range perms offset dev inode [path]
                    path = parts[5] if len(parts) > 5 else "[anon]"
                    kind = "*.so" if ".so" in path else os.path.basename(path) if "/" in path else path
                elif parts[0] in ("Private_Clean:", "Private_Dirty:"):
                    kinds[kind] = kinds.get(kind, 0) + int(parts[1])
    except OSError:
        return {}
    return {k: round(v / 1024, 1) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:4]}


def get(port, path):
    """(latency s, worker pid or None, status)."""
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        r.read()
        return time.perf_counter() - t0, r.getheader("X-Worker-Pid"), r.status
    finally:
        c.close()


class Load:
    """Client threads sending the mix until told to stop; per pid: counts and first latency."""

    def __init__(self, port, clients=4):
        self.port, self.clients = port, clients
        self.lock = threading.Lock()
        self.counts, self.first, self.latencies, self.errors, self.statuses = {}, {}, [], 0, {}
        self.n = 0

    def reset(self):
        with self.lock:
            self.counts, self.latencies = {}, []

    def run(self, until, cap):
        stop = threading.Event()

        def client(k):
            i = k
            while not stop.is_set():
                path = PATHS[i % len(PATHS)]
                i += 1
                try:
                    dt, pid, status = get(self.port, path)
                except OSError:
                    with self.lock:
                        self.errors += 1
                    time.sleep(0.05)
                    continue
                with self.lock:
                    self.n += 1
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                    self.latencies.append(dt)
                    if pid:
                        self.counts[pid] = self.counts.get(pid, 0) + 1
                        self.first.setdefault(pid, (dt, path, time.monotonic()))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(self.clients)]
        for t in threads:
            t.start()
        start = self.n
        try:
            while not until() and self.n - start < cap:
                time.sleep(0.1)
        finally:
            stop.set()
            for t in threads:
                t.join()
        return self.n - start


def wait_ready(port, proc, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(3.0)  # the workers start (the first request's latency is then its own, not the boot's)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server never answered")


def measure(name, cmd, extra, root, workers, warm):
    port = free_port()
    cmd = [a.replace("PORT", str(port)) for a in cmd]
    refork = "PREFORK_REFORK_AFTER" in extra
    log_path = os.path.join(root, f"log-{re.sub(r'[^a-z0-9]+', '-', name.lower())}.txt")
    logf = open(log_path, "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=root, env=site_env(root, extra), stdout=logf, stderr=subprocess.STDOUT,
                            start_new_session=True)
    result = {"configuration": name, "command": " ".join(os.path.basename(cmd[0]) if i == 0 else a
                                                           for i, a in enumerate(cmd)), "environment": extra}
    try:
        wait_ready(port, proc)
        load = Load(port)

        def live_workers():
            return [p for p in load.counts if os.path.exists(f"/proc/{p}")]

        def warmed():
            live = live_workers()
            return len(live) >= workers and all(load.counts[p] >= warm for p in live)

        if refork:
            def reforked():
                with open(log_path) as f:
                    return "refork 1 done" in f.read()
            sent = load.run(reforked, cap=40 * warm)
            result["refork_done"] = reforked()
            result["refork_requests"] = sent
            load.reset()
        sent = load.run(warmed, cap=25 * warm)
        time.sleep(1.0)
        pids = descendants(proc.pid)
        rolls = {p: rollup(p) for p in pids}
        rolls = {p: r for p, r in rolls.items() if r}
        live = set(int(p) for p in live_workers())
        result["pss_mib"] = round(sum(r.get("Pss", 0) for r in rolls.values()) / 1024, 1)
        result["processes"] = len(rolls)
        result["workers_uss_mib"] = sorted(round((r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)) / 1024, 1)
                                           for p, r in rolls.items() if p in live)
        result["others_pss_mib"] = round(sum(r.get("Pss", 0) for p, r in rolls.items() if p not in live) / 1024, 1)
        result["private_by_kind_mib"] = {
            f"{'worker' if p in live else 'other'} {p}": private_by_kind(p)
            for p in [min(live, default=None), *[q for q in rolls if q not in live]] if p}
        result["requests_per_worker_last_warm"] = sorted(load.counts[str(p)] for p in live if str(p) in load.counts)
        result["warm_requests"] = sent
        result["p50_ms"] = round(statistics.median(load.latencies) * 1000, 2)
        result["errors"] = load.errors
        result["statuses"] = {str(k): v for k, v in sorted(load.statuses.items())}
        # the live workers' first responses: with refork, every live worker is a child of the mold
        result["first_request_ms"] = sorted(round(v[0] * 1000, 1) for p, v in load.first.items() if int(p) in live)
        result["start_s"] = round(time.monotonic() - t0, 1)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        logf.close()
    with open(log_path) as f:
        if refork:
            result["refork_log"] = [line.strip() for line in f if re.search(r"\brefork\b|\bmold\b", line)][:16]
    return result


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "—"


def report(results, meta):
    by = {r["configuration"]: r for r in results}
    base = by.get("runprefork", {}).get("pss_mib")
    lines = [
        "# Memory: a fresh Wagtail site (issue #22)",
        "",
        f"`{meta['command']}`: {meta['workers']} workers each, every worker warmed by ≥ {meta['warm']} requests "
        f"of `/`, `/about/`, `/admin/login/`, `/search/?query=x` (DEBUG off), then the sum of PSS over all the "
        f"server's processes. {meta['platform']}; Python {meta['python']}; Django {meta['django']}, "
        f"Wagtail {meta['wagtail']}, gunicorn {meta['gunicorn']}, uWSGI {meta['uwsgi']}; {meta['date']}.",
        "",
        "| configuration | sum of PSS, MiB | / runprefork | processes | workers' USS, MiB | others' PSS | p50 ms | "
        "first request ms (per worker) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "pss_mib" not in r:
            lines.append(f"| {r['configuration']} | failed: {r.get('error', '?')} | | | | | | |")
            continue
        lines.append(
            f"| {r['configuration']} | {r['pss_mib']} | {ratio(r['pss_mib'], base)} | {r['processes']} | "
            f"{', '.join(map(str, r['workers_uss_mib']))} | {r['others_pss_mib']} | {r['p50_ms']} | "
            f"{', '.join(map(str, r['first_request_ms'])) or '—'} |")
    lines += ["", "Others: the arbiter/master (and, with refork, the mold while it runs: it retires once every "
              "worker is its child). First request: the first response from each worker pid the client saw (with refork, the workers alive at the reading: all children of the mold); "
              "a cold one loads Django and Wagtail then, unless preloaded.", ""]
    for r in results:
        if r.get("refork_log"):
            lines.append(f"{r['configuration']}: refork done {r.get('refork_done')} after "
                         f"{r.get('refork_requests')} requests; the arbiter said:")
            lines += [f"    {line}" for line in r["refork_log"]]
            lines.append("")
    return "\n".join(lines)


def version(py, code):
    try:
        return subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=30).stdout.strip() or "?"
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--warm", type=int, default=200, help="requests each worker answers before the reading")
    ap.add_argument("--only", default="", help="comma-separated configuration names (default: all)")
    ap.add_argument("--out", default="wagtail", help="results/OUT.md and OUT.json")
    ap.add_argument("--keep", action="store_true", help="keep the temp site")
    args = ap.parse_args()
    py = sys.executable
    root = tempfile.mkdtemp(prefix="wagtail-bench-")
    make_site(root, py)
    results = []
    for name, (cmd, extra) in configurations(py, "PORT", args.workers).items():
        if args.only and name not in args.only.split(","):
            continue
        print(f"{name} ...", flush=True)
        try:
            r = measure(name, cmd, extra, root, args.workers, args.warm)
        except Exception as exc:  # one failing server leaves the others' rows
            r = {"configuration": name, "error": str(exc)}
        print(json.dumps(r), flush=True)
        results.append(r)
    meta = {
        "command": "python benchmarks/memory_wagtail.py" + (f" --workers {args.workers}" if args.workers != 4 else "")
        + (f" --only '{args.only}'" if args.only else "") + (f" --out {args.out}" if args.out != "wagtail" else ""),
        "workers": args.workers, "warm": args.warm, "platform": f"{platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs", "python": platform.python_version(),
        "django": version(py, "import django; print(django.__version__)"),
        "wagtail": version(py, "import wagtail; print(wagtail.__version__)"),
        "gunicorn": version(py, "import gunicorn; print(gunicorn.__version__)"),
        "uwsgi": version(py, "import importlib.metadata as m; print(m.version('pyuwsgi'))"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{args.out}.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    text = report(results, meta)
    with open(os.path.join(RESULTS, f"{args.out}.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    if not args.keep:
        subprocess.run(["rm", "-rf", root])
    else:
        print(f"site kept in {root}")


if __name__ == "__main__":
    main()
