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
The sockets never close, so no connection is refused at any point. The
rules a generation lives by are Generation's docstring. The loop, signal
handling and stopping are the Supervisor's; the master runs no thread (it
forks generation 1). It reloads on HUP, forwards TTIN, TTOU and USR1 to the
serving generation, and TERM, INT and QUIT to all of them.

The master saves the terminal's settings as it starts, hands them to each
generation in its spec, and puts them back when the server stops: a worker
that died at pdb's prompt must not leave the shell without echo (see
terminal.py for who saves and restores, and why only the master saves).
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

from . import hooks, lifecycle, notify, snapshot
from .arbiter import GenerationSpec, run_generation
from .metrics import document, exposition, prometheus_available
from .scoreboard import Scoreboard
from .signals import close_wakeup_pipe, flush_std_streams
from .status import Offload, StatusChannel
from .supervisor import HALT_STATUS, HaltServer, Supervisor, kill_quietly
from .terminal import Terminal

log = logging.getLogger("django_prefork")

BOOTING, SERVING, STOPPING = "booting", "serving", "stopping"
OUTLAST_ARBITERS = 5.0  # seconds the master waits past its arbiters' own stop deadline


class Generation:
    """The master's view of one generation, and the rules it lives by.

        booting ──"R" on the ready pipe──▶ serving ──a newer one serving──▶ stopping ──exit──▶ gone
           │                                  │
           │ exit before "R"                  └ exit: a reload starts a new generation at once
           ├ nothing ever served, autoreload on: wait; the next change or HUP starts a generation
           ├ generation 1 (autoreload off): the server ends (HALT_STATUS); nothing ever served
           └ a reload: it failed; the serving generation goes on, the next change or HUP retries

    - Every generation starts booting: generation 1 forked by the master, the
      others exec'd by a reload (HUP, a changed file, the serving one's death).
    - It is serving once its arbiter writes "R": all its workers loaded the
      app. Every older generation, booting or serving, then gets TERM and is
      stopping; its workers finish what they hold.
    - Broken code at start with autoreload on is runserver's case: the
      error is printed and the server waits for the fix (the command itself
      waits when the master's own checks fail, then execs itself afresh).
    - One reload boots at a time: meanwhile HUP is refused and file changes
      wait. Generation 1's own boot is no reload: a HUP during it starts
      generation 2. A reload not ready within the boot limit is SIGKILLed,
      and so fails.
    - TERM, INT or QUIT to the master: every generation is stopping.
    """

    def __init__(self, number, pid, ready_fd, worker_count, block):
        self.number = number
        self.pid = pid
        self.ready_fd = ready_fd  # the pipe it writes to when all its workers booted
        self.worker_count = worker_count
        self.block = block  # its scoreboard block, or None
        self.state = BOOTING
        self.started = time.monotonic()

    def __str__(self):
        return f"generation {self.number} (pid {self.pid})"

    @property
    def is_reload(self):
        return self.number > 1

    def said_ready(self):
        """Whether its arbiter wrote "R"; the pipe is closed once it did (or once it died)."""
        if self.ready_fd is None:
            return False
        ready, _, _ = select.select([self.ready_fd], [], [], 0)
        if ready and os.read(self.ready_fd, 1) == b"R":
            self.close_ready_pipe()
            return True
        return False

    def close_ready_pipe(self):
        if self.ready_fd is not None:
            os.close(self.ready_fd)
            self.ready_fd = None


class Master(Supervisor):
    outlast_children = OUTLAST_ARBITERS  # each arbiter SIGKILLs its own stragglers; this is the backstop

    def __init__(self, listeners, config, load_app, name, watcher=None):
        super().__init__(listeners, config)
        self.load_app = load_app
        self.name = name
        self.title = f"runprefork master [{name}]"
        self.watcher = watcher
        self.worker_count = config.workers  # TTIN/TTOU carry over to the next generation
        self.generations = []  # oldest first
        self.last_number = 0
        slots = max(64, 4 * max(config.workers, getattr(config, "max_workers", 0) or 0))
        self.scoreboard = Scoreboard.create(config.worker_tmp_dir, slots, config.threads)
        self.lifetime = snapshot.Lifetime(self.scoreboard)
        self.status = StatusChannel(self.render_status, reap=False)  # the loop reaps every child
        self.project = None  # set by the command: which project this server serves, for preforkstatus
        self.overrides, self.environment = {}, {}  # set by the command: its PREFORK_* flags and variables
        self.served = False  # some generation has served: server_ready was sent

    def __str__(self):
        return "master"

    def in_state(self, state):
        return [g for g in self.generations if g.state == state]

    def serving(self):
        """The generation taking requests, to pass TTIN, TTOU and USR1 on to.

        Generation 1 counts from its fork: it inherited handlers for them. An
        exec'd generation does not until it has set its own, and the default
        actions would stop or end it, so a booting reload never counts.
        """
        taking = (g for g in self.generations if g.state == SERVING or (g.state == BOOTING and not g.is_reload))
        return next(taking, None)

    def booting_reload(self):
        return next((g for g in self.in_state(BOOTING) if g.is_reload), None)

    # -- the Supervisor's loop -----------------------------------------------------

    def run(self):
        try:
            return super().run()
        finally:
            if self.terminal is not None:
                self.terminal.restore()  # every process below us is gone

    def start(self):
        # Before any worker exists, so before any pdb prompt could change it.
        self.terminal = Terminal.save()
        self.open_status_channel()
        self.fork_first_generation()

    def wake_fds(self):
        return [g.ready_fd for g in self.in_state(BOOTING) if g.ready_fd is not None] + self.status.read_fds()

    def write_fds(self):
        return self.status.write_fds()

    def nap(self):
        client = self.status.timeout()
        return 1.0 if client is None else min(1.0, client + 0.01)

    def tend(self):
        self.status.serve()
        status = self.reap_children()
        if status is not None:
            return status
        self.promote_ready_generations()
        self.kill_slow_reload()
        if self.watcher is not None and self.booting_reload() is None:
            changed = self.watcher.changed()
            if changed:
                self.reload(f"{changed[0]} changed")
        return None

    def handle_hup(self):
        self.reload("HUP received")

    def set_worker_count(self, count, sig):
        self.worker_count = count
        self.pass_on(sig)

    def pass_on(self, sig):
        serving = self.serving()
        if serving is not None:
            kill_quietly(serving.pid, sig)

    def child_pids(self):
        return [g.pid for g in self.generations]

    def forget_children(self):
        for generation in self.generations:
            generation.close_ready_pipe()
            if generation.block is not None:
                self.lifetime.generation_ended(generation.block)
        self.generations.clear()

    def mark_stopping(self):
        notify.stopping()
        for generation in self.generations:
            generation.state = STOPPING
            generation.close_ready_pipe()

    def watch_while_stopping(self):
        self.status.serve()  # /healthz says 503 while the server stops

    def held_by_debugger(self):
        """A worker of ours at pdb's prompt: its arbiter waits for it, so we wait for its arbiter."""
        return any(row["state"] == "debugging" for g in self.generations if g.block is not None
                   for row in self.scoreboard.workers(g.block))

    def after_stop(self):
        self.status.close()

    # -- status ----------------------------------------------------------------

    def open_status_channel(self):
        try:
            self.status.open_control_socket(self.project)
        except OSError as exc:
            log.warning("no control socket for preforkstatus: %s", exc)
        if self.config.metrics:
            try:
                sock = self.status.open_metrics(self.config.metrics, self.config.metrics_socket_mode)
            except OSError as exc:
                raise HaltServer(f"PREFORK_METRICS {self.config.metrics}: {exc.strerror or exc}. "
                                 "Is another server using that address?") from None
            where = self.config.metrics if self.config.metrics.startswith("unix:") else \
                "http://%s:%d" % sock.getsockname()[:2]
            log.info("metrics at %s/metrics, health at %s/healthz", where, where)

    def healthy(self):
        """A generation serves and the server is not stopping: what /healthz says."""
        return any(g.state == SERVING for g in self.generations)

    def render_status(self, method, path):
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"GET only\n"
        if path == "/healthz":
            if self.healthy():
                return 200, "text/plain; charset=utf-8", b"ok\n"
            return 503, "text/plain; charset=utf-8", b"not serving\n"
        if path == "/status":
            return 200, "application/json", json.dumps(document(snapshot.take(self))).encode()
        if path == "/metrics":
            if not prometheus_available():
                return 501, "text/plain; charset=utf-8", b"pip install 'django-prefork[metrics]' for /metrics\n"
            from prometheus_client import CONTENT_TYPE_LATEST

            # Rendered in a child, off this loop: the app's registry may take seconds (status.Offload).
            # The snapshot is taken here, though: in the child, the master's own process_* would be the child's.
            taken = snapshot.take(self)
            return Offload("/metrics", CONTENT_TYPE_LATEST, lambda: exposition(taken))
        return 404, "text/plain; charset=utf-8", b"/metrics, /healthz or /status\n"

    # -- generations -----------------------------------------------------------

    def fork_first_generation(self):
        if self.config.gc_freeze:
            # Freeze without a full collection first: that would add some 30 ms
            # to start-up, to free the little garbage importing leaves. The
            # generation's collections then leave these pages unwritten.
            gc.freeze()
        spec, ready_r = self.next_spec()
        flush_std_streams()  # the banner is still buffered when stdout is a pipe: print it once, here
        pid = os.fork()
        if pid == 0:
            status = HALT_STATUS
            try:
                os.close(ready_r)
                close_wakeup_pipe(self.wakeup)
                status = run_generation(spec, self.listeners, self.config, self.load_app, self.name)
            except HaltServer as exc:
                sys.stderr.write(f"CommandError: {exc}\n")
            except BaseException:
                log.exception("generation 1 crashed")
            finally:
                os._exit(status)
        os.close(spec.ready_fd)
        self.generations.append(Generation(1, pid, ready_r, max(spec.worker_count, spec.start_count), _block(spec)))
        log.debug("%s booting", self.generations[-1])

    def next_spec(self):
        """The next generation's spec, and the read end of its ready pipe."""
        self.last_number += 1
        ready_r, ready_w = os.pipe()
        fds = [listener.fileno() for listener in self.listeners]
        terminal = self.terminal.to_json() if self.terminal is not None else None
        block = self.scoreboard.claim_block(self.last_number)
        if block is None:
            log.warning("generation %d: every scoreboard block is taken; its figures will not be counted",
                        self.last_number)
        serving = self.serving()
        scaled_to = 0  # a reload keeps the count the serving generation scaled to
        if serving is not None and serving.block is not None:
            scaled_to = self.scoreboard.capacity(serving.block)["target"]
        spec = GenerationSpec(self.last_number, ready_w, fds, self.worker_count, terminal=terminal,
                              scoreboard_fd=self.scoreboard.fd, block=-1 if block is None else block,
                              start_count=scaled_to, overrides=self.overrides, environment=self.environment)
        return spec, ready_r

    def reload(self, why):
        if self.booting_reload() is not None:
            log.info("%s: a reload is already under way", why)
            return
        spec, ready_r = self.next_spec()
        os.set_inheritable(spec.ready_fd, True)
        args = get_child_arguments()
        log.info("%s: starting generation %d with fresh code", why, spec.number)
        notify.reloading()
        hooks.send(hooks.reloading, Master, pid=os.getpid(), reason=why, generation=spec.number)
        try:
            pid = os.posix_spawn(args[0], args, spec.to_environ(os.environ))
        except OSError as exc:
            log.error("could not start generation %d: %s; still serving the previous code", spec.number, exc)
            os.close(ready_r)
            self.lifetime.reloads["failed"] += 1
            if spec.block >= 0:
                self.lifetime.generation_ended(spec.block)
            notify.ready("reload failed; still serving the previous code")
            return
        finally:
            os.close(spec.ready_fd)
        self.generations.append(Generation(spec.number, pid, ready_r, max(spec.worker_count, spec.start_count),
                                           _block(spec)))

    def promote_ready_generations(self):
        for generation in self.in_state(BOOTING):
            if generation.said_ready():
                self.promote(generation)

    def promote(self, generation):
        generation.state = SERVING
        if generation.is_reload:
            self.lifetime.reloads["ok"] += 1
        older = [g for g in self.generations
                 if g.number < generation.number and g.state in (BOOTING, SERVING)]
        for old in older:
            old.state = STOPPING
            old.close_ready_pipe()
            kill_quietly(old.pid, signal.SIGTERM)
        retiring = f"; stopping generation {', '.join(str(g.number) for g in older)}" if older else ""
        log.info("%s serving, %d workers%s", generation, generation.worker_count, retiring)
        notify.ready(f"generation {generation.number} serving, {generation.worker_count} workers")
        if not self.served:
            self.served = True
            hooks.send(hooks.server_ready, Master, pid=os.getpid(), generation=generation.number,
                       workers=generation.worker_count)

    def kill_slow_reload(self):
        booting = self.booting_reload()
        boot_limit = lifecycle.boot_limit(self.config.timeout)
        if booting is not None and time.monotonic() - booting.started > boot_limit:
            log.error("%s did not boot within %.0f s; killing it; still serving the previous code",
                      booting, boot_limit)
            kill_quietly(booting.pid, signal.SIGKILL)

    def child_exited(self, pid, status, stopping):
        """Apply Generation's rules to an exit; return HALT_STATUS when generation 1 never served."""
        generation = next((g for g in self.generations if g.pid == pid), None)
        if generation is None:
            return None
        self.generations.remove(generation)
        if generation.block is not None:
            self.lifetime.generation_ended(generation.block)
        code = os.waitstatus_to_exitcode(status)
        if generation.state == BOOTING and generation.said_ready():
            generation.state = SERVING  # it said so just before dying
        generation.close_ready_pipe()
        if stopping:
            return None
        if generation.state == STOPPING:
            log.info("%s stopped", generation)
        elif generation.state == SERVING:
            log.error("%s exited unexpectedly (exit %s); starting a new one", generation, code)
            self.reload("no generation serving")
        elif not self.served and self.watcher is not None:
            # Autoreload on and nothing ever served: as runserver, wait for the fix (the next change
            # starts a generation of fresh code); without autoreload, the server ends (exit 1).
            if generation.is_reload:
                self.lifetime.reloads["failed"] += 1
            log.error("%s failed (exit %s): nothing serves yet; fix the error and save (or send HUP) to retry",
                      generation, code)
        elif not generation.is_reload:
            if code != HALT_STATUS:  # a HaltServer: the generation said why
                log.error("%s ended before serving (exit %s)", generation, code)
            return HALT_STATUS
        else:
            serving = self.serving()
            self.lifetime.reloads["failed"] += 1
            log.error("%s failed (exit %s): still serving the previous code; fix the error and "
                      "save (or send HUP) to retry", generation, code)
            notify.ready(f"{generation} failed; still serving generation {serving.number if serving else '?'}")
        return None


def _block(spec):
    return None if spec.block < 0 else spec.block
