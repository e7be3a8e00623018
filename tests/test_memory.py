"""memory.py: RSS and USS from /proc/PID/smaps_rollup."""

import os

import pytest

from django_prefork.memory import read_memory

needs_rollup = pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="Linux >= 4.14 only")


@needs_rollup
def test_this_process_memory_is_read():
    rss, uss = read_memory(os.getpid())
    assert 0 < uss <= rss
    with open("/proc/self/status") as f:
        vm_rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    assert abs(rss - vm_rss) < vm_rss / 2  # the same pages counted two ways, moments apart


@needs_rollup
def test_private_pages_are_the_uss():
    # 64 MB written by this process alone: it is in the USS, as it would be a worker's.
    before = read_memory(os.getpid())[1]
    block = bytearray(64 << 20)
    block[::4096] = b"x" * len(block[::4096])
    after = read_memory(os.getpid())[1]
    assert after - before >= 60 << 20
    del block


def test_a_process_gone_has_no_figure_never_a_zero():
    assert read_memory(2 ** 22 + 1) is None  # above pid_max's ceiling: never a live pid
