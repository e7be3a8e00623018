"""pdb in a worker: the timeout waits while a person is at the prompt.

A worker stopped at `(Pdb)` is silent: it touches no heartbeat while it
waits for a command, and past PREFORK_TIMEOUT the arbiter would SIGABRT it
mid-session. runserver has no timeout, so a developer expects a breakpoint to
wait for them as long as they like.

Every way into pdb (`breakpoint()`, `pdb.set_trace()`, `pdb.post_mortem()`,
`pdb.pm()`, a breakpoint set with `b` and hit later) stops in
`pdb.Pdb.interaction`, and so do debuggers built on pdb.Pdb that call it. So
`install()` wraps that one method, once, in the arbiter before it forks
(importing pdb there costs about 2 ms once a generation, and every worker
shares the module): nothing is added to the request path, and a worker that
never debugs never runs a line of this module.

The wrapper raises a flag on the worker's heartbeat page (`Heartbeat.
set_debugging`, one byte of shared memory) for as long as the interaction
lasts. The arbiter, seeing the flag, restarts the worker's silence count
instead of judging it; the count starts afresh when the person types
`c` (the wrapper also touches the heartbeat on the way out). Between two
stops of a `next`/`step` session the code runs as usual, and so does the
timeout.

A SIGABRT that crosses the flag (sent as the worker entered pdb) is ignored
by the worker (`held()`), and the arbiter, seeing the flag, calls off the
SIGKILL that would follow.

`c` makes pdb install its own SIGINT handler (Ctrl-C while the program
runs drops back into pdb: right for a script, wrong for a server, where
Ctrl-C reaches every process of the foreground job and must stop it). So
when the outermost interaction ends, the wrapper puts back the handler the
worker had when pdb took it (the worker's quick exit) and forgets pdb's
saved one.

What pdb does to the terminal, and how it is put back when a worker dies at
the prompt, is terminal.py's business.
"""

import functools
import signal
import time

_heartbeat = None  # this worker's Heartbeat; None in the master and the arbiter
_depth = 0  # nested interactions (pdb's `debug` command starts a Pdb inside a Pdb)
released_at = 0.0  # monotonic: when pdb last let this worker go


def install():
    """Wrap pdb.Pdb.interaction so a worker's heartbeat says when pdb holds it. Idempotent."""
    import pdb  # here, not at the top: http.py asks `paused_since` in every process

    original = pdb.Pdb.interaction
    if getattr(original, "prefork_wrapped", False):
        return

    @functools.wraps(original)
    def interaction(self, *args, **kwargs):
        global _depth
        beat = _heartbeat
        if beat is None:  # not a worker
            return original(self, *args, **kwargs)
        if not _depth:
            worker_sigint = signal.getsignal(signal.SIGINT)
        _depth += 1  # before the flag: the SIGABRT handler reads _depth
        beat.set_debugging(True)
        try:
            return original(self, *args, **kwargs)
        finally:
            global released_at
            _depth -= 1
            if not _depth:
                released_at = time.monotonic()
                beat.set_debugging(False)
                beat.notify()  # the silence counts from now, not from the breakpoint
                # `c` left pdb's SIGINT handler behind: Ctrl-C must stop the worker, not debug it.
                signal.signal(signal.SIGINT, worker_sigint)
                pdb.Pdb._previous_sigint_handler = None

    interaction.prefork_wrapped = True
    pdb.Pdb.interaction = interaction


def attach(beat):
    """In a worker: report pdb's holds on `beat`."""
    global _heartbeat
    _heartbeat = beat


def paused_since(started):
    """Seconds to add to a deadline counted from `started`: the watchdog counts from pdb's release."""
    return released_at - started if released_at > started else 0.0


def held():
    """Whether pdb holds this process now (a signal handler may ask)."""
    return _depth > 0
