"""sockets.py: binding, systemd's sockets, the listen queue, kernel timeouts; real sockets, no server."""

import errno
import json
import os
import socket
import stat
import struct
import subprocess
import sys

import pytest

from django_prefork import sockets
from django_prefork.sockets import Listener, bind_tcp, bind_unix, listen_queue, remove_stale_unix_socket

from .helpers import REPO, wait_until


@pytest.fixture
def tcp():
    listener = bind_tcp("127.0.0.1", 0, ipv6=False, backlog=7, client_timeout=3)
    yield listener
    listener.close()


def connect_many(address, count, family=socket.AF_INET):
    """`count` clients that connected and sent a byte: TCP_DEFER_ACCEPT queues no silent one."""
    clients = []
    for _ in range(count):
        client = socket.socket(family, socket.SOCK_STREAM)
        client.connect(address)
        client.sendall(b"G")
        clients.append(client)
    return clients


# -- binding -------------------------------------------------------------------------------

def test_a_tcp_listener_on_port_0_is_non_blocking_and_inheritable(tcp):
    # Non-blocking: workers accept() and select() on EAGAIN. Inheritable: an exec'd generation takes it by fd.
    assert tcp.sock.getblocking() is False and tcp.sock.get_inheritable()
    assert tcp.port != "0" and tcp.url() == f"http://127.0.0.1:{tcp.port}/"
    assert tcp.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)


@pytest.mark.skipif(not hasattr(socket, "TCP_DEFER_ACCEPT"), reason="Linux only")
def test_a_tcp_listener_defers_accept_until_the_client_speaks(tcp):
    # A preconnect that says nothing must not hold a worker in accept().
    assert tcp.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0


def test_an_ipv6_listener_is_written_in_brackets():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        listener = bind_tcp("::1", 0, ipv6=True, backlog=7, client_timeout=3)
    except OSError as exc:
        pytest.skip(f"no ::1 here: {exc}")
    try:
        assert listener.url() == f"http://[::1]:{listener.port}/"
    finally:
        listener.close()


def test_a_unix_listener_is_reachable_by_others_whatever_the_umask(tmp_path):
    # bind() applies the umask; nginx running as another user would get EACCES (a 502).
    path = str(tmp_path / "app.sock")
    old = os.umask(0o077)
    try:
        listener = bind_unix(path, backlog=7)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    assert listener.url() == f"unix:{path}"
    listener.close()
    assert not os.path.exists(path)  # our own socket file goes with us


def test_an_inherited_unix_socket_file_is_left_to_its_owner(tmp_path):
    path = str(tmp_path / "systemd.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(1)
    Listener(sock, unix_path=path, inherited=True).close()
    assert os.path.exists(path)


def test_a_stale_socket_file_is_replaced(tmp_path):
    path = str(tmp_path / "app.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # a server killed with -9 leaves its file behind
    bind_unix(path, backlog=7).close()


def test_a_live_servers_socket_is_refused(tmp_path):
    path = str(tmp_path / "app.sock")
    live = bind_unix(path, backlog=7)
    try:
        with pytest.raises(OSError) as raised:
            remove_stale_unix_socket(path)
        assert raised.value.errno == errno.EADDRINUSE and os.path.exists(path)
    finally:
        live.close()


def test_a_file_that_is_no_socket_is_never_unlinked(tmp_path):
    path = tmp_path / "settings.py"
    path.write_text("precious\n")
    with pytest.raises(OSError) as raised:
        bind_unix(str(path), backlog=7)
    assert raised.value.errno == errno.EADDRINUSE and path.read_text() == "precious\n"


# -- systemd socket activation -----------------------------------------------------------------

TAKE_AT_FD_3 = """
import json, os, sys
sys.path.insert(0, sys.argv[2])
os.dup2(int(sys.argv[1]), 3)  # as systemd passes them: from fd 3 on
os.close(int(sys.argv[1]))
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="http")
from django_prefork.sockets import systemd_listeners
(listener,) = systemd_listeners()
left = [k for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES") if k in os.environ]
print(json.dumps([listener.fileno(), listener.url(), listener.inherited, left]))
"""


def test_systemds_socket_is_taken_from_fd_3_and_its_variables_unset(tcp):
    # Unset, so that a generation exec'd later does not take the fds for its own.
    out = subprocess.run([sys.executable, "-c", TAKE_AT_FD_3, str(tcp.fileno()), REPO], pass_fds=[tcp.fileno()],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert json.loads(out) == [3, tcp.url(), True, []]


def test_sockets_passed_to_another_process_are_not_taken(monkeypatch):
    monkeypatch.setenv("LISTEN_PID", str(os.getppid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert sockets.systemd_listeners() == []
    assert os.environ["LISTEN_FDS"] == "1"


# -- the listen queue ---------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="tcp_info is Linux's")
def test_a_tcp_listeners_queue_is_its_unaccepted_connections(tcp):
    address = tcp.sock.getsockname()
    assert listen_queue(tcp.sock) == (0, 7)
    clients = connect_many(address, 3)
    try:
        # The handshake's last step and the byte reach the listener in softirq, after connect() returns.
        wait_until(lambda: listen_queue(tcp.sock) == (3, 7), message="3 connections in the queue")
        conn, _ = tcp.sock.accept()
        conn.close()
        assert listen_queue(tcp.sock) == (2, 7)
    finally:
        for client in clients:
            client.close()


def test_a_unix_listeners_queue_comes_from_sock_diag(tmp_path):
    listener = bind_unix(str(tmp_path / "app.sock"), backlog=7)
    clients = connect_many(str(tmp_path / "app.sock"), 2, socket.AF_UNIX)
    try:
        queue = listen_queue(listener.sock)
        if queue is None:
            pytest.skip("this kernel has no unix_diag (or netlink is filtered)")
        assert queue == (2, 7)
    finally:
        for client in clients:
            client.close()
        listener.close()


def test_sockets_without_an_accept_queue_say_nothing():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert listen_queue(udp) is None
    left, right = socket.socketpair()
    with left, right:
        assert listen_queue(left) is None  # a unix socket, but not listening


def test_queued_connections_fall_back_when_any_queue_is_unknown(tcp):
    unknown = Listener(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    try:
        assert sockets.waiting_connections([tcp]) == 0
        assert sockets.waiting_connections([tcp, unknown]) is None
        assert sockets.queued_connections([tcp, unknown], fallback=64) == 64
        assert sockets.queued_connections([tcp], fallback=64) == 0
    finally:
        unknown.close()


# -- timeouts in the kernel ---------------------------------------------------------------------

def test_io_timeouts_are_set_in_the_kernel():
    left, right = socket.socketpair()
    with left, right:
        sockets.set_io_timeout(left, 2.5)
        for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
            assert struct.unpack("ll", left.getsockopt(socket.SOL_SOCKET, option, 16)) == (2, 500000)


def test_a_timeout_of_zero_is_the_shortest_wait_not_forever():
    # A zero timeval means "wait forever" to the kernel (which rounds a nonzero one up to a tick).
    left, right = socket.socketpair()
    with left, right:
        sockets.set_io_timeout(left, 0)
        assert struct.unpack("ll", left.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)) != (0, 0)
        with pytest.raises(BlockingIOError):
            left.recv(1)


def test_a_recv_past_the_timeout_raises_eagain():
    left, right = socket.socketpair()
    with left, right:
        sockets.set_io_timeout(left, 0.05)
        with pytest.raises(BlockingIOError):
            left.recv(1)
