"""Supervision: what the master and an arbiter both do as parents of processes.

The master supervises generations, an arbiter its workers, and both run the
same loop:

    sleep until a signal, a child's news or `nap()` seconds
    handle the recorded signals in order: handle_term(), handle_hup(), ...
    tend(): reap exited children (child_exited() says what each exit means),
            then the subclass's own policy

and both stop the same way (`stop()`): a signal to every child, a wait
bounded by a deadline, during which the subclass keeps watching
(`watch_while_stopping()`: the arbiter's watchdog never pauses, so a stuck
worker never gets the grace period), a second Ctrl-C turning a graceful stop
into a quick one, SIGKILL for whatever is left, and a blocking reap, so that
no child outlives its parent's return.

Neither runs a thread, ever: a fork taken while another thread holds a lock
(logging's, the allocator's) gives the child a lock nobody will release, and
both fork. So signal handlers only append the signal to a list; the wakeup
pipe makes the loop's select() return at once, and the loop acts on the list.

What stays in master.py and arbiter.py is policy: which children there are,
what HUP, TTIN, TTOU and USR1 mean to each, and what a child's exit means.
"""

import logging
import os
import signal
import time

from . import proctitle
from .logfiles import reopen_and_say
from .signals import close_wakeup_pipe, signal_wakeup_pipe, wait

log = logging.getLogger("django_prefork")

HANDLED_SIGNALS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
    signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGCHLD,
)
QUICK_STOP_WAIT = 1.0  # seconds children get to exit on INT/QUIT before SIGKILL
STOP_POLL = 0.1  # seconds between looks at the children while they stop
HALT_STATUS = 1  # exit status of a server that could not start: the app failed to load, nothing ever served


class HaltServer(Exception):
    """Stop the whole server: the app cannot be loaded. It exits with HALT_STATUS."""


def kill_quietly(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # it exited already; whoever reaps it will hear of it


class Supervisor:
    """The loop and the stop; a subclass says what its children are and mean."""

    owns_socket_files = True  # whether stopping removes the unix socket files it listens on
    outlast_children = 0.0  # seconds a stop waits past the children's own deadline
    terminal = None  # the terminal's settings to put back (terminal.py), or None

    def __init__(self, listeners, config):
        self.listeners = listeners
        self.config = config
        self.signals = []  # recorded by the handlers, acted on by the loop
        self.wakeup = None

    # -- what a subclass provides ------------------------------------------------

    title = "runprefork"

    def start(self):
        """Start the first children."""

    def nap(self):
        """The longest sleep between two turns of the loop."""
        return 1.0

    def wake_fds(self):
        """File descriptors that end a sleep when they become readable."""
        return ()

    def write_fds(self):
        """File descriptors that end a sleep when they become writable."""
        return ()

    def after_stop(self):
        """Every child has been reaped; the listeners are closed."""

    def tend(self):
        """One turn of the loop after the signals; return an exit status to end the server."""
        return None

    def child_pids(self):
        raise NotImplementedError

    def child_exited(self, pid, status, stopping):
        """Say what the exit means; return an exit status to end the server."""
        raise NotImplementedError

    def forget_children(self):
        """There is no child left at all: drop whatever is still counted."""

    def set_worker_count(self, count, sig):
        """TTIN or TTOU (`sig`) moved the worker count to `count`."""
        raise NotImplementedError

    def pass_on(self, sig):
        """Send `sig` to the children it concerns."""
        raise NotImplementedError

    def mark_stopping(self):
        """Every child is being stopped (called once, as the stop begins)."""

    def watch_while_stopping(self):
        """Called between looks while children stop."""

    def held_by_debugger(self):
        """Whether pdb holds a process below us: a graceful stop then waits past its deadline."""
        return False

    # -- the loop --------------------------------------------------------------------

    def run(self):
        """Supervise until a stop signal, or a turn that ends the server; return the exit status."""
        self.wakeup = signal_wakeup_pipe()
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, self.record_signal)
        proctitle.set_title(self.title)
        try:
            self.start()
            while True:
                self.sleep(self.nap())
                graceful = self.handle_signals()
                if graceful is not None:
                    self.stop(graceful)
                    return 0
                status = self.tend()
                if status is not None:
                    self.stop(graceful=False)
                    return status
        except BaseException:
            self.stop(graceful=False)
            raise
        finally:
            close_wakeup_pipe(self.wakeup)

    def record_signal(self, signum, frame):
        self.signals.append(signum)

    def sleep(self, seconds):
        wait(self.wakeup[0], seconds, also=self.wake_fds(), writable=self.write_fds())

    def handle_signals(self):
        """Act on the recorded signals in order; True/False when one asks for a graceful/quick stop."""
        while self.signals:
            sig = signal.Signals(self.signals.pop(0))
            stop = getattr(self, f"handle_{sig.name[3:].lower()}")()
            if stop is not None:
                return stop
        return None

    def handle_term(self):
        log.info("%s: finishing requests in hand, then stopping", self)
        return True

    def handle_int(self):
        return False

    handle_quit = handle_int

    def handle_chld(self):
        pass  # waking the loop was the point: every turn reaps

    def handle_ttin(self):
        self.set_worker_count(self.worker_count + 1, signal.SIGTTIN)

    def handle_ttou(self):
        self.set_worker_count(max(1, self.worker_count - 1), signal.SIGTTOU)

    def handle_usr1(self):
        reopen_and_say(self)
        self.pass_on(signal.SIGUSR1)

    # -- children ------------------------------------------------------------------

    def reap_children(self, stopping=False):
        """Collect every child that exited, without blocking.

        Returns the first exit status child_exited() asks to end the server
        with (the rest are reaped on the next turn, or by the stop).
        """
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.forget_children()
                return None
            if not pid:
                return None
            end_with = self.child_exited(pid, status, stopping)
            if end_with is not None:
                return end_with

    def signal_children(self, sig):
        for pid in self.child_pids():
            kill_quietly(pid, sig)

    def stop_wait(self, graceful):
        return (self.config.graceful_timeout if graceful else QUICK_STOP_WAIT) + self.outlast_children

    def stop(self, graceful):
        """TERM: children finish what they hold; INT/QUIT: they exit at once.

        Whatever is left at the deadline gets SIGKILL, and every child is
        reaped before we return: no process outlives the server. Except that
        a graceful stop (TERM, a reload retiring a generation) never kills a
        worker a person is debugging at pdb's prompt: like its request, the
        stop waits for them to continue (Ctrl-C still stops at once).
        """
        self.mark_stopping()
        self.signal_children(signal.SIGTERM if graceful else signal.SIGQUIT)
        deadline = time.monotonic() + self.stop_wait(graceful)
        said = False
        while self.child_pids() and (time.monotonic() < deadline or (graceful and self.held_by_debugger())):
            if not said and time.monotonic() >= deadline:
                said = True
                log.info("%s: a worker is at the pdb prompt; it ends when you continue (c), "
                         "Ctrl-C stops it now", self)
            self.reap_children(stopping=True)
            if self.child_pids():
                self.sleep(STOP_POLL)
                self.watch_while_stopping()
            if graceful and {signal.SIGINT, signal.SIGQUIT} & set(self.signals):
                graceful = False  # a second Ctrl-C: stop waiting
                self.signal_children(signal.SIGQUIT)
                deadline = min(deadline, time.monotonic() + self.stop_wait(graceful))
        if self.child_pids():
            log.warning("%s: killing %d process(es) still running after the grace period",
                        self, len(self.child_pids()))
            self.signal_children(signal.SIGKILL)
        while self.child_pids():
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                self.forget_children()
                break
            self.child_exited(pid, status, stopping=True)
        for listener in self.listeners:
            listener.close(unlink=self.owns_socket_files)
        self.after_stop()
