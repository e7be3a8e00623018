"""The arbiter: one generation's parent. It binds nothing (the master hands it
the listeners), forks the sync workers, and keeps them alive, counted and
honest.

The loop, the signal handling and the stop are the Supervisor's (see
supervisor.py); what is the arbiter's own is what each turn does with the
workers: `reap_children` (a death is logged with what it cost, and a boot
failure before any worker ever loaded the app halts the server),
`notice_booted_workers` (and tell the master once all have),
`murder_lazy_workers` (SIGABRT past PREFORK_TIMEOUT, SIGKILL 2 s later; it
goes on while the generation stops; it passes over a worker whose heartbeat
says pdb holds it, see debugger.py), `maintain_worker_count`. After each
worker's death it puts the terminal's settings back (terminal.py).

A generation is started by `run_generation`, given a `GenerationSpec`: the
master forks generation 1 and calls it directly; a reload execs the command
with the spec in its environment, and the command calls it after importing
the project afresh.
"""

import dataclasses
import gc
import json
import logging
import mmap
import os
import random
import signal
import socket
import time

from . import debugger, heartbeat, lifecycle, proctitle, refork
from .heartbeat import Heartbeat
from .lifecycle import BOOT_RETRY_WAIT, KILL_AFTER_ABORT, STARVED_AFTER
from .capacity import LOOK_EVERY, Scaler, mem_available
from .memory import read_memory
from .procfs import read_process
from .scoreboard import Scoreboard
from .signals import close_wakeup_pipe, die_with_parent, flush_std_streams
from .sockets import Listener, waiting_connections
from .supervisor import HaltServer, Supervisor, kill_quietly
from .terminal import Terminal
from .reactor import handoff_lot
from .worker import BOOT_ERROR, SyncWorker

log = logging.getLogger("django_prefork")



@dataclasses.dataclass
class GenerationSpec:
    """What the master tells a generation's arbiter, across exec through the environment."""

    ENV = "DJANGO_PREFORK_GENERATION"  # its presence tells the exec'd command it is a generation

    number: int
    ready_fd: int  # the pipe's write end: "R" once every worker has loaded the app
    listen_fds: list
    worker_count: int
    scoreboard_fd: int = -1  # the master's scoreboard (scoreboard.py); -1: none
    block: int = -1  # this generation's block in it; -1: none free
    start_count: int = 0  # workers to start with: the count the serving generation had scaled to
    terminal: list = None  # the terminal's settings as the master found them (terminal.py)
    # The master's command-line values and PREFORK_* environment variables: a
    # reloaded generation re-reads settings.py only (conf.resolve's order).
    overrides: dict = dataclasses.field(default_factory=dict)
    environment: dict = dataclasses.field(default_factory=dict)

    def to_environ(self, environ):
        return dict(environ, **{self.ENV: json.dumps(dataclasses.asdict(self))})

    @classmethod
    def pop_from_environ(cls, environ=os.environ):
        """The spec the master left, removed so the workers do not see it; None outside a reload."""
        value = environ.pop(cls.ENV, None)
        return cls(**json.loads(value)) if value else None

    def inherit_listeners(self):
        return [Listener(socket.socket(fileno=fd), inherited=True) for fd in self.listen_fds]


def run_generation(spec, listeners, config, load_app, name):
    """Be generation `spec.number`'s arbiter until it stops; return the exit status."""
    arbiter = Arbiter(listeners, config, load_app, name, spec.number, spec.ready_fd)
    arbiter.terminal = Terminal.from_json(spec.terminal)
    if spec.scoreboard_fd >= 0 and spec.block >= 0:
        arbiter.scoreboard, arbiter.block = Scoreboard.open(spec.scoreboard_fd), spec.block
    arbiter.scaler.move_floor(spec.worker_count)
    arbiter.worker_count = min(max(spec.worker_count, spec.start_count), arbiter.scaler.ceiling)
    return arbiter.run()


def mark_process_dead(pid):
    """The app's prometheus_client multiprocess mode: drop a dead worker's live gauges.

    What gunicorn users write by hand in a child_exit hook.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        try:
            from prometheus_client import multiprocess
        except ImportError:
            return
        multiprocess.mark_process_dead(pid)


def mib(memory):
    """A USS (or a (RSS, USS) pair) for the log; "?" where it could not be read."""
    if isinstance(memory, tuple):
        memory = memory[1]
    return "?" if memory is None else f"{memory / 1048576:.1f} MiB"


def mean(values):
    return sum(values) / len(values) if values else None


def restart_reason(w, code, stopping):
    """Why a worker is being replaced, for prefork_worker_restarts_total; None: it was retired."""
    return lifecycle.restart_reason(w.aborted_at is not None, w.recycling, stopping or w.retiring, code)


class WorkerProcess:
    """What the arbiter knows of one forked worker."""

    def __init__(self, pid, number, beat, slot):
        self.pid = pid
        self.number = number
        self.heartbeat = beat
        self.slot = slot  # its scoreboard slot, or None
        self.memory = None  # (RSS, USS) as last read
        self.recycling = None  # why it was asked to finish its request and exit ("memory")
        self.retiring = False  # sent TERM; no longer counted
        self.aborted_at = None  # monotonic time of the timeout SIGABRT
        self.killed = False  # we sent SIGKILL ourselves
        self.ready = False
        self.control = None  # our end of its refork channel (refork.py), or None
        self.mold_generation = 0  # the refork whose mold forked it; 0: we did
        self.refork_at = 0  # the request count at which it said it would be due (0: never)
        self.due = False  # it served its refork count: it may be promoted
        self.promoting = False  # sent PROMOTE; not yet the mold

    def __str__(self):
        return f"worker {self.number} (pid {self.pid})"


class Arbiter(Supervisor):
    owns_socket_files = False  # the master's, or systemd's

    def __init__(self, listeners, config, load_app, name, generation, ready_fd):
        super().__init__(listeners, config)
        self.generation = generation
        self.ready_fd = ready_fd  # written once every worker has loaded the app
        self.master_pid = os.getppid()
        self.load_app = load_app
        self.name = name
        self.title = f"runprefork arbiter [{name}] generation {generation}"
        self.worker_count = config.workers
        self.workers = {}  # pid -> WorkerProcess
        self.booted = False  # some worker has loaded the app
        self.respawn_at = 0.0  # after a boot failure once serving, spawn slowly
        self.last_tick = time.monotonic()
        self.scoreboard = None  # the master's, shared; this generation writes only its block
        self.block = None
        self.memory_read_at = 0.0
        self.scaler = Scaler(config.workers, config.max_workers, config.threads)
        self.looked_at = 0.0
        self.short_of_memory_said = 0.0
        self.lot = None  # the workers' hand-off sockets (reactor.handoff_lot); None without keep-alive
        # Refork (refork.py): on with PREFORK_REFORK_AFTER, for sync workers only.
        self.refork = bool(config.refork_after) and config.threads == 1
        self.mold = None  # the WorkerProcess that is the mold now
        self.old_molds = {}  # pid -> WorkerProcess: molds replaced by a newer one, until reaped
        self.reforks = 0  # promotions done
        self.promoting = None  # the worker sent PROMOTE
        self.refork_said = 0  # the last refork whose end was logged

    def __str__(self):
        return f"generation {self.generation}"

    # -- the Supervisor's loop -----------------------------------------------------

    def start(self):
        die_with_parent(signal.SIGQUIT)
        debugger.install()  # once, before forking: the workers share the wrapped pdb
        if self.config.keepalive:
            self.lot = handoff_lot()  # before forking: every worker of the generation shares it
        if self.config.refork_after and self.config.threads > 1:
            log.warning("PREFORK_REFORK_AFTER is ignored with PREFORK_THREADS > 1: a worker running threads "
                        "is never used as a mold")
        if self.refork and not refork.become_subreaper():
            log.warning("PREFORK_REFORK_AFTER is ignored: this system has no child subreaper (Linux ≥ 3.4)")
            self.refork = False
        if self.config.preload_app:
            app = self.load_app()
            self.load_app = lambda: app
        self.publish_capacity()
        self.maintain_worker_count()

    def nap(self):
        # Look more often while workers boot: the master waits on their readiness.
        if any(not w.ready for w in self.workers.values()) or self.refork_busy():
            return 0.1
        return LOOK_EVERY if self.scaler.enabled else 1.0

    def tend(self):
        if os.getppid() != self.master_pid:
            log.warning("generation %d: the master is gone; stopping", self.generation)
            return 0
        self.reap_children()
        self.notice_booted_workers()
        self.murder_lazy_workers()
        self.scale_workers()
        if self.refork:
            self.tend_refork()
        self.maintain_worker_count()
        self.measure_workers()
        return None

    def handle_hup(self):
        kill_quietly(self.master_pid, signal.SIGHUP)  # reloading is the master's job

    def set_worker_count(self, count, sig):
        # TTIN and TTOU move the floor, and the count with it.
        self.scaler.move_floor(max(1, self.scaler.floor + count - self.worker_count))
        self.worker_count = max(self.scaler.floor, min(count, self.scaler.ceiling))
        self.publish_capacity()
        log.info("%s: %d workers", sig.name[3:], self.worker_count)

    def pass_on(self, sig):
        self.signal_children(sig)

    def child_pids(self):
        molds = [self.mold.pid] if self.mold is not None else []
        return list(self.workers) + molds + list(self.old_molds)

    # -- keeping the workers ---------------------------------------------------

    def maintain_worker_count(self):
        serving = [w for w in self.workers.values() if not w.retiring]
        missing = self.worker_count - len(serving)
        if missing > 0:
            self.spawn_workers(missing)
        elif missing < 0:
            # Retire idle ones first, then the newest: the oldest have warm caches.
            def keep_first(w):
                return (w.heartbeat.current_request() is None, w.number)

            for w in sorted(serving, key=keep_first, reverse=True)[:-missing]:
                w.retiring = True
                kill_quietly(w.pid, signal.SIGTERM)

    def scale_workers(self):
        """PREFORK_MAX_WORKERS: one look at the workers and the queue, and at most one change (capacity.py)."""
        now = time.monotonic()
        if not self.scaler.enabled or now - self.looked_at < LOOK_EVERY:
            return
        self.looked_at = now
        serving = [w for w in self.workers.values() if not w.retiring and w.ready]
        if len(serving) < self.worker_count:
            return  # still booting the last change: judge the full count
        busy = sum(len(w.heartbeat.busy_records()) for w in serving)  # busy app threads, of count × threads
        queued = waiting_connections(self.listeners)
        if self.scoreboard is not None:
            # Complete requests a busy worker's event loop holds wait too; a head still coming is no demand.
            queued = (queued or 0) + self.scoreboard.waiting_requests(self.block)
        self.scaler.look(now, busy, len(serving) * self.config.threads, queued)
        delta, why = self.scaler.decide(now, self.worker_count, self.room_for_one_more())
        if delta == 0:
            if why == "memory" and now - self.short_of_memory_said > 60:
                self.short_of_memory_said = now
                log.warning("%s: every worker busy, but MemAvailable would not hold one more; staying at %d",
                            self, self.worker_count)
            return
        self.worker_count += delta
        self.scaler.changed(now, delta)
        self.publish_capacity(delta)
        log.info("%s: scaling %s to %d worker%s: %s", self, "up" if delta > 0 else "down", self.worker_count,
                 "" if self.worker_count == 1 else "s", why)

    def room_for_one_more(self):
        """Would the machine's available memory hold another worker (the largest we have)?"""
        available = mem_available()
        sizes = [w.memory[1] or w.memory[0] for w in self.workers.values() if w.memory]
        return available is None or not sizes or available > max(sizes)

    def publish_capacity(self, scaled=0):
        if self.scoreboard is not None:
            self.scoreboard.set_capacity(self.block, self.worker_count, self.scaler.floor, self.scaler.ceiling, scaled)

    def spawn_workers(self, count):
        if time.monotonic() < self.respawn_at:
            return
        self.prepare_to_fork()
        taken = {w.number for w in self.workers.values()}
        numbers = (n for n in range(1, len(taken) + count + 1) if n not in taken)
        for _ in range(count):
            self.spawn_worker(next(numbers))

    def prepare_to_fork(self):
        # A connection opened by the arbiter (checks, migrations, preload) must
        # not be shared by the children: they would interleave on one socket.
        # Nor may a buffered line: each child would print it again.
        flush_std_streams()
        from django.db import connections

        for conn in connections.all(initialized_only=True):
            conn.close()
        if self.config.gc_freeze:
            # Keep the inherited heap out of the children's collections, so
            # their gc does not write to (and so copy) every shared page.
            gc.collect()
            gc.freeze()

    def spawn_worker(self, number):
        slot = self.take_slot(number)
        record = self.scoreboard.heartbeat_record(self.block, slot) if slot is not None else None
        beat = Heartbeat(self.config.worker_tmp_dir, record, self.thread_pages(slot))
        max_requests = self.config.max_requests
        if max_requests:
            max_requests += random.randint(0, self.config.max_requests_jitter)
        ppid = os.getpid()
        control = theirs = None
        refork_at, mold_generation = 0, 0
        if self.refork:
            control, theirs = refork.channel()
        pid = None
        if self.mold is not None:
            mold_generation = self.mold.mold_generation
            refork_at = refork.threshold(self.config.refork_after, self.reforks, True)
            pid = refork.ask_fork(self.mold.control, {
                "number": number, "slot": slot, "max_requests": max_requests, "refork_at": refork_at,
                "mold_generation": mold_generation}, [beat.fd, theirs.fileno()])
            if pid is None:
                log.error("the mold (pid %d) could not fork worker %d; forking from the arbiter until the next "
                          "promotion", self.mold.pid, number)
                self.drop_mold()
                mold_generation = 0
        if pid is None:
            if self.refork:  # no mold forks it (none yet, retired, dead, or just dropped): it may make the next
                refork_at = refork.threshold(self.config.refork_after, self.reforks, False)
            pid = os.fork()
            if pid == 0:
                try:
                    if control is not None:
                        control.close()  # the arbiter's end: open here, the channel would never read EOF
                    self.become_worker(number, ppid, beat, max_requests, slot, control=theirs, refork_at=refork_at)
                finally:
                    os._exit(1)
        if theirs is not None:
            theirs.close()
        if slot is not None:
            self.scoreboard.set_pid(self.block, slot, pid)
        w = self.workers[pid] = WorkerProcess(pid, number, beat, slot)
        w.control, w.mold_generation, w.refork_at = control, mold_generation, refork_at
        if slot is not None:
            self.scoreboard.set_mold_generation(self.block, slot, mold_generation)
        log.debug("booting worker %d (pid %d)", number, pid)

    def thread_pages(self, slot):
        """A record for each app thread past the first: in the worker's scoreboard slot, else
        pages of its own (shared across the fork: the worker writes, we read)."""
        extra = self.config.threads - 1
        pages = self.scoreboard.thread_records(self.block, slot)[:extra] if slot is not None else []
        return pages + [mmap.mmap(-1, mmap.PAGESIZE) for _ in range(extra - len(pages))]

    def take_slot(self, number):
        """A free scoreboard slot for a worker about to be forked, marked booting; None if full."""
        if self.scoreboard is None:
            return None
        taken = {w.slot for w in self.workers.values()}
        slot = next((s for s in range(self.scoreboard.slots) if s not in taken), None)
        if slot is None:
            log.warning("%s: the scoreboard is full; worker %d's figures will not be counted", self, number)
            return None
        self.scoreboard.assign(self.block, slot, number)
        return slot

    def become_worker(self, number, ppid, beat, max_requests, slot, control=None, refork_at=0, mold_generation=0,
                      app=None):
        # Also run by a mold's child (refork.py), on this object as the mold's fork left it: what
        # was closed here is forgotten, so that nothing is closed twice.
        close_wakeup_pipe(self.wakeup)
        self.wakeup = ()
        if self.ready_fd is not None:
            os.close(self.ready_fd)
            self.ready_fd = None
        for other in [*self.workers.values(), *self.old_molds.values(), *filter(None, [self.mold])]:
            other.heartbeat.close()
            if other.control is not None:
                other.control.close()
        self.workers, self.old_molds, self.mold = {}, {}, None
        proctitle.set_title(f"runprefork worker {number} [{self.name}]")
        writer = self.scoreboard.writer(self.block, slot, beat.end_request) if slot is not None else None
        load_app = self.load_app if app is None else (lambda: app)
        worker = SyncWorker(number, ppid, self.listeners, beat, self.config, load_app, max_requests, writer,
                            self.lot)
        worker.generation = self.generation
        if control is not None:
            worker.control, worker.refork_at, worker.mold_generation, worker.arbiter = (
                control, refork_at, mold_generation, self)
        worker.run()  # never returns

    def notice_booted_workers(self):
        for w in self.workers.values():
            if not w.ready and w.heartbeat.read_status()[0] == heartbeat.READY:
                w.ready = True
                self.booted = True
        serving = [w for w in self.workers.values() if not w.retiring]
        if self.ready_fd is not None and len(serving) >= self.worker_count and all(w.ready for w in serving):
            # The master waits for this before retiring the previous generation.
            os.write(self.ready_fd, b"R")
            os.close(self.ready_fd)
            self.ready_fd = None

    def child_exited(self, pid, status, stopping):
        if self.mold_exited(pid, status, stopping):
            return None
        w = self.workers.pop(pid, None)
        if w is None:
            return None
        if w.control is not None:
            w.control.close()
        if w is self.promoting:
            self.promoting = None
        code = os.waitstatus_to_exitcode(status)
        try:
            self.restore_terminal()
            if stopping and w.aborted_at is None:
                if code not in (0, -signal.SIGTERM, -signal.SIGQUIT, -signal.SIGINT):
                    log.warning("%s ended with %s while stopping", w, code)
            else:
                self.report_death(w, status)
        finally:
            w.heartbeat.close()
            if w.slot is not None:
                self.scoreboard.retire(self.block, w.slot, restart_reason(w, code, stopping))
            mark_process_dead(pid)
        return None

    def restore_terminal(self):
        # A worker that died at the (Pdb) prompt left echo off. Another one
        # still at its prompt owns the terminal now: leave it alone.
        if self.terminal is not None and not any(w.heartbeat.debugging() for w in self.workers.values()):
            if self.terminal.restore():
                log.debug("restored the terminal's settings after a worker's death")

    def forget_children(self):
        for w in self.workers.values():
            w.heartbeat.close()
        self.workers.clear()
        self.mold = None
        self.old_molds.clear()  # no children left: none of them runs

    def report_death(self, w, status):
        who = str(w)
        code = os.waitstatus_to_exitcode(status)
        current = w.heartbeat.current_request()
        if code and current and not w.killed:
            who += f" (serving {current[0]})"  # the one request its death cost
        state, error = w.heartbeat.read_status()
        if code == BOOT_ERROR and state == heartbeat.BOOT_FAILED:
            if not self.booted:
                raise HaltServer(f"{who} could not load the application:\n{error}")
            log.error("%s could not load the application; retrying in a second:\n%s", who, error)
            self.respawn_at = time.monotonic() + BOOT_RETRY_WAIT
        elif code < 0:
            name = signal.Signals(-code).name
            if w.killed:
                now = time.monotonic()
                log.error("%s was killed with SIGKILL: it did not answer SIGABRT (stuck in C code?); it %s",
                          who, w.heartbeat.describe_timeout(now, w.heartbeat.silent_for(now)))
            elif w.retiring and code == -signal.SIGTERM:
                log.info("%s stopped", who)
            elif -code == signal.SIGKILL:
                log.error("%s was killed by SIGKILL (out of memory?)", who)
            else:
                log.error("%s was killed by %s", who, name)
        elif code:
            log.error("%s exited with code %d", who, code)
        else:
            log.info("%s exited", who)

    def murder_lazy_workers(self):
        now = time.monotonic()
        if now - self.last_tick > STARVED_AFTER:
            # The arbiter itself was stopped or starved: it saw nothing, so it
            # judges nobody on that gap.
            for w in self.workers.values():
                w.heartbeat.forgive(now)
        self.last_tick = now
        timeout = self.config.timeout
        if not timeout:
            return
        for w in list(self.workers.values()):
            if w.heartbeat.debugging():
                # A person at the (Pdb) prompt, not a stuck request: the
                # silence counts from when pdb lets go. A SIGABRT that crossed
                # the worker's way into pdb was ignored; call off the SIGKILL.
                w.heartbeat.forgive(now)
                if not w.killed:
                    w.aborted_at = None
                continue
            if w.aborted_at is not None:
                if not w.killed and now - w.aborted_at >= KILL_AFTER_ABORT:
                    w.killed = True
                    kill_quietly(w.pid, signal.SIGKILL)
                continue
            silent = w.heartbeat.silent_for(now)
            if silent > timeout:
                log.error("worker %d %s; sending SIGABRT", w.pid, w.heartbeat.describe_timeout(now, silent))
                w.aborted_at = now
                kill_quietly(w.pid, signal.SIGABRT)

    def measure_workers(self):
        """Each worker's RSS and USS (against the limit), CPU time and open fds, about once a second, to the scoreboard."""
        now = time.monotonic()
        if now - self.memory_read_at < 1.0:
            return
        self.memory_read_at = now
        limit = self.config.max_worker_memory * 1024 * 1024
        for w in list(self.workers.values()):
            w.memory = read_memory(w.pid)
            if w.memory is None:
                continue
            if w.slot is not None:
                self.scoreboard.set_memory(self.block, w.slot, *w.memory)
                stat = read_process(w.pid)  # for process_* in /metrics
                if stat is not None:
                    self.scoreboard.set_process(self.block, w.slot, stat.cpu_seconds, stat.open_fds, stat.start_time)
            if w.slot is not None and not w.retiring and self.scoreboard.asks_recycle(self.block, w.slot):
                self.recycle(w, "one of its threads timed out", "timeout")
                continue
            if limit and w.memory[1] > limit and not w.retiring and w.ready:
                self.recycle(w, f"it uses {w.memory[1] / 1048576:.0f} MiB of its own (USS), past "
                                f"PREFORK_MAX_WORKER_MEMORY {self.config.max_worker_memory} MiB", "memory")

    def recycle(self, w, why, reason):
        """Replace `w` without failing a request: its successor first, then it finishes and exits."""
        log.info("%s: %s; recycling it after its current request", w, why)
        w.retiring, w.recycling = True, reason
        self.maintain_worker_count()  # forks the replacement now
        kill_quietly(w.pid, signal.SIGUSR2)

    # -- refork (refork.py) ---------------------------------------------------------------

    def refork_busy(self):
        """A promotion or a replacement under way: the arbiter looks more often."""
        return self.promoting is not None or any(w.recycling == "refork" for w in self.workers.values()) or (
            bool(self.outdated()))

    def outdated(self):
        """The serving workers the current mold is to replace. While the list runs: every one an
        older mold (or the arbiter) forked. Past its end (a new mold after the last one died or
        retired) only those the arbiter forked: a warm child of an earlier mold is not replaced."""
        if self.mold is None:
            return []
        past_the_list = self.reforks > len(self.config.refork_after)
        return [w for w in self.workers.values() if not w.retiring and (
            w.mold_generation == 0 if past_the_list else w.mold_generation != self.mold.mold_generation)]

    def mold_needed(self):
        """Will the arbiter fork again with no worker dying? Recycling (PREFORK_MAX_REQUESTS) and
        scaling up (PREFORK_MAX_WORKERS) will: the mold stays to fork their workers warm."""
        return bool(self.config.max_requests) or self.scaler.enabled

    def tend_refork(self):
        for w in list(self.workers.values()):
            for said in refork.messages(w.control):
                if said == b"C":
                    w.due = True
                elif said[:1] in (b"R", b"X"):
                    log.warning("%s refused to be the mold (threads: %s); the arbiter keeps forking",
                                w, said[1:].decode(errors="replace"))
                    w.due = w.promoting = False
                    if said[:1] == b"X":  # it had stopped accepting: it exits, its successor forked first
                        w.retiring, w.recycling = True, "refork"
                    if self.promoting is w:
                        self.promoting = None
                elif said == b"M" and w is self.promoting:
                    self.adopt_mold(w)
        self.promote_one()
        self.replace_one()

    def promote_one(self):
        if self.promoting is not None or self.refork_busy():
            return
        if self.mold is not None and self.reforks >= len(self.config.refork_after):
            return  # the list is done: no promotion while its last mold runs
        current = self.mold.mold_generation if self.mold is not None else None
        for w in self.workers.values():
            if w.due and w.ready and not w.retiring and current in (None, w.mold_generation):
                w.due, w.promoting, self.promoting = False, True, w
                w.promoted_from = read_memory(w.pid)
                log.info("%s served its %s requests: promoting it to the mold", w, w.refork_at)
                kill_quietly(w.pid, refork.PROMOTE)
                return

    def adopt_mold(self, w):
        """The promoted worker stopped serving and is ready to fork: it is the mold, no longer a worker."""
        self.workers.pop(w.pid)
        self.promoting = None
        if w.slot is not None:
            self.scoreboard.retire(self.block, w.slot, None)
            w.slot = None
        # Nobody judges a mold's silence (it is not in self.workers); its exit is seen by the reaper.
        if self.mold is not None:
            self.retire_mold()
        self.reforks += 1
        w.mold_generation = self.reforks
        self.mold = w
        if self.scoreboard is not None:
            self.scoreboard.set_reforks(self.block, self.reforks)
        before, after = w.promoted_from, read_memory(w.pid)
        self.uss_before_refork = [x.memory[1] for x in self.workers.values() if x.memory]
        log.info("refork %d: %s is the mold; its USS %s before, %s after closing what it must not share",
                 self.reforks, w, mib(before), mib(after))

    def replace_one(self):
        """One worker at a time: an older worker is replaced by a child of the mold, successor first."""
        if self.mold is None or self.promoting is not None:
            return
        serving = [w for w in self.workers.values() if not w.retiring]
        if any(not w.ready for w in serving) or any(w.recycling == "refork" for w in self.workers.values()):
            return
        if len(serving) < self.worker_count:
            return  # the promoted worker's successor is not forked yet: the refork is not done
        old = self.outdated()
        if old:
            self.recycle(old[0], f"refork {self.reforks}: replacing it with a child of the mold", "refork")
        elif self.refork_said < self.reforks:
            self.refork_said = self.reforks
            now = [x for x in (read_memory(w.pid) for w in serving) if x]
            before = getattr(self, "uss_before_refork", [])
            children = sum(w.mold_generation == self.mold.mold_generation for w in serving)
            log.info("refork %d done: %d worker%s forked from the mold; the workers' USS %s (sum %s), before %s "
                     "(sum %s)", self.reforks, children, "" if children == 1 else "s", mib(mean([m[1] for m in now])),
                     mib(sum(m[1] for m in now)), mib(mean(before)), mib(sum(before)))
            if self.reforks >= len(self.config.refork_after) and not self.mold_needed():
                # What it keeps private is the original of every page its children copied: freed.
                log.info("refork %d: the mold (pid %d) retires: the list is done and neither PREFORK_MAX_REQUESTS "
                         "nor PREFORK_MAX_WORKERS will fork again; a worker the arbiter forks from now on (after "
                         "a death, a memory recycle, TTIN) becomes the next mold at %d requests", self.reforks,
                         self.mold.pid, self.config.refork_after[-1])
                self.retire_mold()

    def retire_mold(self):
        old = self.mold
        self.mold = None
        self.old_molds[old.pid] = old
        old.control.close()  # the mold exits on EOF
        old.control = None
        kill_quietly(old.pid, signal.SIGTERM)

    def drop_mold(self):
        """A mold that gave no pid for a fork request: hung or broken, it may never act on TERM. Killed."""
        pid = self.mold.pid
        self.retire_mold()
        kill_quietly(pid, signal.SIGKILL)

    def mold_exited(self, pid, status, stopping):
        code = os.waitstatus_to_exitcode(status)
        old = self.old_molds.pop(pid, None)
        if old is not None:
            old.heartbeat.close()
            return True
        if self.mold is None or pid != self.mold.pid:
            return False
        if not stopping:
            log.error("the mold (pid %d) ended with %s; the arbiter forks until the next promotion", pid, code)
        self.mold.control.close()
        self.mold.heartbeat.close()
        self.mold = None
        return True

    # -- stopping: the Supervisor's, with these hooks ---------------------------------

    def mark_stopping(self):
        for w in self.workers.values():
            w.retiring = True

    def watch_while_stopping(self):
        # A worker stuck or stopped while we wait for the others must not hold
        # its client for the whole grace period: the timeout still applies.
        self.murder_lazy_workers()

    def held_by_debugger(self):
        return any(w.heartbeat.debugging() for w in self.workers.values())
