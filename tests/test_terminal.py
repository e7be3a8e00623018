"""terminal.py: saving and restoring termios settings, over a pty (os.openpty) standing in for a terminal."""

import os
import termios

import pytest

from django_prefork.terminal import Terminal


@pytest.fixture
def pty():
    controller, terminal = os.openpty()
    yield terminal
    os.close(controller)
    os.close(terminal)


def echo_on(fd):
    return bool(termios.tcgetattr(fd)[3] & termios.ECHO)


def as_pdb_leaves_it(fd):
    """readline at pdb's prompt: -echo -icanon, never put back when the worker dies there."""
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~(termios.ECHO | termios.ICANON)
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def test_settings_changed_at_the_prompt_are_put_back(pty):
    # The pty is not our controlling terminal: no job control applies (ENOTTY from tcgetpgrp).
    saved = Terminal.save(pty)
    assert echo_on(pty)
    as_pdb_leaves_it(pty)
    assert not echo_on(pty)
    assert saved.restore() is True
    assert echo_on(pty) and termios.tcgetattr(pty)[3] & termios.ICANON


def test_unchanged_settings_are_not_written_again(pty):
    # Most worker deaths: one tcgetattr, no tcsetattr.
    assert Terminal.save(pty).restore() is False


def test_the_settings_travel_as_json_to_an_execd_generation(pty):
    import json

    saved = Terminal.save(pty)
    again = Terminal.from_json(json.loads(json.dumps(saved.to_json())))
    again.fd = pty
    as_pdb_leaves_it(pty)
    assert again.restore() is True and echo_on(pty)
    assert Terminal.from_json(None) is None  # the master had no terminal


def test_no_terminal_no_settings(tmp_path):
    with open(tmp_path / "log", "w") as f:
        assert Terminal.save(f.fileno()) is None
    assert Terminal.save(987) is None  # not even open


def test_a_terminal_hung_up_is_left_alone():
    controller, terminal = os.openpty()
    saved = Terminal.save(terminal)
    os.close(terminal)
    os.close(controller)
    assert saved.restore() is False  # EBADF, not a traceback in the arbiter
