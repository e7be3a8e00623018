"""The heartbeat file: touched by one process, judged by another's monotonic clock."""

import os
import time

import pytest

from django_prefork import heartbeat
from django_prefork.heartbeat import Heartbeat


def test_silence_is_measured_on_the_monotonic_clock(tmp_path):
    beat = Heartbeat(str(tmp_path))
    assert os.listdir(tmp_path) == []  # unlinked at once
    now = time.monotonic()
    assert beat.silent_for(now + 100) >= 100
    beat.notify()
    assert beat.silent_for(now + 200) == 0  # a change seen now counts from now
    assert beat.silent_for(now + 205) == pytest.approx(5)
    beat.close()


def test_a_wall_clock_jump_never_reads_as_silence(tmp_path):
    beat = Heartbeat(str(tmp_path))
    start = time.monotonic()
    beat.notify()
    beat.silent_for(start)
    # ctime set far in the past, as after a wall-clock jump back: it is a change, not an age.
    os.utime(beat.fd, (0, 0))
    assert beat.silent_for(start + 1) == 0
    beat.close()


def test_touches_from_a_forked_child_are_seen(tmp_path):
    beat = Heartbeat(str(tmp_path))
    now = time.monotonic()
    beat.silent_for(now)
    time.sleep(0.01)  # ctime granularity is a clock tick
    pid = os.fork()
    if pid == 0:
        beat.notify()
        os._exit(0)
    os.waitpid(pid, 0)
    assert beat.silent_for(now + 50) == 0
    beat.close()


def test_status_record(tmp_path):
    beat = Heartbeat(str(tmp_path))
    assert beat.read_status() == (heartbeat.BOOTING, "")
    beat.write_status(heartbeat.BOOT_FAILED, "Traceback ...\nRuntimeError: é")
    assert beat.read_status() == (heartbeat.BOOT_FAILED, "Traceback ...\nRuntimeError: é")
    beat.write_status(heartbeat.READY)
    assert beat.read_status() == (heartbeat.READY, "")
    beat.close()


def test_the_debugger_flag_leaves_the_request_in_hand_alone(tmp_path):
    beat = Heartbeat(str(tmp_path))
    assert not beat.debugging()
    beat.start_request(b"GET", b"/" + b"x" * 5000)  # longer than the page: cut, never reaching the flag
    beat.set_debugging(True)
    assert beat.debugging()
    assert beat.current_request()[0].startswith("GET /xxx")
    beat.end_request()
    assert beat.debugging()
    beat.set_debugging(False)
    assert not beat.debugging() and beat.current_request() is None
    beat.close()


def test_each_app_thread_has_its_own_record_and_pdb_flags_only_its_own(tmp_path):
    import mmap
    import threading

    pages = [mmap.mmap(-1, mmap.PAGESIZE) for _ in range(2)]
    beat = Heartbeat(str(tmp_path), None, pages)
    first, second, third = beat.records
    second.start_request(b"GET", b"/slow")
    assert beat.current_request() is None  # the first thread's record: idle
    assert [r.current_request()[0] for r in beat.busy_records()] == ["GET /slow"]

    def in_pdb():
        beat.by_thread[threading.get_ident()] = third
        beat.set_debugging(True)  # as debugger.py does, from the thread pdb stops

    thread = threading.Thread(target=in_pdb)
    thread.start()
    thread.join()
    assert third.debugging() and not first.debugging() and not second.debugging()
    assert beat.debugging()  # the arbiter's question: does pdb hold any of them?
    beat.close()
