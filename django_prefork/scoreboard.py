"""The scoreboard: every worker's figures, in one shared file the master owns.

Theory of operation
-------------------
The master creates the file once (unlinked at once, like a heartbeat file)
and hands its fd to every generation, as it hands the listening sockets, so
the figures of workers forked by exec'd arbiters reach it. The file is one
header page, then `BLOCKS` blocks; a generation is given a block of its own
for its life and writes nowhere else:

    block = block record | slot 0 | slot 1 | ...      (each slot_size bytes)

A slot is SLOT_SIZE bytes, and RECORD_STRIDE more for each app thread past
the first (PREFORK_THREADS): every thread has its own heartbeat record.

A slot is one worker's: its pid, number and boot state; its counters
(requests, bytes sent, responses by status class, a request-duration
histogram with fixed buckets); the memory the arbiter last read; and its
heartbeat record (heartbeat.py: the request in hand and when it started, the
debugger flag), from which busy, idle and debugging are read. The worker
writes its slot with plain stores into the shared mapping, no syscall:
`SlotWriter` keeps the counters as Python ints and stores them all with one
struct.pack_into at the end of each request.

One writer per place, so no locks:

* a slot's request and counters: its worker; its memory figures: the arbiter;
* the block record (the counters of the block's dead workers, restarts by
  reason, scaling events): the generation's arbiter. When a worker dies, its
  arbiter adds the slot's counters to the record and clears the slot, inside
  a sequence lock (seq odd while folding), so the master never reads a dead
  worker's requests twice or not at all;
* when a generation has ended the master folds its whole block into its own
  totals and frees the block.

Counters only grow, so a reader that catches a worker mid-store sees each
8-byte field old or new, never a value below the last one it saw.
"""

import mmap
import os
import struct
import tempfile
import time
from bisect import bisect_left

from .heartbeat import RECORD_SIZE, debugging_in, request_in
from .lifecycle import BOOTING, FREE, IDLE, STATE_NAMES, slot_state

MAGIC = b"PREFORK\x02"
BLOCKS = 8  # generations alive at once: serving, booting, and a few still stopping
PAGE = mmap.PAGESIZE
SLOT_SIZE = 2048  # a slot with one app slot's heartbeat record; each thread more adds a RECORD_STRIDE
RECORD_STRIDE = 1536  # one heartbeat record (heartbeat.py) in a slot

# Seconds; Prometheus' default buckets. The last bucket counts the rest (+Inf).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
RESTART_REASONS = ("timeout", "max_requests", "memory", "crash")
CONNECTION_STATES = ("reading", "waiting", "writing", "idle", "lingering")  # reactor.STATES


_HEADER = struct.Struct("@8sIIII")  # magic, blocks, slots per block, master pid, threads per worker
_PID = struct.Struct("@I")
_ASKS_RECYCLE_AT = 1  # a byte of _IDENTITY's padding: the worker asks to be replaced
_MOLD_GENERATION_AT = 2  # another: the refork whose mold forked the worker (0: its arbiter did; refork.py)
_IDENTITY = struct.Struct("@B3xIId")  # state (FREE, BOOTING, IDLE once booted), pid, number, booted at
# requests, bytes out, 5 status classes, len(BUCKETS) + 1 buckets, duration sum
_COUNTERS = struct.Struct(f"@QQ5Q{len(BUCKETS) + 1}Qd")
_COUNTERS_AT = 128
_MEMORY = struct.Struct("@QQ")  # RSS, USS in bytes, as the arbiter last read them
_MEMORY_AT = _COUNTERS_AT + _COUNTERS.size
_PROCESS = struct.Struct("@dQd")  # CPU seconds, open fds, start time (epoch), as the arbiter last read them
_PROCESS_AT = _MEMORY_AT + _MEMORY.size
_HEARTBEAT_AT = 512  # the heartbeat record, to the slot's end
_CONNECTIONS = struct.Struct("@5I")  # held by state: reading, waiting, writing, idle, lingering
_CONNECTIONS_AT = 64
_STARTED = struct.Struct("@d")  # the record's first field: the request's start, 0 when none
# The block record: seq, generation, in use, restarts by reason, then the counters of its dead workers.
_RECORD = struct.Struct(f"@QII{len(RESTART_REASONS)}Q")
# Then the arbiter's capacity: its worker target, floor, ceiling; scaling events up and down.
_CAPACITY = struct.Struct("@IIIxxxxQQ")
_CAPACITY_AT = _RECORD.size
_REFORKS = struct.Struct("@I")  # in _CAPACITY's padding: the reforks (promotions) the generation made
_REFORKS_AT = _CAPACITY_AT + 12
assert _IDENTITY.size <= _CONNECTIONS_AT and _CONNECTIONS_AT + _CONNECTIONS.size <= _COUNTERS_AT
assert _PROCESS_AT + _PROCESS.size <= _HEARTBEAT_AT and SLOT_SIZE - _HEARTBEAT_AT == RECORD_STRIDE >= RECORD_SIZE
assert _CAPACITY_AT + _CAPACITY.size <= _COUNTERS_AT

_ZERO_COUNTERS = (0,) * (_COUNTERS.size // 8 - 1) + (0.0,)


class Counters:
    """A worker's (or a sum of workers') counters, as plain Python values."""

    __slots__ = ("requests", "bytes_out", "statuses", "buckets", "duration_sum")

    def __init__(self, values=_ZERO_COUNTERS):
        self.requests, self.bytes_out = values[0], values[1]
        self.statuses = list(values[2:7])
        self.buckets = list(values[7:-1])
        self.duration_sum = values[-1]

    def values(self):
        return (self.requests, self.bytes_out, *self.statuses, *self.buckets, self.duration_sum)

    def add(self, other):
        self.requests += other.requests
        self.bytes_out += other.bytes_out
        self.statuses = [a + b for a, b in zip(self.statuses, other.statuses)]
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets)]
        self.duration_sum += other.duration_sum
        return self

    def as_dict(self):
        return {
            "requests": self.requests, "bytes_out": self.bytes_out,
            "responses": dict(zip(STATUS_CLASSES, self.statuses)),
            "duration_buckets": dict(zip([*map(str, BUCKETS), "+Inf"], self.buckets)),
            "duration_sum": self.duration_sum,
        }


class Scoreboard:
    """The shared file; made by the master, opened again by fd in each generation."""

    def __init__(self, fd, mm):
        self.fd = fd
        self.mm = mm
        magic, self.blocks, self.slots, self.master_pid, self.threads = _HEADER.unpack_from(mm, 0)
        if magic != MAGIC:
            raise ValueError("not a django-prefork scoreboard")
        self.slot_size = SLOT_SIZE + RECORD_STRIDE * (self.threads - 1)
        self.block_size = self.slot_size * (1 + self.slots)

    @classmethod
    def create(cls, tmp_dir, slots, threads=1):
        fd, path = tempfile.mkstemp(prefix="prefork-scoreboard-", dir=tmp_dir)
        os.unlink(path)
        os.set_inheritable(fd, True)
        size = PAGE + BLOCKS * (SLOT_SIZE + RECORD_STRIDE * (threads - 1)) * (1 + slots)
        os.ftruncate(fd, size)
        mm = mmap.mmap(fd, size)  # MAP_SHARED: forks and exec'd generations map the same pages
        _HEADER.pack_into(mm, 0, MAGIC, BLOCKS, slots, os.getpid(), threads)
        return cls(fd, mm)

    @classmethod
    def open(cls, fd):
        os.set_inheritable(fd, True)  # for a later exec of this generation's own children, none today
        return cls(fd, mmap.mmap(fd, os.fstat(fd).st_size))

    # -- blocks: the master gives them out ------------------------------------------

    def _block_at(self, block):
        return PAGE + block * self.block_size

    def claim_block(self, generation):
        """A free block for `generation`, zeroed; None when every block is taken."""
        for block in range(self.blocks):
            at = self._block_at(block)
            _, _, in_use, *_ = _RECORD.unpack_from(self.mm, at)
            if not in_use:
                self.mm[at:at + self.block_size] = bytes(self.block_size)
                _RECORD.pack_into(self.mm, at, 0, generation, 1, *(0,) * len(RESTART_REASONS))
                return block
        return None

    def release_block(self, block):
        """The generation has ended: its counters, restarts and scaling events; the block freed."""
        total = self.block_counters(block)
        restarts = self.restarts(block)
        capacity = self.capacity(block)
        at = self._block_at(block)
        _RECORD.pack_into(self.mm, at, 0, 0, 0, *(0,) * len(RESTART_REASONS))
        return total, restarts, {"up": capacity["up"], "down": capacity["down"]}

    # -- what the arbiter does with its block -----------------------------------------

    def slot_offset(self, block, slot):
        return self._block_at(block) + self.slot_size * (1 + slot)

    def writer(self, block, slot, clear_request):
        return SlotWriter(self.mm, self.slot_offset(block, slot), clear_request)

    def heartbeat_record(self, block, slot):
        """The slot's part the worker's Heartbeat writes its request and debugger flag to."""
        at = self.slot_offset(block, slot)
        return memoryview(self.mm)[at + _HEARTBEAT_AT:at + SLOT_SIZE]

    def thread_records(self, block, slot):
        """The records of a worker's threads after its first (heartbeat.Heartbeat's thread_pages)."""
        at = self.slot_offset(block, slot) + SLOT_SIZE
        return [memoryview(self.mm)[at + i * RECORD_STRIDE:at + (i + 1) * RECORD_STRIDE] for i in range(self.threads - 1)]

    def assign(self, block, slot, number):
        """A worker is about to be forked into `slot`: it boots (its pid follows the fork)."""
        at = self.slot_offset(block, slot)
        _IDENTITY.pack_into(self.mm, at, BOOTING, 0, number, time.monotonic())

    def set_pid(self, block, slot, pid):
        _PID.pack_into(self.mm, self.slot_offset(block, slot) + 4, pid)

    def retire(self, block, slot, reason=None):
        """A worker died: its counters go to the block record, its slot is freed."""
        at = self._block_at(block)
        slot_at = self.slot_offset(block, slot)
        seq, generation, in_use, *restarts = _RECORD.unpack_from(self.mm, at)
        if reason is not None:
            restarts[RESTART_REASONS.index(reason)] += 1
        _RECORD.pack_into(self.mm, at, seq + 1, generation, in_use, *restarts)  # odd: folding
        dead = Counters(_COUNTERS.unpack_from(self.mm, at + _COUNTERS_AT))
        dead.add(Counters(_COUNTERS.unpack_from(self.mm, slot_at + _COUNTERS_AT)))
        _COUNTERS.pack_into(self.mm, at + _COUNTERS_AT, *dead.values())
        self.mm[slot_at:slot_at + self.slot_size] = bytes(self.slot_size)
        _RECORD.pack_into(self.mm, at, seq + 2, generation, in_use, *restarts)

    def set_capacity(self, block, target, floor, ceiling, scaled=0):
        """The arbiter's worker target and bounds; `scaled` +1/-1 counts a scaling event."""
        at = self._block_at(block) + _CAPACITY_AT
        reforks = self.reforks(block)  # in the padding pack_into zeroes
        _, _, _, ups, downs = _CAPACITY.unpack_from(self.mm, at)
        _CAPACITY.pack_into(self.mm, at, target, floor, ceiling, ups + (scaled > 0), downs + (scaled < 0))
        self.set_reforks(block, reforks)

    def capacity(self, block):
        target, floor, ceiling, ups, downs = _CAPACITY.unpack_from(self.mm, self._block_at(block) + _CAPACITY_AT)
        return {"target": target, "floor": floor, "ceiling": ceiling, "up": ups, "down": downs}

    def set_mold_generation(self, block, slot, generation):
        self.mm[self.slot_offset(block, slot) + _MOLD_GENERATION_AT] = min(generation, 255)

    def set_reforks(self, block, count):
        _REFORKS.pack_into(self.mm, self._block_at(block) + _REFORKS_AT, count)

    def reforks(self, block):
        return _REFORKS.unpack_from(self.mm, self._block_at(block) + _REFORKS_AT)[0]

    def asks_recycle(self, block, slot):
        return self.mm[self.slot_offset(block, slot) + _ASKS_RECYCLE_AT] != 0

    def waiting_requests(self, block):
        """Complete requests the block's workers hold, waiting for their app slots (demand, like the listen queue)."""
        at = CONNECTION_STATES.index("waiting")
        return sum(_CONNECTIONS.unpack_from(self.mm, self.slot_offset(block, slot) + _CONNECTIONS_AT)[at]
                   for slot in range(self.slots))

    def set_memory(self, block, slot, rss, uss):
        _MEMORY.pack_into(self.mm, self.slot_offset(block, slot) + _MEMORY_AT, rss, uss)

    def set_process(self, block, slot, cpu_seconds, open_fds, start_time):
        _PROCESS.pack_into(self.mm, self.slot_offset(block, slot) + _PROCESS_AT, cpu_seconds, open_fds, start_time)

    # -- reading ------------------------------------------------------------------------

    def restarts(self, block):
        return dict(zip(RESTART_REASONS, _RECORD.unpack_from(self.mm, self._block_at(block))[3:]))

    def workers(self, block):
        """The live slots of a block, as dicts (what preforkstatus shows, one row a worker)."""
        rows = []
        now = time.monotonic()
        for slot in range(self.slots):
            at = self.slot_offset(block, slot)
            state, pid, number, booted = _IDENTITY.unpack_from(self.mm, at)
            if state == FREE:
                continue
            threads = []
            for start in [at + _HEARTBEAT_AT] + [at + SLOT_SIZE + i * RECORD_STRIDE for i in range(self.threads - 1)]:
                record = memoryview(self.mm)[start:start + RECORD_STRIDE]
                threads.append((request_in(record), debugging_in(record)))
                record.release()
            busy = [(request, debugging) for request, debugging in threads if request is not None or debugging]
            request, debugging = busy[0] if busy else (None, False)
            state = slot_state(state, request is not None, debugging)
            rss, uss = _MEMORY.unpack_from(self.mm, at + _MEMORY_AT)
            cpu, fds, started = _PROCESS.unpack_from(self.mm, at + _PROCESS_AT)
            counters = Counters(_COUNTERS.unpack_from(self.mm, at + _COUNTERS_AT))
            rows.append({
                "slot": slot, "number": number, "pid": pid, "state": STATE_NAMES.get(state, "?"),
                "mold_generation": self.mm[at + _MOLD_GENERATION_AT],
                "age": round(now - booted, 3),
                "request": request[0] if request else None,
                "request_age": round(now - request[1], 3) if request else None,
                "requests": counters.requests, "rss": rss or None, "uss": uss or None,
                # 0: not read yet (a start time of 0 is none either): absent, not zero.
                "cpu_seconds": cpu if started else None, "open_fds": fds if started else None,
                "start_time": started or None,
                "connections": dict(zip(CONNECTION_STATES, _CONNECTIONS.unpack_from(self.mm, at + _CONNECTIONS_AT))),
                "busy_threads": len(busy),
                "threads": [{"request": r[0] if r else None, "request_age": round(now - r[1], 3) if r else None,
                             "debugging": d} for r, d in threads] if self.threads > 1 else None,
                "counters": counters,
            })
        return rows

    def block_counters(self, block):
        """The block's counters: its dead workers' plus its live ones'."""
        at = self._block_at(block)
        while True:
            seq = _RECORD.unpack_from(self.mm, at)[0]
            if seq % 2:
                time.sleep(0)  # an arbiter is folding a dead worker in: a few stores
                continue
            total = Counters(_COUNTERS.unpack_from(self.mm, at + _COUNTERS_AT))
            for slot in range(self.slots):
                total.add(Counters(_COUNTERS.unpack_from(self.mm, self.slot_offset(block, slot) + _COUNTERS_AT)))
            if _RECORD.unpack_from(self.mm, at)[0] == seq:
                return total


class SlotWriter:
    """A worker's side: its counters, stored with one pack_into when a request ends."""

    __slots__ = ("mm", "at", "values", "clear_request")

    def __init__(self, mm, at, clear_request):
        self.mm = mm
        self.at = at
        # The counters as a flat list in _COUNTERS' order: indexed, not named,
        # since this runs once a request (requests, bytes out, statuses, buckets, duration sum).
        self.values = list(_COUNTERS.unpack_from(mm, at + _COUNTERS_AT))
        self.clear_request = clear_request  # the heartbeat's end_request

    def booted(self):
        self.mm[self.at] = IDLE

    def ask_recycle(self):
        """A thread of the worker timed out: it asks the arbiter for a successor (the identity's pad byte)."""
        self.mm[self.at + _ASKS_RECYCLE_AT] = 1

    def set_connections(self, counts):
        """The connections the worker holds, by state (reactor.STATES order)."""
        _CONNECTIONS.pack_into(self.mm, self.at + _CONNECTIONS_AT, *counts.values())

    def end_request(self, status, sent):
        """The request is over: its figures counted, its heartbeat record cleared."""
        started = _STARTED.unpack_from(self.mm, self.at + _HEARTBEAT_AT)[0]
        self.clear_request()
        if status:  # else the connection closed before a request came
            # A head so malformed it named no request was never started: counted, taking no time.
            self.count(status, sent, time.monotonic() - started if started else 0.0)

    def count(self, status, sent, duration):
        """One answered request in the counters (an app thread's, or the timeout's 500)."""
        values = self.values
        values[0] += 1
        values[1] += sent
        if 100 <= status < 600:
            values[1 + status // 100] += 1
        values[7 + bisect_left(BUCKETS, duration)] += 1
        values[-1] += duration
        _COUNTERS.pack_into(self.mm, self.at + _COUNTERS_AT, *values)
