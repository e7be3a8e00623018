"""The arbiter: binds nothing itself (the command hands it listeners), forks the
sync workers, and keeps them alive, counted and honest.

It runs no thread, ever: a fork taken while another thread holds a lock
(logging's, the allocator's) gives the child a lock nobody will release.
Signal handlers only append the signal to a list; the wakeup fd makes the
loop's select() return at once, and the loop acts on the list.
"""

import gc
import logging
import os
import random
import signal
import time

from . import heartbeat, proctitle
from .heartbeat import Heartbeat
from .signals import close_wakeup_pipe, die_with_parent, signal_wakeup_pipe, wait
from .worker import BOOT_ERROR, SyncWorker

log = logging.getLogger("django_prefork")

KILL_AFTER_ABORT = 2.0  # seconds a timed-out worker gets to report before SIGKILL
QUICK_STOP_WAIT = 1.0  # seconds workers get to exit on INT/QUIT before SIGKILL
HANDLED_SIGNALS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
    signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGCHLD,
)


class HaltServer(Exception):
    """Stop the whole server and exit with `status` (the app cannot boot)."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


class WorkerProcess:
    """What the arbiter knows of one forked worker."""

    def __init__(self, pid, number, beat):
        self.pid = pid
        self.number = number
        self.heartbeat = beat
        self.retiring = False  # sent TERM; no longer counted
        self.aborted_at = None  # monotonic time of the timeout SIGABRT
        self.killed = False  # we sent SIGKILL ourselves
        self.ready = False


class Arbiter:
    def __init__(self, listeners, config, load_app, name="django", generation=1, ready_fd=None, master_pid=None):
        self.listeners = listeners
        self.generation = generation
        self.ready_fd = ready_fd  # written once every worker has loaded the app
        self.master_pid = master_pid
        self.config = config
        self.load_app = load_app
        self.name = name
        self.num_workers = config.workers
        self.workers = {}  # pid -> WorkerProcess
        self.signals = []
        self.booted = False  # some worker has loaded the app
        self.respawn_at = 0.0  # after a boot failure once serving, spawn slowly
        self.last_tick = time.monotonic()

    # -- the main loop -----------------------------------------------------

    def run(self):
        """Serve until a stop signal; return the exit status."""
        self.init_signals()
        if self.master_pid:
            die_with_parent(signal.SIGQUIT)
        proctitle.set_title(f"runprefork arbiter [{self.name}] generation {self.generation}")
        try:
            if self.config.preload_app:
                app = self.load_app()
                self.load_app = lambda: app
            self.maintain_worker_count()
            while True:
                # Look more often while workers boot: the master waits on their readiness.
                self.sleep(0.1 if any(not w.ready for w in self.workers.values()) else 1.0)
                stop = self.process_signals()
                if stop is not None:
                    self.stop(graceful=stop)
                    return 0
                if self.master_pid and os.getppid() != self.master_pid:
                    log.warning("generation %d: the master is gone; stopping", self.generation)
                    self.stop(graceful=False)
                    return 0
                self.reap_workers()
                self.notice_booted_workers()
                self.murder_lazy_workers()
                self.maintain_worker_count()
        except BaseException:
            self.stop(graceful=False)
            raise
        finally:
            close_wakeup_pipe(self.wakeup)

    def init_signals(self):
        self.wakeup = signal_wakeup_pipe()
        self.wakeup_r = self.wakeup[0]
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, self.record_signal)

    def record_signal(self, signum, frame):
        self.signals.append(signum)

    def sleep(self, seconds=1.0):
        """Wait for a signal, at most `seconds`."""
        wait(self.wakeup_r, seconds)

    def process_signals(self):
        """Act on recorded signals; return True/False to stop gracefully/quickly."""
        while self.signals:
            sig = self.signals.pop(0)
            if sig == signal.SIGTERM:
                log.info("generation %d: finishing requests in hand, then stopping", self.generation)
                return True
            if sig in (signal.SIGINT, signal.SIGQUIT):
                return False
            if sig == signal.SIGTTIN:
                self.num_workers += 1
                log.info("TTIN: %d workers", self.num_workers)
            elif sig == signal.SIGTTOU:
                self.num_workers = max(1, self.num_workers - 1)
                log.info("TTOU: %d workers", self.num_workers)
            elif sig == signal.SIGUSR1:
                from .logfiles import reopen_log_files

                reopen_log_files()
                self.kill_workers(signal.SIGUSR1)
            elif sig == signal.SIGHUP and self.master_pid:
                os.kill(self.master_pid, signal.SIGHUP)  # reloading is the master's job
        return None

    # -- keeping the workers ---------------------------------------------------

    def maintain_worker_count(self):
        serving = [w for w in self.workers.values() if not w.retiring]
        missing = self.num_workers - len(serving)
        if missing > 0:
            self.spawn_workers(missing)
        elif missing < 0:
            # Retire the newest first: the oldest have warm caches.
            for w in sorted(serving, key=lambda w: w.number, reverse=True)[:-missing]:
                w.retiring = True
                self.signal_worker(w, signal.SIGTERM)

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
        from django.db import connections

        for conn in connections.all(initialized_only=True):
            conn.close()
        if self.config.gc_freeze:
            # Keep the inherited heap out of the children's collections, so
            # their gc does not write to (and so copy) every shared page.
            gc.collect()
            gc.freeze()

    def spawn_worker(self, number):
        beat = Heartbeat(self.config.worker_tmp_dir)
        max_requests = self.config.max_requests
        if max_requests:
            max_requests += random.randint(0, self.config.max_requests_jitter)
        ppid = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                self.become_worker(number, ppid, beat, max_requests)
            finally:
                os._exit(1)
        self.workers[pid] = WorkerProcess(pid, number, beat)
        log.debug("booting worker %d (pid %d)", number, pid)

    def become_worker(self, number, ppid, beat, max_requests):
        close_wakeup_pipe(self.wakeup)
        if self.ready_fd is not None:
            os.close(self.ready_fd)
        for other in self.workers.values():
            other.heartbeat.close()
        proctitle.set_title(f"runprefork worker {number} [{self.name}]")
        worker = SyncWorker(number, ppid, self.listeners, beat, self.config, self.load_app, max_requests)
        worker.run()  # never returns

    def notice_booted_workers(self):
        for w in self.workers.values():
            if not w.ready and w.heartbeat.read_status()[0] == heartbeat.READY:
                w.ready = True
                self.booted = True
        serving = [w for w in self.workers.values() if not w.retiring]
        if self.ready_fd is not None and len(serving) >= self.num_workers and all(w.ready for w in serving):
            # The master waits for this before retiring the previous generation.
            os.write(self.ready_fd, b"R")
            os.close(self.ready_fd)
            self.ready_fd = None

    def reap_workers(self, stopping=False):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.workers.clear()  # no children left: none of them runs
                return
            if not pid:
                return
            w = self.workers.pop(pid, None)
            if w is None:
                continue
            try:
                if stopping:
                    code = os.waitstatus_to_exitcode(status)
                    if code not in (0, -signal.SIGTERM, -signal.SIGQUIT, -signal.SIGINT):
                        log.warning("worker %d (pid %d) ended with %s while stopping", w.number, pid, code)
                else:
                    self.report_death(w, status)
            finally:
                w.heartbeat.close()

    def report_death(self, w, status):
        who = f"worker {w.number} (pid {w.pid})"
        code = os.waitstatus_to_exitcode(status)
        current = w.heartbeat.current_request()
        if code and current and not w.killed:
            who += f" (serving {current[0]})"  # the one request its death cost
        state, error = w.heartbeat.read_status()
        if code == BOOT_ERROR and state == heartbeat.BOOT_FAILED:
            if not self.booted:
                raise HaltServer(f"{who} could not load the application:\n{error}")
            log.error("%s could not load the application; retrying in a second:\n%s", who, error)
            self.respawn_at = time.monotonic() + 1.0
        elif code < 0:
            name = signal.Signals(-code).name
            if w.killed:
                log.error("%s was killed with SIGKILL: it did not answer SIGABRT (stuck in C code?); it %s",
                          who, w.heartbeat.describe(time.monotonic(), 0))
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
        if now - self.last_tick > 5.0:
            # The arbiter itself was stopped or starved: it saw nothing, so it
            # judges nobody on that gap.
            for w in self.workers.values():
                w.heartbeat.forgive(now)
        self.last_tick = now
        timeout = self.config.timeout
        if not timeout:
            return
        for w in list(self.workers.values()):
            if w.aborted_at is not None:
                if not w.killed and now - w.aborted_at >= KILL_AFTER_ABORT:
                    w.killed = True
                    self.signal_worker(w, signal.SIGKILL)
                continue
            silent = w.heartbeat.silent_for(now)
            if silent > timeout:
                log.error("worker %d %s; sending SIGABRT", w.pid, w.heartbeat.describe(now, silent))
                w.aborted_at = now
                self.signal_worker(w, signal.SIGABRT)

    def signal_worker(self, w, sig):
        try:
            os.kill(w.pid, sig)
        except ProcessLookupError:
            pass  # already dead; reap_workers will hear of it

    def kill_workers(self, sig):
        for w in list(self.workers.values()):
            self.signal_worker(w, sig)

    # -- stopping ----------------------------------------------------------------

    def stop(self, graceful):
        """TERM: workers finish what they hold; INT/QUIT: they exit at once.

        Whatever is left after the grace period gets SIGKILL, and every child
        is reaped before we return: no process outlives the server.
        """
        for w in self.workers.values():
            w.retiring = True
        self.kill_workers(signal.SIGTERM if graceful else signal.SIGQUIT)
        deadline = time.monotonic() + (self.config.graceful_timeout if graceful else QUICK_STOP_WAIT)
        while self.workers and time.monotonic() < deadline:
            self.reap_workers(stopping=True)
            if self.workers:
                self.sleep(0.1)
            if graceful and {signal.SIGINT, signal.SIGQUIT} & set(self.signals):
                graceful = False  # a second Ctrl-C: stop waiting
                self.kill_workers(signal.SIGQUIT)
                deadline = min(deadline, time.monotonic() + QUICK_STOP_WAIT)
        if self.workers:
            log.warning("killing %d worker(s) still running after the grace period", len(self.workers))
            self.kill_workers(signal.SIGKILL)
        while self.workers:
            pid, _ = os.waitpid(-1, 0)
            w = self.workers.pop(pid, None)
            if w is not None:
                w.heartbeat.close()
        for listener in self.listeners:
            listener.close(unlink=False)  # the master owns the socket file
