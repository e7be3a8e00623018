"""A process's CPU time, resident memory, open files and start time, as Linux's /proc says.

What prometheus_client's ProcessCollector reports for the process it runs
in, read here for any pid: the master reads its own, the arbiter each
worker's about once a second (with its memory, memory.py), so /metrics has
`process_*` for every process of the server. One read of /proc/PID/stat
(a few hundred bytes) and one listing of /proc/PID/fd. Where /proc is not
there (macOS) or the process is gone, the answer is None: absent, never a
made-up 0.
"""

import os
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_boot_time = None  # seconds since the epoch the machine booted: /proc/PID/stat counts from it


@dataclass(frozen=True)
class ProcessStat:
    cpu_seconds: float  # user + system
    rss: int  # bytes
    open_fds: int
    start_time: float  # seconds since the epoch


def boot_time():
    global _boot_time
    if _boot_time is None:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    _boot_time = float(line.split()[1])
                    break
    return _boot_time


def read_process(pid):
    """`pid`'s ProcessStat, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        booted = boot_time()
    except (OSError, TypeError):
        return None
    # The command name in parentheses may hold spaces and ")": split after the last one.
    fields = stat.rsplit(b")", 1)[1].split()
    utime, stime, starttime, rss_pages = int(fields[11]), int(fields[12]), int(fields[19]), int(fields[21])
    if booted is None:
        return None
    return ProcessStat((utime + stime) / _TICKS, rss_pages * _PAGE, fds, booted + starttime / _TICKS)
