"""signals.py: the wakeup pipe a signal writes to, draining it, the wait, PR_SET_PDEATHSIG."""

import ctypes
import os
import select
import signal
import sys
import time

import pytest

from django_prefork import signals


@pytest.fixture
def wakeup():
    received = []
    old = signal.signal(signal.SIGUSR2, lambda signum, frame: received.append(signum))
    pipe = signals.signal_wakeup_pipe()
    yield pipe, received
    signals.close_wakeup_pipe(pipe)
    signal.signal(signal.SIGUSR2, old)


def readable(fd, timeout=0.0):
    return bool(select.select([fd], [], [], timeout)[0])


def test_a_signal_makes_the_read_end_readable_and_drain_empties_it(wakeup):
    (read_end, write_end), received = wakeup
    assert not readable(read_end)
    os.kill(os.getpid(), signal.SIGUSR2)
    assert readable(read_end, timeout=5)  # written from C, at delivery
    assert received == [signal.SIGUSR2]
    signals.drain(read_end)
    assert not readable(read_end)


def test_both_ends_are_non_blocking(wakeup):
    # A full pipe must not block the signal's delivery; an empty one must not block drain().
    (read_end, write_end), _ = wakeup
    assert not os.get_blocking(read_end) and not os.get_blocking(write_end)
    signals.drain(read_end)  # returns on an empty pipe


def test_closing_undoes_the_wakeup_fd():
    pipe = signals.signal_wakeup_pipe()
    signals.close_wakeup_pipe(pipe)
    assert signal.set_wakeup_fd(-1) == -1  # no fd was left installed
    for fd in pipe:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_wait_returns_at_once_for_a_signal(wakeup):
    (read_end, _), _ = wakeup
    os.kill(os.getpid(), signal.SIGUSR2)
    started = time.monotonic()
    signals.wait(read_end, 30)
    assert time.monotonic() - started < 5 and not readable(read_end)  # and drains the pipe


def test_wait_returns_for_a_readable_or_writable_fd(wakeup):
    (read_end, _), _ = wakeup
    r, w = os.pipe()
    try:
        os.write(w, b"R")  # a generation's ready byte
        started = time.monotonic()
        signals.wait(read_end, 30, also=[r])
        signals.wait(read_end, 30, writable=[w])
        assert time.monotonic() - started < 5
    finally:
        os.close(r)
        os.close(w)


def test_wait_sleeps_the_time_given_when_nothing_happens(wakeup):
    (read_end, _), _ = wakeup
    started = time.monotonic()
    signals.wait(read_end, 0.1)
    assert time.monotonic() - started >= 0.09


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_die_with_parent_sets_the_parent_death_signal():
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signals.die_with_parent(signal.SIGTERM)
            got = ctypes.c_int()
            ctypes.CDLL(None).prctl(2, ctypes.byref(got), 0, 0, 0)  # 2 = PR_GET_PDEATHSIG
            code = 0 if got.value == signal.SIGTERM else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
