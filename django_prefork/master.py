"""The master: the pid the user started, holding the sockets across generations.

A generation is one arbiter process and its workers, running one version of
the code. The first is forked (the code the master just checked is fresh);
every reload execs a new Python process, so settings, models, URLconf and
views are imported anew, and hands it the listening sockets by fd number:

    master (pid you started: sockets, signals, file watching)
     ├─ generation 1: arbiter ─┬─ worker 1      (serving, until gen 2 is ready)
     │                         └─ worker 2
     └─ generation 2: arbiter ─┬─ worker 1      (booting; then serving)
                               └─ worker 2

A new generation reports on a pipe once every worker has loaded the app;
only then does the old one get TERM, and its workers finish what they hold.
The sockets never close, so no connection is refused at any point. If the
new generation fails (syntax error, failing checks, an app that cannot
load), it exits, the old one goes on serving, and the next change or HUP
tries again. The master runs no thread; it forwards TTIN, TTOU and USR1 to
the serving generation, and TERM, INT and QUIT to all of them.
"""

import gc
import json
import logging
import os
import select
import signal
import sys
import time

from django.utils.autoreload import get_child_arguments

from . import notify, proctitle
from .arbiter import HANDLED_SIGNALS, Arbiter, HaltServer
from .signals import close_wakeup_pipe, signal_wakeup_pipe, wait

log = logging.getLogger("django_prefork")

GENERATION_ENV = "DJANGO_PREFORK_GENERATION"  # tells the exec'd command it is a generation


class Generation:
    def __init__(self, number, pid, ready_fd, workers):
        self.number = number
        self.pid = pid
        self.ready_fd = ready_fd  # the pipe it writes to when all its workers booted
        self.workers = workers
        self.ready = False
        self.started = time.monotonic()

    def __str__(self):
        return f"generation {self.number} (pid {self.pid})"


class Master:
    def __init__(self, listeners, config, load_app, name, watcher=None):
        self.listeners = listeners
        self.config = config
        self.load_app = load_app
        self.name = name
        self.watcher = watcher
        self.workers = config.workers  # TTIN/TTOU carry over to the next generation
        self.signals = []
        self.serving = None  # the generation taking requests
        self.booting = None  # a generation started by a reload, not ready yet
        self.stopping = []  # old generations finishing their requests
        self.generations = 0

    def run(self):
        """Serve until TERM, INT or QUIT; return the exit status."""
        self.wakeup = signal_wakeup_pipe()
        self.wakeup_r = self.wakeup[0]
        proctitle.set_title(f"runprefork master [{self.name}]")
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, lambda signum, frame: self.signals.append(signum))
        try:
            self.serving = self.fork_first_generation()
            while True:
                self.sleep(1.0)
                stop = self.process_signals()
                if stop is not None:
                    return self.stop(graceful=stop)
                status = self.reap_generations()
                if status is not None:
                    return status
                self.check_booting()
                if self.watcher is not None and self.booting is None:
                    changed = self.watcher.changed()
                    if changed:
                        self.reload(f"{changed[0]} changed")
        except BaseException:
            self.stop(graceful=False)
            raise

    def sleep(self, seconds):
        unready = [g.ready_fd for g in (self.serving, self.booting) if g is not None and not g.ready]
        wait(self.wakeup_r, seconds, also=unready)

    def process_signals(self):
        while self.signals:
            sig = self.signals.pop(0)
            if sig == signal.SIGTERM:
                log.info("TERM received: finishing requests in hand, then stopping")
                return True
            if sig in (signal.SIGINT, signal.SIGQUIT):
                return False
            if sig == signal.SIGHUP:
                self.reload("HUP received")
            elif sig in (signal.SIGTTIN, signal.SIGTTOU):
                self.workers = self.workers + 1 if sig == signal.SIGTTIN else max(1, self.workers - 1)
                self.signal_generation(self.serving, sig)
            elif sig == signal.SIGUSR1:
                from .logfiles import reopen_log_files

                reopen_log_files()
                self.signal_generation(self.serving, sig)
        return None

    # -- generations -----------------------------------------------------------

    def fork_first_generation(self):
        if self.config.gc_freeze:
            # Freeze without a full collection first: that would add some 30 ms
            # to start-up, to free the little garbage importing leaves. The
            # generation's collections then leave these pages unwritten.
            gc.freeze()
        ready_r, ready_w = os.pipe()
        self.generations += 1
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                os.close(ready_r)
                close_wakeup_pipe(self.wakeup)
                status = run_generation(self.listeners, self.config, self.load_app, self.name, 1, ready_w)
            except HaltServer as exc:
                sys.stderr.write(f"CommandError: {exc}\n")
            except BaseException:
                log.exception("generation 1 crashed")
            finally:
                os._exit(status)
        os.close(ready_w)
        generation = Generation(1, pid, ready_r, self.workers)
        log.debug("%s booting", generation)
        return generation

    def reload(self, why):
        if self.booting is not None:
            log.info("%s: a reload is already under way", why)
            return
        self.generations += 1
        number = self.generations
        ready_r, ready_w = os.pipe()
        os.set_inheritable(ready_w, True)
        spec = {
            "number": number,
            "ready_fd": ready_w,
            "listen_fds": [listener.fileno() for listener in self.listeners],
            "master_pid": os.getpid(),
            "workers": self.workers,
        }
        env = dict(os.environ, **{GENERATION_ENV: json.dumps(spec)})
        args = get_child_arguments()
        log.info("%s: starting generation %d with fresh code", why, number)
        notify.reloading()
        try:
            pid = os.posix_spawn(args[0], args, env)
        except OSError as exc:
            log.error("could not start generation %d: %s; still serving the previous code", number, exc)
            os.close(ready_r)
            notify.ready("reload failed; still serving the previous code")
            return
        finally:
            os.close(ready_w)
        self.booting = Generation(number, pid, ready_r, self.workers)

    def check_booting(self):
        for generation in (self.serving, self.booting):
            if generation is None or generation.ready:
                continue
            if _read_ready(generation.ready_fd):
                generation.ready = True
                os.close(generation.ready_fd)
                if generation is self.booting:
                    self.promote(generation)
                else:
                    log.info("%s serving, %d workers", generation, generation.workers)
                notify.ready(f"generation {generation.number} serving, {generation.workers} workers")
        booting = self.booting
        boot_limit = max(60.0, 2 * self.config.timeout)
        if booting is not None and time.monotonic() - booting.started > boot_limit:
            log.error("%s did not boot within %.0f s; killing it; still serving the previous code",
                      booting, boot_limit)
            self.signal_generation(booting, signal.SIGKILL)

    def promote(self, generation):
        old, self.serving, self.booting = self.serving, generation, None
        log.info("%s serving, %d workers; stopping generation %d", generation, generation.workers,
                 old.number if old else 0)
        if old is not None:
            self.signal_generation(old, signal.SIGTERM)
            self.stopping.append(old)

    def reap_generations(self):
        """Reap exited generations; return an exit status when the server must end."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if not pid:
                return None
            code = os.waitstatus_to_exitcode(status)
            if self.booting is not None and pid == self.booting.pid:
                failed, self.booting = self.booting, None
                if not failed.ready:
                    os.close(failed.ready_fd)
                log.error("%s failed (exit %s): still serving the previous code; fix the error and "
                          "save (or send HUP) to retry", failed, code)
                notify.ready(f"{failed} failed; still serving generation {self.serving.number if self.serving else '?'}")
            elif self.serving is not None and pid == self.serving.pid:
                dead, self.serving = self.serving, None
                if not dead.ready:
                    dead.ready = _read_ready(dead.ready_fd)  # it may have said so just before dying
                    os.close(dead.ready_fd)
                    if not dead.ready and dead.number == 1:
                        if code != 1:  # 1: HaltServer, and the generation said why
                            log.error("%s ended before serving (exit %s)", dead, code)
                        return 1
                log.error("%s exited unexpectedly (exit %s); starting a new one", dead, code)
                self.reload("no generation serving")
            else:
                for old in self.stopping:
                    if old.pid == pid:
                        self.stopping.remove(old)
                        log.info("%s stopped", old)

    def signal_generation(self, generation, sig):
        if generation is None:
            return
        try:
            os.kill(generation.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, graceful):
        """Stop every generation; each stops its own workers. Return 0."""
        notify.stopping()
        generations = [g for g in (self.serving, self.booting, *self.stopping) if g is not None]
        for generation in generations:
            self.signal_generation(generation, signal.SIGTERM if graceful else signal.SIGQUIT)
        # Each arbiter SIGKILLs its own stragglers after the grace period; this
        # is the backstop for an arbiter that cannot.
        deadline = time.monotonic() + (self.config.graceful_timeout if graceful else 1.0) + 5.0
        pids = {g.pid for g in generations}
        while pids and time.monotonic() < deadline:
            for pid in list(pids):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        pids.discard(pid)
                except ChildProcessError:
                    pids.discard(pid)
            if pids:
                self.sleep(0.05)
                if graceful and {signal.SIGINT, signal.SIGQUIT} & set(self.signals):
                    graceful = False
                    for pid in pids:
                        _kill(pid, signal.SIGQUIT)
                    deadline = min(deadline, time.monotonic() + 6.0)
        for pid in pids:
            _kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for listener in self.listeners:
            listener.close()
        return 0


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _read_ready(fd):
    ready, _, _ = select.select([fd], [], [], 0)
    return bool(ready) and os.read(fd, 1) == b"R"


def run_generation(listeners, config, load_app, name, number, ready_fd):
    """Be one generation's arbiter: fork the workers, report when they all booted."""
    arbiter = Arbiter(listeners, config, load_app, name=name, generation=number,
                      ready_fd=ready_fd, master_pid=os.getppid())
    return arbiter.run()
