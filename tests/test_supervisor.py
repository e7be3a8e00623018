"""supervisor.py: signal dispatch by name and the stop sequence, with forked stand-in children."""

import os
import signal
import time
from types import SimpleNamespace

import pytest

from django_prefork import supervisor
from django_prefork.supervisor import Supervisor


class FakeListener:
    def __init__(self):
        self.closed = None

    def close(self, unlink=True):
        self.closed = unlink


class Parent(Supervisor):
    """A Supervisor whose children are real forked processes, recording what it is told."""

    def __init__(self, graceful_timeout=10.0):
        super().__init__([FakeListener()], SimpleNamespace(graceful_timeout=graceful_timeout))
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self.wakeup = (r, w)  # stands in for signal_wakeup_pipe(), which would take over set_wakeup_fd
        self.worker_count = 2
        self.children = {}
        self.calls = []

    def close(self):
        for fd in self.wakeup:
            os.close(fd)

    def child(self, ignore=()):
        """Fork a child that sleeps until a signal it does not ignore ends it; return once it ignores them."""
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                for sig in ignore:
                    signal.signal(sig, signal.SIG_IGN)
                os.write(ready_w, b"R")
                while True:
                    signal.pause()
            finally:
                os._exit(0)
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"R"
        os.close(ready_r)
        self.children[pid] = None
        return pid

    # -- the subclass's side --

    def child_pids(self):
        return [pid for pid, status in self.children.items() if status is None]

    def child_exited(self, pid, status, stopping):
        self.children[pid] = os.waitstatus_to_exitcode(status)
        self.calls.append(("exited", pid, stopping))

    def forget_children(self):
        self.calls.append(("forget",))

    def set_worker_count(self, count, sig):
        self.worker_count = count
        self.calls.append(("count", count, sig))

    def pass_on(self, sig):
        self.calls.append(("pass_on", sig))

    def handle_hup(self):
        self.calls.append(("hup",))

    def mark_stopping(self):
        self.calls.append(("mark_stopping",))

    def after_stop(self):
        self.calls.append(("after_stop",))


@pytest.fixture
def parent():
    parent = Parent()
    yield parent
    for pid in parent.child_pids():
        supervisor.kill_quietly(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    parent.close()


# -- signals: recorded by the handler, acted on by the loop, by name --------------------------

@pytest.mark.parametrize("signals, stop, calls", [
    ([signal.SIGHUP], None, [("hup",)]),
    ([signal.SIGTTIN, signal.SIGTTIN], None, [("count", 3, signal.SIGTTIN), ("count", 4, signal.SIGTTIN)]),
    ([signal.SIGTTOU, signal.SIGTTOU, signal.SIGTTOU], None,  # never below one worker
     [("count", 1, signal.SIGTTOU), ("count", 1, signal.SIGTTOU), ("count", 1, signal.SIGTTOU)]),
    ([signal.SIGCHLD], None, []),  # waking the loop was the point: every turn reaps
    ([signal.SIGUSR1], None, [("pass_on", signal.SIGUSR1)]),
    ([signal.SIGTERM], True, []),  # graceful: requests in hand are finished
    ([signal.SIGINT], False, []),
    ([signal.SIGQUIT], False, []),
])
def test_each_signal_is_handled_by_its_handle_method(parent, signals, stop, calls):
    for sig in signals:
        parent.record_signal(sig, None)
    assert parent.handle_signals() is stop
    assert parent.calls == calls


def test_signals_after_a_stop_are_left_for_the_stop_to_see(parent):
    # stop() reads a later INT or QUIT as a second Ctrl-C.
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        parent.record_signal(sig, None)
    assert parent.handle_signals() is True
    assert parent.calls == [("hup",)] and parent.signals == [signal.SIGINT]


def test_every_handled_signal_has_a_handler():
    # handle_signals() looks the method up by name: a signal without one would raise in the loop.
    for sig in supervisor.HANDLED_SIGNALS:
        assert callable(getattr(Parent, f"handle_{sig.name[3:].lower()}")), sig.name


# -- reaping ---------------------------------------------------------------------------------

def test_reaping_without_children_forgets_them(parent):
    assert parent.reap_children() is None
    assert parent.calls == [("forget",)]


def test_a_child_that_exited_is_reaped_without_blocking(parent):
    pid = parent.child()
    assert parent.reap_children() is None  # alive: nothing to reap, no wait
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while parent.child_pids() and time.monotonic() < deadline:
        parent.reap_children()
        parent.sleep(0.01)
    assert parent.children[pid] == -signal.SIGTERM and ("exited", pid, False) in parent.calls


# -- the stop ----------------------------------------------------------------------------------

def test_a_graceful_stop_terms_the_children_reaps_them_and_closes_the_listeners(parent):
    pids = [parent.child(), parent.child()]
    parent.stop(graceful=True)
    assert all(parent.children[pid] == -signal.SIGTERM for pid in pids)
    assert parent.calls[0] == ("mark_stopping",) and parent.calls[-1] == ("after_stop",)
    assert {c[1] for c in parent.calls if c[0] == "exited"} == set(pids)
    assert parent.listeners[0].closed is True  # the unix socket file goes too


def test_a_quick_stop_sends_quit():
    parent = Parent()
    try:
        pid = parent.child(ignore=(signal.SIGTERM,))
        parent.stop(graceful=False)
        assert parent.children[pid] == -signal.SIGQUIT
    finally:
        parent.close()


@pytest.mark.parametrize("graceful_timeout, second_ctrl_c, ended_by", [
    (0.2, False, signal.SIGKILL),  # it outlasted the grace period
    (60, True, signal.SIGQUIT),  # a stop that would wait a minute, made quick by a second Ctrl-C
])
def test_a_child_ignoring_term_does_not_hold_the_stop(graceful_timeout, second_ctrl_c, ended_by):
    parent = Parent(graceful_timeout=graceful_timeout)
    try:
        pid = parent.child(ignore=(signal.SIGTERM,))
        if second_ctrl_c:
            parent.signals.append(signal.SIGINT)  # as the handler records it, mid-stop
        started = time.monotonic()
        parent.stop(graceful=True)
        assert parent.children[pid] == -ended_by
        assert time.monotonic() - started < 5
    finally:
        parent.close()


def test_a_listener_an_arbiter_shares_is_closed_without_unlinking():
    parent = Parent()
    parent.owns_socket_files = False  # an arbiter's: the master removes the file
    try:
        parent.stop(graceful=True)
        assert parent.listeners[0].closed is False
    finally:
        parent.close()
