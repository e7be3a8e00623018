"""Signals wake a select() loop through a pipe; handlers only record them."""

import os
import select
import signal
import sys


def signal_wakeup_pipe():
    """A non-blocking pipe that signal delivery writes to: select() on its read end.

    Returns both ends. Handlers set afterwards only need to record the
    signal; the write from C, at delivery, is what wakes the loop.
    """
    read_end, write_end = os.pipe()
    for fd in (read_end, write_end):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    return read_end, write_end


def close_wakeup_pipe(pipe):
    """Undo signal_wakeup_pipe(), as a forked child must before making its own."""
    signal.set_wakeup_fd(-1)  # Python 3.12+ may already have reset it in a child
    for fd in pipe:
        os.close(fd)


def drain(fd):
    """Empty the wakeup pipe (it only says "look at your signal list")."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def wait(wakeup_fd, seconds, also=(), writable=()):
    """Sleep until a signal arrives, a fd in `also` is readable (in `writable` writable), or `seconds` pass."""
    try:
        select.select([wakeup_fd, *also], writable, [], seconds)
    except InterruptedError:
        pass
    drain(wakeup_fd)


def die_with_parent(sig):
    """Ask Linux to send `sig` when our parent dies (PR_SET_PDEATHSIG).

    A faster second line behind the getppid() checks, which stay: the parent
    may have died before this call, and other systems have no prctl.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def flush_std_streams():
    """Write out what stdout and stderr hold: before a fork, and before os._exit.

    Under systemd or a pipe stdout is block-buffered, and a fork copies the
    buffer: without this, every child would print the banner again when it
    flushes on its way out. os._exit flushes nothing, so a process leaving
    by it would lose its last lines.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # closed, or a pipe nobody reads any more: nothing to save
            pass
