"""transport.py over socketpairs: reading, sending from the app slot, finishing from the loop, lingering."""

import os
import socket
import time

import pytest

from django_prefork.transport import ClientDisconnected, Connection


@pytest.fixture
def pair():
    server, client = socket.socketpair()
    conn = Connection(server, ("127.0.0.1", 5))
    yield conn, client
    conn.close()
    client.close()


def small_buffers(conn, client):
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


def test_recv_says_nothing_yet_data_and_the_end(pair):
    conn, client = pair
    assert conn.recv() is None  # nothing yet: never blocks
    client.sendall(b"GET")
    assert conn.recv() == b"GET"
    client.shutdown(socket.SHUT_WR)
    assert conn.recv() == b""


def test_unread_input_is_seen_without_reading_it(pair):
    conn, client = pair
    assert not conn.unread_input()
    client.sendall(b"pipelined")
    assert conn.unread_input()
    assert conn.recv() == b"pipelined"


def test_unread_input_is_not_asked_of_a_client_that_said_all(pair):
    # Connection: close, its request read whole: what it sends after is its own mistake,
    # and the common request saves the ioctl.
    conn, client = pair
    client.sendall(b"after its last request")
    conn.said_all = True
    assert not conn.unread_input()


def test_send_waits_for_a_slow_reader_and_delivers_everything(pair):
    conn, client = pair
    small_buffers(conn, client)
    data = os.urandom(1 << 20)
    received = bytearray()
    client.setblocking(False)
    start = time.monotonic()

    import threading

    def read():
        while len(received) < len(data) and time.monotonic() - start < 10:
            try:
                received.extend(client.recv(65536))
            except BlockingIOError:
                time.sleep(0.001)

    reader = threading.Thread(target=read)
    reader.start()
    conn.send(data, io_timeout=5)
    reader.join()
    assert bytes(received) == data


def test_send_gives_up_on_a_client_that_reads_nothing(pair):
    conn, client = pair
    small_buffers(conn, client)
    started = time.monotonic()
    with pytest.raises(ClientDisconnected, match="read nothing"):
        conn.send(b"x" * (4 << 20), io_timeout=0.5)
    assert time.monotonic() - started < 3


def test_send_gives_up_at_the_deadline(pair):
    conn, client = pair
    small_buffers(conn, client)
    at = time.monotonic() + 0.3
    with pytest.raises(ClientDisconnected, match="too slowly"):
        conn.send(b"x" * (4 << 20), deadline=lambda: at, io_timeout=30)


def test_a_queued_response_is_finished_by_flush_in_order(pair):
    conn, client = pair
    small_buffers(conn, client)
    conn.queue(b"a" * 200_000)
    conn.queue(b"b" * 10)
    assert conn.out_bytes == 200_010
    assert not conn.flush()  # the client has not read: the rest waits
    received = b""
    client.settimeout(5)
    while len(received) < 200_010:
        received += client.recv(65536)
        conn.flush()
    assert received == b"a" * 200_000 + b"b" * 10
    assert conn.flush() and conn.out_bytes == 0


def test_a_queued_file_is_sent_by_sendfile_and_closed(pair, tmp_path):
    conn, client = pair
    path = tmp_path / "f"
    path.write_bytes(b"0123456789" * 1000)
    with open(path, "rb") as f:
        conn.queue_file(os.dup(f.fileno()), 5, 100)
    src = conn.out_file[0]
    assert conn.flush()
    client.settimeout(5)
    assert client.recv(1000) == (b"0123456789" * 11)[5:105]
    with pytest.raises(OSError):
        os.fstat(src)  # the loop's own descriptor, closed once sent


def test_a_file_shorter_than_its_length_cannot_be_finished(pair, tmp_path):
    conn, client = pair
    path = tmp_path / "f"
    path.write_bytes(b"short")
    with open(path, "rb") as f:
        conn.queue_file(os.dup(f.fileno()), 0, 100)
    with pytest.raises(ClientDisconnected, match="short of its Content-Length"):
        conn.flush()


def test_send_goes_after_what_the_loop_was_given(pair):
    conn, client = pair
    conn.queue(b"first ")
    conn.send(b"second", io_timeout=5)
    client.settimeout(5)
    assert client.recv(100) == b"first second"


def test_linger_reads_what_the_client_still_sends(pair):
    conn, client = pair
    client.sendall(b"excess body")
    conn.linger()
    client.settimeout(5)
    assert client.recv(100) == b""  # our half-close reached it


def test_abort_discards_what_the_kernel_holds():
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    conn = Connection(server, ("127.0.0.1", 0))
    conn.send_some(b"x" * 1000)
    conn.close(abort=True)
    client.settimeout(5)
    with pytest.raises(ConnectionResetError):
        while client.recv(65536):
            pass
    client.close()
    listener.close()
