"""/metrics as Prometheus sees it: parsed by prometheus_client's own parser, and
scraped by a real Prometheus server (Debian's `prometheus` package, started
here as a plain subprocess on free ports with its own config and storage in a
temporary directory; no system service is used or touched).

The PromQL that docs/observability.md gives (its ```promql blocks) is run
against that Prometheus too, so a query the docs show is one Prometheus takes.
"""

import http.client
import json
import os
import pathlib
import re
import shutil
import socket
import time
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest

from .helpers import REPO, Server, metrics_url, wait_until

PROMETHEUS = shutil.which("prometheus") or next(
    (p for p in ("/usr/bin/prometheus", "/usr/sbin/prometheus") if os.path.exists(p)), None)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="the prometheus server is not installed (apt-get install prometheus; .ci/run does)")
DOCS = pathlib.Path(REPO) / "docs" / "observability.md"

# Every family metrics.py exposes, as prometheus_client's parser names them (counters without _total).
FAMILIES = {
    "prefork_workers": "gauge",
    "prefork_workers_busy": "gauge",
    "prefork_worker_target": "gauge",
    "prefork_queued_connections": "gauge",
    "prefork_listen_backlog": "gauge",
    "prefork_requests": "counter",
    "prefork_response_bytes": "counter",
    "prefork_request_duration_seconds": "histogram",
    "prefork_worker_restarts": "counter",
    "prefork_reloads": "counter",
    "prefork_generation": "gauge",
    "prefork_worker_memory_bytes": "gauge",
    "prefork_build_info": "gauge",
}
SAMPLE_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                   "gauge": ()}
PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prefork
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server():
    """runprefork with two workers and PREFORK_METRICS on a port of the kernel's choosing;
    `server.metrics_port`."""
    srv = Server(settings={"PREFORK_METRICS": "127.0.0.1:0", "PREFORK_WORKERS": 2})
    try:
        srv.start()
        port = srv.metrics_port = int(metrics_url(srv).rsplit(":", 1)[1])
        srv.wait_workers(2)
        wait_until(lambda: http_get(port, "/healthz")[0] == 200, timeout=10,
                   message=f"/healthz to say 200 (output:\n{srv.output})")
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def prometheus(server, tmp_path_factory):
    """A Prometheus scraping `server`'s /metrics every second; yields query(promql) -> the API's data."""
    if PROMETHEUS is None:
        pytest.skip("the prometheus server is not installed (apt-get install prometheus; .ci/run does)")
    tmp = tmp_path_factory.mktemp("prometheus")
    config = tmp / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.format(port=server.metrics_port))
    web_port = free_port()
    log = open(tmp / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{web_port}", "--log.level=warn"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
    )

    def its_log():
        log.flush()
        return (tmp / "prometheus.log").read_text(errors="replace")

    def ready():
        assert proc.poll() is None, f"prometheus exited {proc.returncode}:\n{its_log()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def query(promql):
        url = f"http://127.0.0.1:{web_port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422: the query was refused; the body says why
            answer = json.load(exc)
        assert answer["status"] == "success", f"{promql!r}: {answer}"
        return answer["data"]

    try:
        wait_until(ready, timeout=20, interval=0.1, message="prometheus to be ready")
        query.log = its_log
        yield query
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def values(data):
    """{instance: float} of an instant vector."""
    assert data["resultType"] == "vector", data
    return {r["metric"].get("instance"): float(r["value"][1]) for r in data["result"]}


# -- the exposition itself ---------------------------------------------------------------


def test_the_exposition_parses_and_every_family_has_help_and_type(server):
    from prometheus_client.parser import text_string_to_metric_families

    for path in ("/pid", "/pid", "/pid", "/no-such-page"):
        server.get(path)
    status, content_type, body = http_get(server.metrics_port, "/metrics")
    assert status == 200, body
    assert content_type.startswith("text/plain; version="), content_type
    text = body.decode()

    families = {f.name: f for f in text_string_to_metric_families(text)}
    ours = {name: f for name, f in families.items() if name.startswith("prefork_")}
    assert set(FAMILIES) <= set(ours), f"missing: {set(FAMILIES) - set(ours)}"
    for name, family in ours.items():
        assert family.documentation.strip(), f"{name} has no HELP"
        assert family.type != "unknown", f"{name} has no TYPE"
        if name in FAMILIES:
            assert family.type == FAMILIES[name], (name, family.type)

    # The raw text too: every sample line belongs to a family announced by both a HELP and a TYPE line.
    helped = set(re.findall(r"^# HELP (\S+) \S", text, re.M))
    typed = dict(re.findall(r"^# TYPE (\S+) (\w+)$", text, re.M))
    assert set(typed) == helped, (set(typed) ^ helped)
    for line in text.splitlines():
        if not line.startswith("prefork_"):
            continue
        sample = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
        family = next((t for t in typed if sample == t or (
            sample.startswith(t) and sample[len(t):] in SAMPLE_SUFFIXES.get(typed[t], ()))), None)
        assert family is not None, f"no HELP/TYPE for the sample {line!r}"

    def sample(name, **labels):
        found = [s.value for f in families.values() for s in f.samples
                 if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) == 1, (name, labels, found)
        return found[0]

    assert sample("prefork_workers") == 2
    assert sample("prefork_worker_target") == 2
    assert sample("prefork_workers_busy") == 0
    assert sample("prefork_generation") == 1
    assert sample("prefork_requests_total", status_class="2xx") >= 3
    assert sample("prefork_requests_total", status_class="4xx") >= 1
    requests = sum(s.value for s in families["prefork_requests"].samples if s.name == "prefork_requests_total")
    assert sample("prefork_request_duration_seconds_count") == requests
    buckets = [(float(s.labels["le"]), s.value) for s in families["prefork_request_duration_seconds"].samples
               if s.name == "prefork_request_duration_seconds_bucket"]
    assert [le for le, _ in buckets] == sorted(le for le, _ in buckets) and buckets[-1][0] == float("inf")
    counts = [count for _, count in buckets]
    assert counts == sorted(counts) and counts[-1] == requests, buckets  # cumulative, +Inf is the count
    assert 0 < sample("prefork_request_duration_seconds_sum") < requests * 5
    if hasattr(socket, "TCP_INFO"):  # the kernel's figures, on Linux
        assert sample("prefork_listen_backlog", listener=server.url) > 0
        assert sample("prefork_queued_connections", listener=server.url) == 0


def test_process_metrics_are_each_processs_own(server):
    """process_* for the master and each worker, read from /proc by the master and the arbiter."""
    from prometheus_client.parser import text_string_to_metric_families

    def scrape():
        text = http_get(server.metrics_port, "/metrics")[2].decode()
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples if s.name.startswith("process_")]
        return {(s.name, s.labels["process"], s.labels["pid"]): s.value for s in samples}

    workers = server.wait_workers(2)
    # The arbiter reads the workers about once a second: wait for a look at both.
    found = wait_until(lambda: all(("process_open_fds", "worker", str(p)) in (f := scrape()) for p in workers) and f,
                       message="process_* of both workers")
    master = str(server.pid)
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                 "process_start_time_seconds"):
        assert (name, "master", master) in found, name
        for pid in workers:
            assert (name, "worker", str(pid)) in found, (name, pid)
    assert found[("process_open_fds", "master", master)] >= 3  # at least the listener, the control socket, /metrics
    assert found[("process_resident_memory_bytes", "worker", str(workers[0]))] > 1 << 20
    started = found[("process_start_time_seconds", "worker", str(workers[0]))]
    assert found[("process_start_time_seconds", "master", master)] <= started <= time.time()


# -- a real Prometheus -------------------------------------------------------------------


@needs_prometheus
def test_a_real_prometheus_scrapes_it(server, prometheus):
    target = f"127.0.0.1:{server.metrics_port}"
    for _ in range(3):
        assert server.get("/pid")[0] == 200
    # Both workers held busy by slow requests (never answered: the module's teardown kills the server).
    held = []
    try:
        for _ in range(2):
            sock = server.connect(timeout=30)
            sock.sendall(b"GET /slow?s=60 HTTP/1.1\r\nHost: x\r\n\r\n")
            held.append(sock)
        wait_until(lambda: json.loads(http_get(server.metrics_port, "/status")[2])["busy"] == 2, timeout=10,
                   message="both workers busy in /status")

        def scraped_busy():
            return values(prometheus('prefork_workers_busy{job="prefork"}')).get(target) == 2

        wait_until(scraped_busy, timeout=15, interval=0.25,
                   message=f"Prometheus to return prefork_workers_busy 2 for {target} (its log:\n{prometheus.log()})")
        assert values(prometheus('up{job="prefork"}')) == {target: 1}
        assert values(prometheus('prefork_workers{job="prefork"}')) == {target: 2}
        assert values(prometheus('prefork_requests_total{job="prefork",status_class="2xx"}'))[target] >= 3
        saturation = values(prometheus('sum(prefork_workers_busy) / sum(prefork_workers)'))
        assert list(saturation.values()) == [1.0]
    finally:
        for sock in held:
            sock.close()


def promql_in_docs():
    """Every query in docs/observability.md's ```promql blocks: one a line, `#` starts a comment."""
    text = DOCS.read_text() if DOCS.exists() else ""
    queries = []
    for block in re.findall(r"^```promql\n(.*?)^```$", text, re.M | re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()  # no query there uses a # inside a string
            if line:
                queries.append(line)
    return queries


@needs_prometheus
def test_the_promql_in_the_docs_is_valid(prometheus):
    queries = promql_in_docs()
    assert len(queries) >= 4, f"no ```promql blocks found in {DOCS}"
    for query in queries:
        prometheus(query)  # asserts the API's status is success: Prometheus parsed and ran it
