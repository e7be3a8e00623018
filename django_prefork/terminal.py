"""The terminal's settings: saved once by the master, put back after a worker dies.

pdb reads its commands through readline, which turns the terminal's echo and
canonical mode off (`-echo -icanon`) while it waits for a line and back on
once it has one. A worker that dies at the `(Pdb)` prompt (SIGKILL after the
grace period of a reload or a stop, the OOM killer, Ctrl-C) never turns them
back on: the shell is left typing blind until `stty sane`.

Which terminal: standard input, when it is a tty. That is the one pdb and
readline read from and change; every process of the server inherits it.

Who saves: the master, once, as it starts, before generation 1 forks, so
before any worker could have run pdb. It hands that copy to every generation
in the GenerationSpec (generation 1 by fork, a reload through the environment
like the rest of the spec). A generation never saves the terminal itself: when
a reload starts, a worker of the serving generation may be sitting at the
prompt with echo off, and those are not the settings to go back to.

Who restores:

* the arbiter, each time it reaps a worker, unless another of its workers is
  in the debugger right now (the terminal is that session's, mid-line);
* the master, when the server stops, after every process below it is gone.

Restoring costs one tcgetattr when nothing changed (most deaths). It only
happens while the server is the terminal's foreground job: a server put in
the background (`&`, Ctrl-Z then `bg`) leaves the terminal to the job in
front of it, whose settings are its own. A background process that calls
tcsetattr also gets SIGTTOU, which the master and the arbiters read as "one
worker fewer", so SIGTTOU is blocked around the call (POSIX then lets the
call through without the signal), which also closes the window between the
foreground check and the call.
"""

import errno
import os
import signal
import termios

STDIN = 0


def _normal(attrs):
    """tcgetattr's list with its control characters as ints: comparable, and JSON."""
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = attrs
    cc = [c if isinstance(c, int) else c[0] for c in cc]
    return [iflag, oflag, cflag, lflag, ispeed, ospeed, cc]


class Terminal:
    def __init__(self, attrs, fd=STDIN):
        self.fd = fd
        self.attrs = _normal(attrs)

    @classmethod
    def save(cls, fd=STDIN):
        """The settings of `fd` now, or None when it is no terminal."""
        try:
            if not os.isatty(fd):
                return None
            return cls(termios.tcgetattr(fd), fd)
        except (OSError, termios.error):
            return None

    def to_json(self):
        return self.attrs

    @classmethod
    def from_json(cls, attrs):
        return None if attrs is None else cls(attrs)

    def restore(self):
        """Put the saved settings back if they changed; True if it did."""
        try:
            if _normal(termios.tcgetattr(self.fd)) == self.attrs or not self._in_foreground():
                return False
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
            try:
                termios.tcsetattr(self.fd, termios.TCSANOW, self.attrs)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            return True
        except (OSError, termios.error):
            return False  # the terminal is gone (hung up): nothing to put back

    def _in_foreground(self):
        try:
            return os.tcgetpgrp(self.fd) == os.getpgrp()
        except OSError as exc:
            # ENOTTY: a tty, but not our controlling terminal: no job control
            # applies to it, and nobody else's settings are at stake.
            return exc.errno == errno.ENOTTY
