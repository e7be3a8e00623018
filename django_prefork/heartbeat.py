"""The heartbeat: one unlinked temp file per worker, shared by fd across fork.

The worker fchmods the file every turn of its loop, which moves the file's
ctime; the arbiter fstats it once a second. A change in ctime only means
"the worker was alive since I last looked": how long the worker has been
silent is measured on the arbiter's own monotonic clock, so a wall-clock
jump (NTP, a suspended VM) moves ctime arbitrarily and still kills nobody.

Beside it, a record mapped shared by the worker and the arbiter (the
worker's scoreboard slot, so the master sees it too: scoreboard.py; a page
of the file itself for a worker without a slot) holds what the arbiter may
need to say about the worker:

* the request in hand (start on the monotonic clock, method and target),
  written by the worker with plain memory stores, no syscall, at the start
  and end of each request, so a timeout can name the request even when the
  worker is stuck in C code and cannot say anything itself;
* its last byte: 1 while pdb holds the worker (debugger.py sets it on
  entering `Pdb.interaction` and clears it on leaving), so the arbiter lets
  a person take their time instead of killing the worker.

After the file's first page: the boot status, "booting", "ready", or the
traceback a worker died of, so that is reported once instead of once per
worker.
"""

import mmap
import os
import struct
import tempfile
import threading
import time

from .lifecycle import HEARTBEAT_EVERY

BOOTING, READY, BOOT_FAILED = b"B", b"R", b"F"
PAGE = mmap.PAGESIZE
_STARTED = struct.Struct("dH")  # monotonic start (0.0: idle), length of "METHOD target"
_REQUEST_MAX = 1024


class Record:
    """What one app slot is doing (a worker's, or one of its threads'): the request in
    hand and when it started, and pdb's flag in the record's last byte."""

    __slots__ = ("page", "_debugging_at")

    def __init__(self, page):
        self.page = page
        self._debugging_at = len(page) - 1

    def start_request(self, method, target):
        line = method + b" " + target[:_REQUEST_MAX]
        end = _STARTED.size + len(line)
        self.page[_STARTED.size:end] = line
        _STARTED.pack_into(self.page, 0, time.monotonic(), len(line))

    def end_request(self):
        _STARTED.pack_into(self.page, 0, 0.0, 0)

    def set_debugging(self, held):
        self.page[self._debugging_at] = 1 if held else 0

    def debugging(self):
        return self.page[self._debugging_at] != 0

    def current_request(self):
        """("METHOD target", its start on the monotonic clock), or None when idle."""
        return request_in(self.page)


class Heartbeat:
    def __init__(self, tmp_dir, page=None, thread_pages=(), fd=None):
        if fd is None:
            fd, path = tempfile.mkstemp(prefix="prefork-heartbeat-", dir=tmp_dir)
            os.unlink(path)
            os.ftruncate(fd, PAGE)
        # else the arbiter made the file and sent its fd (a worker forked by a mold, refork.py)
        self.fd = fd
        # The shared record: the worker's scoreboard slot when it has one (so
        # the master sees the request too), else a page of this file.
        self.own_page = page is None
        self.page = mmap.mmap(fd, PAGE) if page is None else page  # MAP_SHARED: the fork shares it
        # One record an app thread (PREFORK_THREADS): the first is the page above.
        self.records = [Record(self.page)] + [Record(p) for p in thread_pages]
        self.thread_pages = list(thread_pages)
        self.by_thread = {}  # thread ident -> its Record, in a worker with threads
        self._mode = 0
        self._touched = 0.0
        self._seen_ctime = os.fstat(fd).st_ctime_ns
        self._seen_at = time.monotonic()

    # -- the worker's side -------------------------------------------------

    def notify(self):
        # At most ten fchmods a second: the arbiter looks once a second, and a
        # clock read costs far less than a syscall on every request.
        now = time.monotonic()
        if now - self._touched < HEARTBEAT_EVERY:
            return
        self._touched = now
        # Alternate the mode so the change is real on every filesystem.
        self._mode ^= 1
        os.fchmod(self.fd, self._mode)

    def write_status(self, state, text=""):
        data = state + text.encode("utf-8", "replace")
        os.pwrite(self.fd, len(data).to_bytes(4, "little") + data, PAGE)

    def start_request(self, method, target):
        self.records[0].start_request(method, target)

    def end_request(self):
        self.records[0].end_request()

    def set_debugging(self, held):
        """pdb holds (or lets go of) the calling thread's request."""
        self.by_thread.get(threading.get_ident(), self.records[0]).set_debugging(held)

    # -- the arbiter's side ------------------------------------------------

    def silent_for(self, now):
        """Seconds since the worker last touched the file, by the monotonic clock `now`."""
        ctime = os.fstat(self.fd).st_ctime_ns
        if ctime != self._seen_ctime:
            self._seen_ctime, self._seen_at = ctime, now
        return now - self._seen_at

    def forgive(self, now):
        """Restart the silence count: the arbiter was not looking (stopped, starved)."""
        self._seen_ctime = os.fstat(self.fd).st_ctime_ns
        self._seen_at = now

    def debugging(self):
        """Whether the worker says pdb holds it (a person at the prompt, not a stuck request)."""
        return any(record.debugging() for record in self.records)

    def read_status(self):
        size = int.from_bytes(os.pread(self.fd, 4, PAGE).ljust(4, b"\0"), "little")
        if not size:
            return BOOTING, ""
        data = os.pread(self.fd, size, PAGE + 4)
        return data[:1], data[1:].decode("utf-8", "replace")

    def current_request(self):
        """The first app slot's ("METHOD target", start), or None when it is idle."""
        return self.records[0].current_request()

    def busy_records(self):
        """The records of the app slots that hold a request or are held by pdb."""
        return [r for r in self.records if r.current_request() is not None or r.debugging()]

    def describe_timeout(self, now, silent_for):
        """What a worker judged silent past the timeout was doing, for the log.

        `timed out after S s serving METHOD PATH`, S the request's age, or
        `timed out after S s while idle`, S the silence. Only the watchdog's
        verdict (and the worker's answer to it) may say "timed out".
        """
        current = self.current_request()
        if current is None:
            return f"timed out after {silent_for:.0f} s while idle"
        line, started = current
        return f"timed out after {now - started:.0f} s serving {line}"

    def close(self):
        if self.own_page:
            self.page.close()
            for page in self.thread_pages:
                page.close()
        os.close(self.fd)


def request_in(page):
    """The request a heartbeat record names: ("METHOD target", start), or None when idle."""
    started, length = _STARTED.unpack_from(page, 0)
    if not started:
        return None
    return bytes(page[_STARTED.size:_STARTED.size + min(length, _REQUEST_MAX + 16)]).decode("latin-1"), started


def debugging_in(page):
    return page[len(page) - 1] != 0


RECORD_SIZE = _STARTED.size + _REQUEST_MAX + 16 + 1  # what a record needs: a slot must give at least this
