"""metrics.py: the status document and the Prometheus exposition, rendered from hand-built snapshots.

No server: each test builds a Snapshot (helpers.hand_snapshot), renders it,
and reads the result back (json for the document, prometheus_client's own
parser for the exposition).
"""

import json

import pytest

from django_prefork import metrics
from django_prefork.scoreboard import BUCKETS, RESTART_REASONS
from django_prefork.snapshot import ListenerInfo

from .helpers import hand_snapshot

parser = pytest.importorskip("prometheus_client.parser")


def families(snapshot):
    text = metrics.exposition(snapshot).decode()
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def value(family, **labels):
    found = [s.value for s in family.samples if s.labels == labels and s.name == family.name + suffix(family)]
    assert len(found) == 1, (labels, family.samples)
    return found[0]


def suffix(family):
    return "_total" if family.type == "counter" else ""


# -- the document -------------------------------------------------------------------------

def test_the_document_is_json_with_every_key_preforkstatus_reads():
    doc = json.loads(json.dumps(metrics.document(hand_snapshot())))
    assert doc["server"] == "django-prefork"
    assert doc["master"] == {"pid": 4242, "name": "testproject", "uptime": 3725.0,
                             "cpu_seconds": None, "rss": None, "open_fds": None, "start_time": None}
    assert (doc["healthy"], doc["generation"], doc["workers"], doc["busy"]) == (True, 2, 2, 1)
    assert (doc["busy_workers"], doc["threads"]) == (1, 2)
    assert doc["generations"] == [{"number": 2, "state": "serving", "pid": 4300, "workers": 2}]
    assert doc["worker_target"] == 2 and doc["worker_bounds"] is None
    assert doc["totals"]["requests"] == 8
    assert doc["totals"]["responses"] == {"1xx": 0, "2xx": 6, "3xx": 1, "4xx": 1, "5xx": 0}
    assert doc["totals"]["duration_buckets"]["+Inf"] == 1 and doc["totals"]["duration_sum"] == 12.75
    assert doc["restarts"] == {**dict.fromkeys(RESTART_REASONS, 0), "timeout": 1}
    busy = doc["worker_list"][1]
    assert busy == {"slot": 1, "number": 2, "pid": 4302, "state": "busy", "age": 12.0, "request": "GET /slow?x=1",
                    "request_age": 2.5, "requests": 3, "rss": None, "uss": None, "generation": 2,
                    "connections": None, "busy_threads": None, "threads": None, "cpu_seconds": None,
                    "open_fds": None, "start_time": None, "mold_generation": 0}
    assert doc["reforks"] == 0


def test_a_listen_queue_the_kernel_cannot_count_is_absent_not_zero():
    doc = metrics.document(hand_snapshot())
    assert doc["listeners"] == [{"address": "http://127.0.0.1:8000/", "queued": 3, "backlog": 2048},
                                {"address": "unix:/run/x.sock"}]


def test_debugging_counts_as_busy():
    snap = hand_snapshot()
    worker = snap.workers[0]
    debugging = type(worker)(**{**worker.__dict__, "state": "debugging"})
    doc = metrics.document(hand_snapshot(workers=(debugging, snap.workers[1])))
    assert doc["busy"] == 2


def test_bounds_appear_only_while_the_arbiter_scales():
    assert metrics.document(hand_snapshot(worker_bounds=(2, 6)))["worker_bounds"] == [2, 6]


def test_a_server_with_no_generation_serving():
    doc = metrics.document(hand_snapshot(healthy=False, generation=None, generations=(), workers=()))
    assert (doc["healthy"], doc["generation"], doc["workers"], doc["busy"], doc["worker_list"]) == \
        (False, None, 0, 0, [])


# -- the exposition -------------------------------------------------------------------------

def test_every_family_parses_with_help_and_a_type():
    found = families(hand_snapshot())
    assert {"prefork_workers", "prefork_workers_busy", "prefork_worker_target", "prefork_requests",
            "prefork_response_bytes", "prefork_request_duration_seconds", "prefork_worker_restarts",
            "prefork_reloads", "prefork_generation", "prefork_worker_memory_bytes",
            "prefork_queued_connections", "prefork_listen_backlog", "prefork_scaling_events"} <= set(found)
    for family in found.values():
        assert family.documentation and family.type in ("gauge", "counter", "histogram"), family


def test_gauges_and_counters_carry_the_snapshot_figures():
    found = families(hand_snapshot())
    assert value(found["prefork_workers"]) == 2
    assert value(found["prefork_workers_busy"]) == 1
    assert value(found["prefork_generation"]) == 2
    assert value(found["prefork_response_bytes"]) == 4096
    assert value(found["prefork_requests"], status_class="2xx") == 6
    assert value(found["prefork_requests"], status_class="1xx") == 0  # every class present from the start
    assert value(found["prefork_worker_restarts"], reason="timeout") == 1
    assert value(found["prefork_reloads"], result="ok") == 1


def test_the_histogram_is_cumulative_and_ends_at_the_request_count():
    # Prometheus' histogram_quantile() reads buckets as cumulative counts, +Inf being the total.
    histogram = families(hand_snapshot())["prefork_request_duration_seconds"]
    buckets = {s.labels["le"]: s.value for s in histogram.samples if s.name.endswith("_bucket")}
    assert list(buckets) == [*map(str, BUCKETS), "+Inf"]
    counts = list(buckets.values())
    assert counts == sorted(counts) and counts[0] == 5 and counts[-1] == 8
    assert [s.value for s in histogram.samples if s.name.endswith("_count")] == [8]
    assert [s.value for s in histogram.samples if s.name.endswith("_sum")] == [12.75]


def test_only_a_counted_listen_queue_is_exported():
    found = families(hand_snapshot())
    assert [s.labels for s in found["prefork_queued_connections"].samples] == [{"listener": "http://127.0.0.1:8000/"}]
    assert value(found["prefork_listen_backlog"], listener="http://127.0.0.1:8000/") == 2048


def test_memory_is_labelled_by_worker_number_and_unread_memory_is_absent():
    # By number, not pid: a replacement takes its number, so series do not churn.
    memory = families(hand_snapshot())["prefork_worker_memory_bytes"]
    assert sorted((s.labels["worker"], s.labels["kind"], s.value) for s in memory.samples) == \
        [("1", "rss", 52428800), ("1", "uss", 20971520)]


@pytest.mark.parametrize("bounds, present", [
    (None, False),  # a fixed worker count: no floor or ceiling to show
    ((2, 6), True),
])
def test_scaling_bounds_are_families_only_while_scaling(bounds, present):
    found = families(hand_snapshot(worker_bounds=bounds))
    assert ("prefork_workers_min" in found) is present and ("prefork_workers_max" in found) is present
    if present:
        assert (value(found["prefork_workers_min"]), value(found["prefork_workers_max"])) == bounds


def test_no_generation_serving_exports_generation_zero():
    found = families(hand_snapshot(generation=None, listeners=(ListenerInfo("unix:/x"),)))
    assert value(found["prefork_generation"]) == 0
    assert found["prefork_queued_connections"].samples == []


def test_the_apps_multiprocess_metrics_are_added(tmp_path, monkeypatch):
    from prometheus_client import values
    from prometheus_client.core import Counter, CollectorRegistry

    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: 4301))
    Counter("app_orders", "Orders taken.", registry=CollectorRegistry()).inc(3)
    found = families(hand_snapshot())
    assert value(found["app_orders"]) == 3
    assert "prefork_workers" in found


# -- process_* and build info ---------------------------------------------------------------

def test_process_families_cover_the_master_and_each_worker_and_leave_out_what_was_not_read():
    from django_prefork.snapshot import MasterInfo, WorkerInfo

    master = MasterInfo(pid=4242, name="testproject", uptime=1.0, cpu_seconds=2.5, rss=30 << 20, open_fds=12,
                        start_time=1.7e9)
    read = WorkerInfo(slot=0, number=1, pid=4301, state="idle", age=1.0, request=None, request_age=None, requests=0,
                      rss=50 << 20, uss=None, generation=2, cpu_seconds=0.75, open_fds=9, start_time=1.7e9 + 5)
    unread = WorkerInfo(slot=1, number=2, pid=4302, state="booting", age=0.1, request=None, request_age=None,
                        requests=0, rss=None, uss=None, generation=2)
    text = metrics.exposition(hand_snapshot(master=master, workers=(read, unread))).decode()
    assert 'process_cpu_seconds_total{pid="4242",process="master",worker=""} 2.5' in text
    assert 'process_open_fds{pid="4242",process="master",worker=""} 12.0' in text
    assert 'process_cpu_seconds_total{pid="4301",process="worker",worker="1"} 0.75' in text
    assert 'process_resident_memory_bytes{pid="4301",process="worker",worker="1"} 5.24288e+07' in text
    assert 'process_start_time_seconds{pid="4301",process="worker",worker="1"} 1.700000005e+09' in text
    assert 'pid="4302"' not in text.split("# HELP process_cpu_seconds")[1], "not read yet: absent, never 0"


def test_build_info_names_the_versions():
    import platform

    import django

    from django_prefork import __version__

    text = metrics.exposition(hand_snapshot()).decode()
    assert (f'prefork_build_info{{django="{django.get_version()}",python="{platform.python_version()}",'
            f'version="{__version__}"}} 1.0') in text
