"""A worker's life: every state it can be in, every move between them, and
every figure that bounds it in time.

The rule: anything that decides what a worker is, or how long it or one of
its connections may stay so, lives here. The heartbeat, the scoreboard, the
arbiter, the worker, the event loop and the HTTP layer read their states and
deadlines from this module and keep no such figure of their own. (The
master's and the status channel's own waits, which bound no worker, stay in
their modules.)

States, as the scoreboard stores them (one byte a slot) and preforkstatus
shows them::

    free ──fork──▶ booting ──app loaded──▶ idle ◀──request done──┐
                      │                     │                    │
                      └─load failed─▶ exit 3│ request started    │
                                            ▼                    │
                                          busy ──────────────────┘
                                            │ ▲
                                 pdb holds  ▼ │ pdb lets go
                                         debugging

Busy and debugging are not stored as such: a booted slot says idle, and
its heartbeat record (the request in hand, the debugger flag) tells the
rest, so a worker changes state with plain memory stores and no syscall.
`slot_state` is that reading.

How a worker's life ends decides what it is counted as (the restart
reasons of /metrics): `END_REASONS` is that table, `restart_reason` its
lookup.
"""

from types import MappingProxyType

# -- states ------------------------------------------------------------------------

FREE, BOOTING, IDLE, BUSY, DEBUGGING = range(5)
STATE_NAMES = MappingProxyType({FREE: "free", BOOTING: "booting", IDLE: "idle", BUSY: "busy",
                                DEBUGGING: "debugging"})

# Every move a worker makes: (state, event, next state). Events not listed leave a worker where it is.
MOVES = (
    (FREE, "forked", BOOTING),
    (BOOTING, "app loaded", IDLE),
    (IDLE, "request started", BUSY),
    (BUSY, "request done", IDLE),
    (BUSY, "pdb holds it", DEBUGGING),
    (DEBUGGING, "pdb lets go", BUSY),
    *((state, "exited", FREE) for state in (BOOTING, IDLE, BUSY, DEBUGGING)),
)
TRANSITIONS = MappingProxyType({(state, event): after for state, event, after in MOVES})


def next_state(state, event):
    """The state `event` moves a worker in `state` to; ValueError for a move the table lacks."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise ValueError(f"a worker {STATE_NAMES[state]} cannot be {event!r}") from None


def slot_state(stored, busy, debugging):
    """What a slot shows: its stored state, refined by its heartbeat record once booted."""
    if stored != IDLE:
        return stored
    return DEBUGGING if debugging else BUSY if busy else IDLE


# -- how a life ends ------------------------------------------------------------------------

# (timed out, asked to recycle for, asked to stop, exit code is 0) -> restart reason; None:
# it was retired (a stop, a reload, scaling down) and nobody counts that as a restart.
END_REASONS = MappingProxyType({
    "timed out": "timeout",  # the watchdog's SIGABRT, whatever followed
    "recycled for memory": "memory",  # past PREFORK_MAX_WORKER_MEMORY
    "recycled for timeout": "timeout",  # one of its threads timed out (PREFORK_THREADS)
    "recycled for refork": None,  # replaced by a child of the mold (PREFORK_REFORK_AFTER): counted as a refork
    "asked to stop": None,  # TERM from the arbiter: a stop, a reload, fewer workers
    "exited by itself": "max_requests",  # it only leaves on its own at PREFORK_MAX_REQUESTS
    "died": "crash",  # anything else: a signal, an exception, os._exit(non-zero)
})


def how_it_ended(timed_out, recycled_for, asked_to_stop, code):
    """The row of END_REASONS a worker's exit falls in."""
    if timed_out:
        return "timed out"
    if recycled_for:
        return f"recycled for {recycled_for}"
    if asked_to_stop:
        return "asked to stop"
    return "exited by itself" if code == 0 else "died"


def restart_reason(timed_out, recycled_for, asked_to_stop, code):
    return END_REASONS[how_it_ended(timed_out, recycled_for, asked_to_stop, code)]


# -- time ------------------------------------------------------------------------------
# Seconds. PREFORK_TIMEOUT, PREFORK_CLIENT_TIMEOUT, PREFORK_GRACEFUL_TIMEOUT and
# PREFORK_KEEPALIVE are the user's; everything derived from them is below.

KILL_AFTER_ABORT = 2.0  # a timed-out worker's time to report (and answer 500) before SIGKILL
ANSWER_TIMEOUT = 0.5  # the timeout's 500: to send it, then to see the client close
HEARTBEAT_EVERY = 0.1  # the fewest seconds between two fchmods of a heartbeat file
STARVED_AFTER = 5.0  # between two arbiter turns: past it the arbiter was not running
BOOT_RETRY_WAIT = 1.0  # between two spawns after a boot failure once serving
MIN_BOOT_LIMIT = 60.0  # the least a reload gets to be ready
LINGER_SECONDS = 1.0  # reading what a client still sends before closing on it
LINGER_BYTES = 4 * 1024 * 1024  # ... and at most this much of it
HANDOFF_AFTER = 0.02  # the app slot busy this long: idle connections with a request go to a sibling
HANDOFF_LOOK = 0.01  # between two looks of the hand-off thread at the app slot
SILENT_AT_STOP = 1.0  # at a graceful stop, what a connection that said nothing yet still gets
SWEEP_EVERY = 0.25  # between two looks at every held connection's deadline (reactor.py)
PROGRESS_LOOK = 0.5  # between two looks at a slow reader's acknowledged bytes
IDLE_WAIT_WITHOUT_TIMEOUT = 1.0  # a worker's longest wait for work when PREFORK_TIMEOUT is 0


def request_time(timeout):
    """How long a request may keep its connection busy (the body arriving, the response
    leaving) counted from its start: before the watchdog would kill the worker, with the
    kill's notice to spare. 0: no limit (PREFORK_TIMEOUT = 0)."""
    if not timeout:
        return 0
    return max(timeout - KILL_AFTER_ABORT, timeout / 2)


def boot_limit(timeout):
    """How long a reload may take to be ready before it is killed and counted failed."""
    return max(MIN_BOOT_LIMIT, 2 * timeout)


def idle_wait(timeout):
    """A worker's longest wait for work: its heartbeat must move well within the timeout."""
    return timeout / 2 if timeout else IDLE_WAIT_WITHOUT_TIMEOUT
