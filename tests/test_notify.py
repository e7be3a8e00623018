"""notify.py: sd_notify's datagrams, received on a unix datagram socket bound here as systemd would."""

import socket
import time

import pytest

from django_prefork import notify


@pytest.fixture
def systemd(tmp_path, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    yield sock
    sock.close()


def test_ready_carries_a_status_line(systemd):
    notify.ready("generation 2 serving, 4 workers")
    assert systemd.recv(4096) == b"READY=1\nSTATUS=generation 2 serving, 4 workers"


def test_reloading_carries_the_monotonic_time_of_its_start(systemd):
    # Type=notify-reload wants it, in microseconds of CLOCK_MONOTONIC.
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notify.reloading()
    first, second = systemd.recv(4096).decode().split("\n")
    assert first == "RELOADING=1"
    name, _, usec = second.partition("=")
    assert name == "MONOTONIC_USEC" and before <= int(usec) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_stopping(systemd):
    notify.stopping()
    assert systemd.recv(4096) == b"STOPPING=1"


def test_an_abstract_socket_is_named_with_an_at_sign(monkeypatch):
    name = f"django-prefork-test-{id(monkeypatch)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notify.stopping()
        assert sock.recv(4096) == b"STOPPING=1"


@pytest.mark.parametrize("address", [
    "",  # not run by systemd
    "/nonexistent/notify",  # systemd gone: nothing to tell, and no error
])
def test_without_a_listener_nothing_is_sent_and_nothing_raised(monkeypatch, address):
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert notify.sd_notify("READY=1") is None
