"""The status document and its Prometheus exposition, built by the master.

`Report` holds what must outlive a generation (the counters of generations
that have ended, reloads ok and failed) and turns the scoreboard and the
master's own view into:

* `document()`: the JSON of `/status` and `preforkstatus --json`;
* `exposition()`: `/metrics` in the Prometheus text format, through
  prometheus_client (the `[metrics]` extra) and, when the app runs
  prometheus_client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`), the
  app's own metrics aggregated over its workers.

Every counter here is a sum over the server's life: the workers alive now,
plus those dead (folded into their generation's block record by its
arbiter), plus the generations ended (folded into `Report.ended` by the
master), so none goes down across worker deaths, recycles and reloads.
"""

import importlib.util
import os
import time

from .scoreboard import BUCKETS, RESTART_REASONS, STATUS_CLASSES, Counters
from .sockets import listen_queue

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prometheus_available():
    return importlib.util.find_spec("prometheus_client") is not None


class Report:
    def __init__(self, master):
        self.master = master
        self.ended = Counters()
        self.ended_restarts = dict.fromkeys(RESTART_REASONS, 0)
        self.reloads = {"ok": 0, "failed": 0}
        self.ended_scaling = {"up": 0, "down": 0}
        self.started = time.time()

    def generation_ended(self, block):
        """Fold an ended generation's block into the lifetime totals; free the block."""
        counters, restarts, scaling = self.master.scoreboard.release_block(block)
        self.ended.add(counters)
        for reason, count in restarts.items():
            self.ended_restarts[reason] += count
        for direction, count in scaling.items():
            self.ended_scaling[direction] += count

    # -- the document -------------------------------------------------------------------

    def document(self):
        master = self.master
        board = master.scoreboard
        totals = Counters().add(self.ended)
        restarts = dict(self.ended_restarts)
        scaling = dict(self.ended_scaling)
        generations, workers = [], []
        serving = master.serving()
        capacity = None
        for generation in master.generations:
            rows = []
            if generation.block is not None:
                totals.add(board.block_counters(generation.block))
                for reason, count in board.restarts(generation.block).items():
                    restarts[reason] += count
                generation_capacity = board.capacity(generation.block)
                for direction in ("up", "down"):
                    scaling[direction] += generation_capacity[direction]
                if generation is serving:
                    capacity = generation_capacity
                rows = board.workers(generation.block)
                for row in rows:
                    row["generation"] = generation.number
                    row.pop("counters")
                workers += rows
            generations.append({"number": generation.number, "state": generation.state, "pid": generation.pid,
                                "workers": len(rows)})
        listeners = []
        for listener in master.listeners:
            queue = listen_queue(listener.sock)
            entry = {"address": listener.url()}
            if queue is not None:  # absent where the kernel cannot say: never a made-up 0
                entry["queued"], entry["backlog"] = queue
            listeners.append(entry)
        return {
            "server": "django-prefork",
            "master": {"pid": os.getpid(), "uptime": round(time.time() - self.started, 3), "name": master.name},
            "healthy": master.healthy(),
            "generation": serving.number if serving else None,
            "generations": generations,
            "worker_target": capacity["target"] if capacity and capacity["target"] else master.worker_count,
            "worker_bounds": [capacity["floor"], capacity["ceiling"]] if capacity and capacity["target"] else None,
            "scaling": scaling,
            "workers": len(workers),
            "busy": sum(1 for w in workers if w["state"] in ("busy", "debugging")),
            "listeners": listeners,
            "reloads": dict(self.reloads),
            "restarts": restarts,
            "totals": totals.as_dict(),
            "worker_list": workers,
        }

    # -- /metrics ------------------------------------------------------------------------

    def exposition(self):
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self.document()))
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)


class _Collector:
    def __init__(self, doc):
        self.doc = doc

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        doc = self.doc
        yield GaugeMetricFamily("prefork_workers", "Worker processes alive (every generation).", value=doc["workers"])
        yield GaugeMetricFamily("prefork_workers_busy", "Workers serving a request now.", value=doc["busy"])
        yield GaugeMetricFamily("prefork_worker_target", "Workers the serving generation keeps now (scaling moves it).",
                                value=doc["worker_target"])
        if doc["worker_bounds"]:
            yield GaugeMetricFamily("prefork_workers_min", "The floor of scaling: PREFORK_WORKERS, moved by TTIN/TTOU.",
                                    value=doc["worker_bounds"][0])
            yield GaugeMetricFamily("prefork_workers_max", "The ceiling of scaling: PREFORK_MAX_WORKERS.",
                                    value=doc["worker_bounds"][1])
        scaling = CounterMetricFamily("prefork_scaling_events", "Workers added or retired by scaling (PREFORK_MAX_WORKERS).",
                                      labels=["direction"])
        for direction, count in doc["scaling"].items():
            scaling.add_metric([direction], count)
        yield scaling
        queued = GaugeMetricFamily("prefork_queued_connections",
                                   "Connections waiting in the listen queue (kernel's figure).", labels=["listener"])
        backlog = GaugeMetricFamily("prefork_listen_backlog", "Length of the listen queue.", labels=["listener"])
        for listener in doc["listeners"]:
            if "queued" in listener:
                queued.add_metric([listener["address"]], listener["queued"])
                backlog.add_metric([listener["address"]], listener["backlog"])
        yield queued
        yield backlog
        totals = doc["totals"]
        requests = CounterMetricFamily("prefork_requests", "Requests served, by status class.",
                                       labels=["status_class"])
        for status_class in STATUS_CLASSES:
            requests.add_metric([status_class], totals["responses"][status_class])
        yield requests
        yield CounterMetricFamily("prefork_response_bytes", "Response bytes sent (heads and bodies' payload).",
                                  value=totals["bytes_out"])
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, BUCKETS), "+Inf"], totals["duration_buckets"].values()):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily("prefork_request_duration_seconds", "Time from request head to response end.",
                                    buckets=buckets, sum_value=totals["duration_sum"])
        restarts = CounterMetricFamily("prefork_worker_restarts", "Workers replaced, by reason.", labels=["reason"])
        for reason in RESTART_REASONS:
            restarts.add_metric([reason], doc["restarts"][reason])
        yield restarts
        reloads = CounterMetricFamily("prefork_reloads", "Reloads (new generations), by result.", labels=["result"])
        for result, count in doc["reloads"].items():
            reloads.add_metric([result], count)
        yield reloads
        yield GaugeMetricFamily("prefork_generation", "The serving generation's number.",
                                value=doc["generation"] or 0)
        # Labelled by worker number, not pid: a replacement takes its number, so series do not churn.
        memory = GaugeMetricFamily("prefork_worker_memory_bytes", "Each worker's memory as last read (RSS, USS).",
                                   labels=["generation", "worker", "kind"])
        for worker in doc["worker_list"]:
            for kind in ("rss", "uss"):
                if worker[kind]:
                    memory.add_metric([str(worker["generation"]), str(worker["number"]), kind], worker[kind])
        yield memory
