"""One look at the whole server, taken by the master: what /status, /metrics and preforkstatus show.

`take(master)` is the only place that reads the master and its scoreboard
for them; it returns a `Snapshot`, a tree of frozen dataclasses (the master,
its generations, their workers, the listen queues, the lifetime counters).
metrics.py renders a snapshot as the JSON status document and as the
Prometheus exposition, and preforkstatus renders that document, so all
three say the same thing and each can be tested on a snapshot built by hand.

Every counter in a snapshot is a sum over the server's life: the workers
alive now, plus those dead (folded into their generation's block record by
its arbiter), plus the generations ended (folded into `Lifetime` by the
master), so none goes down across worker deaths, recycles and reloads.
"""

import os
import time
from dataclasses import dataclass
from typing import Optional

from .procfs import read_process
from .scoreboard import CONNECTION_STATES, RESTART_REASONS, Counters
from .sockets import listen_queue

BUSY_STATES = ("busy", "debugging")  # a worker in either holds a request


@dataclass(frozen=True)
class MasterInfo:
    pid: int
    name: str
    uptime: float  # seconds since the master started
    # process_* in /metrics (procfs.py); None where /proc cannot say
    cpu_seconds: Optional[float] = None
    rss: Optional[int] = None
    open_fds: Optional[int] = None
    start_time: Optional[float] = None  # seconds since the epoch


@dataclass(frozen=True)
class GenerationInfo:
    number: int
    state: str  # booting, serving, stopping
    pid: int  # its arbiter's
    workers: int  # live slots in its scoreboard block


@dataclass(frozen=True)
class WorkerInfo:
    slot: int
    number: int  # kept by a replacement, unlike the pid
    pid: int
    state: str  # booting, idle, busy, debugging
    age: float  # seconds since it was forked
    request: Optional[str]  # "METHOD target" in hand, or None
    request_age: Optional[float]
    requests: int
    rss: Optional[int]  # bytes; None when not read (yet)
    uss: Optional[int]
    generation: int
    connections: Optional[dict] = None  # held by state: reading, waiting, writing, idle, lingering
    busy_threads: Optional[int] = None  # app threads holding a request (None: said by its state)
    threads: Optional[list] = None  # with PREFORK_THREADS > 1: each thread's request and its age
    cpu_seconds: Optional[float] = None  # as the arbiter last read them; None: not yet, or no /proc
    open_fds: Optional[int] = None
    start_time: Optional[float] = None  # seconds since the epoch
    mold_generation: int = 0  # the refork whose mold forked it (refork.py); 0: its arbiter did


@dataclass(frozen=True)
class ListenerInfo:
    address: str
    queued: Optional[int] = None  # None where the kernel cannot say: never a made-up 0
    backlog: Optional[int] = None


@dataclass(frozen=True)
class Snapshot:
    master: MasterInfo
    healthy: bool  # a generation serves and the server is not stopping
    generation: Optional[int]  # the serving generation's number
    generations: tuple  # of GenerationInfo, oldest first
    workers: tuple  # of WorkerInfo, every generation's
    listeners: tuple  # of ListenerInfo
    worker_target: int
    worker_bounds: Optional[tuple]  # (floor, ceiling) while the arbiter scales, else None
    scaling: dict  # {"up": n, "down": n}
    reloads: dict  # {"ok": n, "failed": n}
    restarts: dict  # by reason, every reason present
    totals: Counters
    threads_per_worker: int = 1  # PREFORK_THREADS
    reforks: int = 0  # promotions to the mold, every generation's (PREFORK_REFORK_AFTER)

    @property
    def connections(self):
        """Connections every worker holds, by state."""
        total = dict.fromkeys(CONNECTION_STATES, 0)
        for worker in self.workers:
            for state, count in (worker.connections or {}).items():
                total[state] += count
        return total

    @property
    def busy(self):
        """App slots holding a request: busy threads, one a worker without threads."""
        return sum(w.busy_threads if w.busy_threads is not None else w.state in BUSY_STATES for w in self.workers)

    @property
    def busy_workers(self):
        return sum(1 for w in self.workers if w.state in BUSY_STATES)


class Lifetime:
    """What must outlive a generation: the counters of generations that ended, and reloads."""

    def __init__(self, scoreboard):
        self.scoreboard = scoreboard
        self.ended = Counters()
        self.ended_restarts = dict.fromkeys(RESTART_REASONS, 0)
        self.ended_scaling = {"up": 0, "down": 0}
        self.ended_reforks = 0
        self.reloads = {"ok": 0, "failed": 0}
        self.started = time.time()

    def generation_ended(self, block):
        """Fold an ended generation's block into the lifetime totals; free the block."""
        self.ended_reforks += self.scoreboard.reforks(block)
        counters, restarts, scaling = self.scoreboard.release_block(block)
        self.ended.add(counters)
        for reason, count in restarts.items():
            self.ended_restarts[reason] += count
        for direction, count in scaling.items():
            self.ended_scaling[direction] += count


def take(master):
    """The server as it is now, from the master's generations, listeners, scoreboard and lifetime."""
    board, lifetime = master.scoreboard, master.lifetime
    totals = Counters().add(lifetime.ended)
    restarts = dict(lifetime.ended_restarts)
    scaling = dict(lifetime.ended_scaling)
    serving = master.serving()
    capacity = None
    reforks = lifetime.ended_reforks
    generations, workers = [], []
    for generation in master.generations:
        rows = []
        if generation.block is not None:
            totals.add(board.block_counters(generation.block))
            for reason, count in board.restarts(generation.block).items():
                restarts[reason] += count
            reforks += board.reforks(generation.block)
            generation_capacity = board.capacity(generation.block)
            for direction in ("up", "down"):
                scaling[direction] += generation_capacity[direction]
            if generation is serving:
                capacity = generation_capacity
            rows = board.workers(generation.block)
            for row in rows:
                row.pop("counters")
                workers.append(WorkerInfo(generation=generation.number, **row))
        generations.append(GenerationInfo(generation.number, generation.state, generation.pid, len(rows)))
    listeners = []
    for listener in master.listeners:
        queue = listen_queue(listener.sock)
        listeners.append(ListenerInfo(listener.url(), *(queue or ())))
    scaled = capacity is not None and capacity["target"]  # 0: the arbiter has not said yet
    return Snapshot(
        master=_master_info(master, lifetime),
        healthy=master.healthy(),
        generation=serving.number if serving else None,
        generations=tuple(generations),
        workers=tuple(workers),
        listeners=tuple(listeners),
        worker_target=capacity["target"] if scaled else master.worker_count,
        worker_bounds=(capacity["floor"], capacity["ceiling"]) if scaled else None,
        scaling=scaling,
        reloads=dict(lifetime.reloads),
        restarts=restarts,
        totals=totals,
        threads_per_worker=board.threads if board is not None else 1,
        reforks=reforks,
    )


def _master_info(master, lifetime):
    stat = read_process(os.getpid())
    process = {} if stat is None else {"cpu_seconds": stat.cpu_seconds, "rss": stat.rss, "open_fds": stat.open_fds,
                                        "start_time": stat.start_time}
    return MasterInfo(os.getpid(), master.name, round(time.time() - lifetime.started, 3), **process)
