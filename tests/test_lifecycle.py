"""lifecycle.py: a worker's states, its moves, how its end is counted, and its time figures."""

import pytest

from django_prefork import lifecycle
from django_prefork.lifecycle import BOOTING, BUSY, DEBUGGING, FREE, IDLE


@pytest.mark.parametrize("state, event, expected", [
    (FREE, "forked", BOOTING),
    (BOOTING, "app loaded", IDLE),
    (IDLE, "request started", BUSY),
    (BUSY, "request done", IDLE),
    (BUSY, "pdb holds it", DEBUGGING),
    (DEBUGGING, "pdb lets go", BUSY),
    (BUSY, "exited", FREE),
])
def test_allowed_moves(state, event, expected):
    assert lifecycle.next_state(state, event) == expected


@pytest.mark.parametrize("state, event", [
    (FREE, "request started"),  # nothing runs in a free slot
    (BOOTING, "request started"),  # a worker serves only once its app is loaded
    (IDLE, "pdb lets go"),
])
def test_moves_the_table_lacks_are_refused(state, event):
    with pytest.raises(ValueError):
        lifecycle.next_state(state, event)


def test_every_state_has_a_name_and_every_move_ends_in_a_state():
    assert set(lifecycle.STATE_NAMES) == {FREE, BOOTING, IDLE, BUSY, DEBUGGING}
    assert all(target in lifecycle.STATE_NAMES for target in lifecycle.TRANSITIONS.values())


@pytest.mark.parametrize("stored, busy, debugging, shown", [
    (BOOTING, False, False, BOOTING),
    (IDLE, False, False, IDLE),
    (IDLE, True, False, BUSY),  # the heartbeat record names a request
    (IDLE, True, True, DEBUGGING),  # pdb's flag wins: a person, not a stuck request
])
def test_a_slot_shows_its_heartbeat_record(stored, busy, debugging, shown):
    assert lifecycle.slot_state(stored, busy, debugging) == shown


@pytest.mark.parametrize("timed_out, recycled_for, asked_to_stop, code, reason", [
    (True, None, False, -9, "timeout"),  # SIGABRT then SIGKILL: still the timeout
    (True, None, True, 1, "timeout"),  # a stop does not hide a timeout
    (False, "memory", True, 0, "memory"),
    (False, None, True, 0, None),  # a stop, a reload, scaling down: no restart
    (False, None, False, 0, "max_requests"),
    (False, None, False, 1, "crash"),
    (False, None, False, -11, "crash"),
])
def test_restart_reasons_are_a_lookup(timed_out, recycled_for, asked_to_stop, code, reason):
    assert lifecycle.restart_reason(timed_out, recycled_for, asked_to_stop, code) == reason


@pytest.mark.parametrize("timeout, expected", [
    (0, 0),  # no watchdog: no deadline either
    (30, 28),  # the kill's notice to spare
    (3, 1.5),  # never less than half the timeout
])
def test_a_request_ends_before_the_watchdog_would_kill(timeout, expected):
    assert lifecycle.request_time(timeout) == expected
    if timeout:
        assert lifecycle.request_time(timeout) + lifecycle.KILL_AFTER_ABORT >= timeout


def test_boot_limit_and_idle_wait():
    assert lifecycle.boot_limit(10) == lifecycle.MIN_BOOT_LIMIT
    assert lifecycle.boot_limit(100) == 200
    assert lifecycle.idle_wait(30) == 15  # the heartbeat moves well within the timeout
    assert lifecycle.idle_wait(0) == lifecycle.IDLE_WAIT_WITHOUT_TIMEOUT


def test_the_timeouts_answer_fits_in_the_kills_notice():
    # The 500 is sent (ANSWER_TIMEOUT), then the client gets LINGER_SECONDS to read it.
    assert lifecycle.ANSWER_TIMEOUT + lifecycle.LINGER_SECONDS < lifecycle.KILL_AFTER_ABORT
