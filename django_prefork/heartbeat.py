"""The heartbeat: one unlinked temp file per worker, shared by fd across fork.

The worker fchmods the file every turn of its loop, which moves the file's
ctime; the arbiter fstats it once a second. A change in ctime only means
"the worker was alive since I last looked": how long the worker has been
silent is measured on the arbiter's own monotonic clock, so a wall-clock
jump (NTP, a suspended VM) moves ctime arbitrarily and still kills nobody.

The file's bytes carry a small status record the arbiter can read at any
time: "booting", "ready", or the boot error a worker died of, so it can be
reported once instead of once per worker.
"""

import os
import tempfile
import time

BOOTING, READY, BOOT_FAILED = b"B", b"R", b"F"


class Heartbeat:
    def __init__(self, tmp_dir):
        fd, path = tempfile.mkstemp(prefix="prefork-heartbeat-", dir=tmp_dir)
        os.unlink(path)
        self.fd = fd
        self._mode = 0
        self._touched = 0.0
        self._seen_ctime = os.fstat(fd).st_ctime_ns
        self._seen_at = time.monotonic()

    # -- the worker's side -------------------------------------------------

    def notify(self):
        # At most ten fchmods a second: the arbiter looks once a second, and a
        # clock read costs far less than a syscall on every request.
        now = time.monotonic()
        if now - self._touched < 0.1:
            return
        self._touched = now
        # Alternate the mode so the change is real on every filesystem.
        self._mode ^= 1
        os.fchmod(self.fd, self._mode)

    def write_status(self, state, text=""):
        data = state + text.encode("utf-8", "replace")
        os.pwrite(self.fd, len(data).to_bytes(4, "little") + data, 0)

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

    def read_status(self):
        size = int.from_bytes(os.pread(self.fd, 4, 0).ljust(4, b"\0"), "little")
        if not size:
            return BOOTING, ""
        data = os.pread(self.fd, size, 4)
        return data[:1], data[1:].decode("utf-8", "replace")

    def close(self):
        os.close(self.fd)
