"""A snapshot (snapshot.py) rendered for those who ask the master.

* `document(snapshot)`: the JSON of `/status` and `preforkstatus --json`;
* `exposition(snapshot)`: `/metrics` in the Prometheus text format, through
  prometheus_client (the `[metrics]` extra) and, when the app runs
  prometheus_client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`), the
  app's own metrics aggregated over its workers.

Both take only the snapshot, never the master: what they say is what it holds.
"""

import dataclasses
import importlib.util
import os
import platform

from . import __version__

from .scoreboard import BUCKETS, RESTART_REASONS, STATUS_CLASSES

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prometheus_available():
    return importlib.util.find_spec("prometheus_client") is not None


def document(snapshot):
    """The status document: plain JSON types, the same keys whatever the platform can say."""
    listeners = []
    for listener in snapshot.listeners:
        entry = {"address": listener.address}
        if listener.queued is not None:  # absent where the kernel cannot say: never a made-up 0
            entry["queued"], entry["backlog"] = listener.queued, listener.backlog
        listeners.append(entry)
    return {
        "server": "django-prefork",
        "master": dataclasses.asdict(snapshot.master),
        "healthy": snapshot.healthy,
        "generation": snapshot.generation,
        "generations": [dataclasses.asdict(g) for g in snapshot.generations],
        "worker_target": snapshot.worker_target,
        "worker_bounds": list(snapshot.worker_bounds) if snapshot.worker_bounds else None,
        "scaling": dict(snapshot.scaling),
        "workers": len(snapshot.workers),
        "busy": snapshot.busy,
        "busy_workers": snapshot.busy_workers,
        "threads": len(snapshot.workers) * snapshot.threads_per_worker,
        "connections": snapshot.connections,
        "listeners": listeners,
        "reloads": dict(snapshot.reloads),
        "restarts": dict(snapshot.restarts),
        "reforks": snapshot.reforks,
        "totals": snapshot.totals.as_dict(),
        "worker_list": [dataclasses.asdict(w) for w in snapshot.workers],
    }


def exposition(snapshot):
    """/metrics: the snapshot's families, then the app's own in multiprocess mode."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot))
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


class _Collector:
    def __init__(self, snapshot):
        self.snapshot = snapshot

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        snap = self.snapshot
        yield GaugeMetricFamily("prefork_workers", "Worker processes alive (every generation).", value=len(snap.workers))
        yield GaugeMetricFamily("prefork_workers_busy", "Workers serving a request now (in any of their threads).",
                                value=snap.busy_workers)
        yield GaugeMetricFamily("prefork_threads", "App threads of every worker (PREFORK_THREADS each).",
                                value=len(snap.workers) * snap.threads_per_worker)
        yield GaugeMetricFamily("prefork_threads_busy", "App threads serving a request now: what the scaler and an "
                                "autoscaler compare with prefork_threads.", value=snap.busy)
        held = GaugeMetricFamily("prefork_connections", "Client connections the workers hold, by state: reading a "
                                 "request, waiting for the app, writing a response, idle keep-alive, lingering.",
                                 labels=["state"])
        for state, count in snap.connections.items():
            held.add_metric([state], count)
        yield held
        yield GaugeMetricFamily("prefork_worker_target", "Workers the serving generation keeps now (scaling moves it).",
                                value=snap.worker_target)
        if snap.worker_bounds:
            yield GaugeMetricFamily("prefork_workers_min", "The floor of scaling: PREFORK_WORKERS, moved by TTIN/TTOU.",
                                    value=snap.worker_bounds[0])
            yield GaugeMetricFamily("prefork_workers_max", "The ceiling of scaling: PREFORK_MAX_WORKERS.",
                                    value=snap.worker_bounds[1])
        scaling = CounterMetricFamily("prefork_scaling_events", "Workers added or retired by scaling (PREFORK_MAX_WORKERS).",
                                      labels=["direction"])
        for direction, count in snap.scaling.items():
            scaling.add_metric([direction], count)
        yield scaling
        queued = GaugeMetricFamily("prefork_queued_connections",
                                   "Connections waiting in the listen queue (kernel's figure).", labels=["listener"])
        backlog = GaugeMetricFamily("prefork_listen_backlog", "Length of the listen queue.", labels=["listener"])
        for listener in snap.listeners:
            if listener.queued is not None:
                queued.add_metric([listener.address], listener.queued)
                backlog.add_metric([listener.address], listener.backlog)
        yield queued
        yield backlog
        totals = snap.totals
        requests = CounterMetricFamily("prefork_requests", "Requests served, by status class.",
                                       labels=["status_class"])
        for status_class, count in zip(STATUS_CLASSES, totals.statuses):
            requests.add_metric([status_class], count)
        yield requests
        yield CounterMetricFamily("prefork_response_bytes", "Response bytes sent (heads and bodies' payload).",
                                  value=totals.bytes_out)
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, BUCKETS), "+Inf"], totals.buckets):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily("prefork_request_duration_seconds", "Time from request head to response end.",
                                    buckets=buckets, sum_value=totals.duration_sum)
        restarts = CounterMetricFamily("prefork_worker_restarts", "Workers replaced, by reason.", labels=["reason"])
        for reason in RESTART_REASONS:
            restarts.add_metric([reason], snap.restarts[reason])
        yield restarts
        reloads = CounterMetricFamily("prefork_reloads", "Reloads (new generations), by result.", labels=["result"])
        for result, count in snap.reloads.items():
            reloads.add_metric([result], count)
        yield reloads
        yield GaugeMetricFamily("prefork_generation", "The serving generation's number.",
                                value=snap.generation or 0)
        # Labelled by worker number, not pid: a replacement takes its number, so series do not churn.
        memory = GaugeMetricFamily("prefork_worker_memory_bytes", "Each worker's memory as last read (RSS, USS).",
                                   labels=["generation", "worker", "kind"])
        for worker in snap.workers:
            for kind in ("rss", "uss"):
                if getattr(worker, kind):
                    memory.add_metric([str(worker.generation), str(worker.number), kind], getattr(worker, kind))
        yield memory
        yield CounterMetricFamily("prefork_reforks", "Workers promoted to the mold the next ones are forked from.",
                                  value=snap.reforks)
        mold = GaugeMetricFamily("prefork_worker_mold_generation",
                                 "The refork whose mold forked each worker (0: its arbiter did).",
                                 labels=["generation", "worker"])
        for worker in snap.workers:
            mold.add_metric([str(worker.generation), str(worker.number)], worker.mold_generation)
        yield mold
        yield from _process_families(snap)
        yield _build_info()


def _build_info():
    import django
    from prometheus_client.core import GaugeMetricFamily

    info = GaugeMetricFamily("prefork_build_info", "The versions running: django-prefork, Python, Django.",
                             labels=["version", "python", "django"])
    info.add_metric([__version__, platform.python_version(), django.get_version()], 1)
    return info


def _process_families(snap):
    """process_* as prometheus_client's ProcessCollector names them, one series a process of the server.

    Labelled `process` (master or worker), `worker` (its number; "" for the
    master) and `pid`: a worker's figures start afresh with each
    replacement, and the pid tells the series apart. A figure not read
    (yet) is left out, never reported as 0.
    """
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    labels = ["process", "worker", "pid"]
    cpu = CounterMetricFamily("process_cpu_seconds", "User and system CPU time spent, seconds.", labels=labels)
    rss = GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size, bytes.", labels=labels)
    fds = GaugeMetricFamily("process_open_fds", "Open file descriptors.", labels=labels)
    start = GaugeMetricFamily("process_start_time_seconds", "Start time since the epoch, seconds.", labels=labels)
    master = snap.master
    rows = [(["master", "", str(master.pid)], master)]
    rows += [(["worker", str(w.number), str(w.pid)], w) for w in snap.workers]
    for values, process in rows:
        for family, figure in ((cpu, process.cpu_seconds), (rss, process.rss), (fds, process.open_fds),
                               (start, process.start_time)):
            if figure is not None:
                family.add_metric(values, figure)
    yield from (cpu, rss, fds, start)
