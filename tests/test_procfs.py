"""procfs.py: a process's CPU time, RSS, open fds and start time from /proc, or None."""

import os
import resource
import subprocess
import sys
import time

import pytest

from django_prefork.procfs import read_process

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="no /proc here")


def test_our_own_figures_match_what_the_kernel_says_otherwise():
    stat = read_process(os.getpid())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    assert abs(stat.cpu_seconds - (usage.ru_utime + usage.ru_stime)) < 0.5
    assert stat.open_fds == len(os.listdir("/proc/self/fd"))  # both counts include listdir's own fd
    assert 0 < stat.rss <= usage.ru_maxrss * 1024
    assert stat.start_time <= time.time()


def test_an_open_file_counts():
    before = read_process(os.getpid()).open_fds
    with open(__file__):
        assert read_process(os.getpid()).open_fds == before + 1


def test_a_command_name_with_a_parenthesis_and_spaces_parses(tmp_path):
    """The name in /proc/PID/stat may hold ") (": the fields are split after the last ")"."""
    odd = tmp_path / "a) 1 (c"  # the kernel names the process after the file it executed
    odd.symlink_to(sys.executable)
    child = subprocess.Popen([str(odd), "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        with open(f"/proc/{child.pid}/stat") as f:
            assert "(a) 1 (c)" in f.read()
        stat = read_process(child.pid)
        assert stat is not None and stat.open_fds >= 3 and stat.start_time <= time.time()
    finally:
        child.stdin.close()
        child.wait(10)


def test_a_gone_process_is_none():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert read_process(child.pid) is None
