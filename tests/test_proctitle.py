"""proctitle.py: the title `ps` shows."""

import os

import pytest
import setproctitle

from django_prefork import proctitle


@pytest.fixture
def restore_title():
    old = setproctitle.getproctitle()
    yield
    setproctitle.setproctitle(old)


def test_the_title_is_what_ps_reads(restore_title):
    proctitle.set_title("runprefork worker 2 [testproject]")
    assert setproctitle.getproctitle() == "runprefork worker 2 [testproject]"
    if os.path.exists("/proc/self/cmdline"):
        with open("/proc/self/cmdline", "rb") as f:
            assert f.read().rstrip(b"\0").startswith(b"runprefork worker 2 [testproject]")
