"""Capacity: how many workers a generation keeps, and when one is too big to keep.

Theory of operation
-------------------
With `PREFORK_MAX_WORKERS` above `PREFORK_WORKERS` the arbiter scales
between the two (uWSGI's "cheaper", Passenger's dynamic pool). It looks
every `LOOK_EVERY` seconds at how many of its workers are busy and how many
connections wait in the listen queue (the kernel's figure, sockets.py), and
`Scaler.decide()` turns the looks into at most one change:

* **up** by one when every worker was busy and connections were waiting in
  the last two looks (a single look can catch a connection between two
  accepts), at most once a second, never past the ceiling, and only when
  the machine's MemAvailable would hold one more worker (the largest USS
  among them, or its RSS if no USS is known). Where the kernel cannot say
  how long the queue is, every worker busy in two looks is enough;
* **down** by one (the newest idle worker) when the count is above both the
  floor and one more than the most workers busy at once in the last
  `DOWN_WINDOW` seconds, at most once a second.

Why this cannot flap under steady load: scaling down keeps one worker more
than the busiest moment of the window, so the same load never again finds
every worker busy, and scaling up needs every worker busy. After a burst
the count falls one a second once the window has seen it end: from 4 to 1
in about `DOWN_WINDOW` + 3 seconds.

TTIN and TTOU move the floor (and the count with it); the ceiling follows a
floor raised past it. A reload starts the new generation at the current
count.

`PREFORK_MAX_WORKER_MEMORY`: the arbiter reads each worker's USS once a
second (memory.py); one past the limit is recycled: its replacement is
forked first, then it gets SIGUSR2, finishes the request in hand, and
exits. No request is failed by a recycle.
"""

import logging
from collections import deque

log = logging.getLogger("django_prefork")

LOOK_EVERY = 0.5  # seconds between looks at the workers while scaling is on
DOWN_WINDOW = 5.0  # seconds of history scaling down looks back on
MIN_CHANGE_INTERVAL = 1.0  # seconds between two changes of the count


def mem_available():
    """Memory a new worker could have, in bytes: the machine's MemAvailable, or what is
    left under this container's cgroup limit when that is less; None where unknown.

    In a container /proc/meminfo describes the node, not the pod: scaling up on
    it alone would lead straight to the OOM killer.
    """
    figures = []
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    figures.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # v2
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",  # v1
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max", or v1's huge "no limit"
            figures.append(max(0, int(limit) - usage))
        break
    return min(figures) if figures else None


def _plural(n, word):
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class Scaler:
    def __init__(self, floor, ceiling, threads=1):
        self.floor = floor
        self.ceiling = max(ceiling, floor)
        self.threads = threads  # app threads a worker: `busy` counts threads, `count` workers
        self.looks = deque()  # (when, busy, count, queued or None)
        self.last_change = float("-inf")

    @property
    def enabled(self):
        return self.ceiling > self.floor

    def move_floor(self, floor):
        self.floor = floor
        if floor > self.ceiling:
            log.info("the worker floor %d is above PREFORK_MAX_WORKERS: the ceiling follows it", floor)
            self.ceiling = floor

    def look(self, now, busy, count, queued):
        self.looks.append((now, busy, count, queued))
        while self.looks and now - self.looks[0][0] > DOWN_WINDOW:
            self.looks.popleft()

    def decide(self, now, count, room_for_one=True):
        """+1, -1 or 0, and the reason to log."""
        if not self.enabled or now - self.last_change < MIN_CHANGE_INTERVAL or len(self.looks) < 2:
            return 0, ""
        (_, busy_1, count_1, queued_1), (_, busy_2, count_2, queued_2) = list(self.looks)[-2:]
        saturated = all(b >= c and (q is None or q > 0) for b, c, q in ((busy_1, count_1, queued_1),
                                                                      (busy_2, count_2, queued_2)))
        if saturated and count < self.ceiling:
            if not room_for_one:
                return 0, "memory"
            waiting = "" if queued_2 is None else f", {_plural(queued_2, 'connection')} waiting"
            return +1, f"{'the' if count == 1 else 'all'} {_plural(count, 'worker')} busy{waiting}"
        window_full = now - self.looks[0][0] >= DOWN_WINDOW - LOOK_EVERY
        peak = max(b for _, b, _, _ in self.looks)  # busy app threads
        needed = -(-peak // self.threads)  # the workers those threads take
        if window_full and count > max(self.floor, needed + 1):
            return -1, f"at most {peak} busy in the last {DOWN_WINDOW:.0f} s"
        return 0, ""

    def changed(self, now, delta):
        self.last_change = now
        if delta > 0:
            self.looks.clear()  # judge saturation again on looks taken with the new worker
