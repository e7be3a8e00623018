"""Persistent connections against a live server, h11 reading every response.

RFC 9112 §9.3: HTTP/1.1 connections persist unless either side says
`Connection: close`; HTTP/1.0 ones only with `Connection: keep-alive`.
§9.3.2: pipelined requests are answered in the order they came. Each
message is parsed by a fresh parser: nothing after a message ever merges
into it (the table is test_http_boundaries.py's, read here with keep-alive on).
"""

import json
import socket
import time

import h11
import pytest

from .helpers import h11_client, head, held_connections, wait_until
from .test_http_boundaries import PIPELINED, RAW_APPS

SETTINGS = {"PREFORK_WORKERS": 1, "PREFORK_KEEPALIVE": 2, "PREFORK_CLIENT_TIMEOUT": 2, "WSGI_APPLICATION": RAW_APPS}


@pytest.fixture(scope="module")
def kept():
    from .helpers import Server

    srv = Server(settings=SETTINGS)
    srv.start()
    srv.wait_workers(1)
    yield srv
    srv.close()


def responses_in(data, methods):
    """Each complete response in `data` as (h11.Response, body), read by h11 one after another."""
    found = []
    for method in methods:
        if not data:
            break
        client = h11_client(method, data)
        response, body = None, b""
        while True:
            event = client.next_event()
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif event is h11.NEED_DATA:
                client.receive_data(b"")  # the server closed: a close-delimited body ends here
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        found.append((response, body))
        data = client.trailing_data[0]
    return found


def header(response, name):
    return dict(response.headers).get(name.encode())


def exchange(sock, data):
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_several_requests_on_one_connection(kept):
    sock = kept.connect()
    try:
        pids = set()
        for i in range(3):
            sock.sendall(head(b"GET /echo?n=%d HTTP/1.1" % i, b"Host: x"))
            data = b""
            while not (found := responses_in(data, ["GET"])) or found[0][0] is None or \
                    len(found[0][1]) < int(header(found[0][0], "content-length") or 0):
                data += sock.recv(65536)
            response, body = found[0]
            assert response.status_code == 200 and header(response, "connection") is None
            env = json.loads(body)
            assert env["QUERY_STRING"] == f"n={i}"
            pids.add(env["pid"])
        assert len(pids) == 1
    finally:
        sock.close()


@pytest.mark.parametrize("first, rest, expected", [c[1:] for c in PIPELINED], ids=[c[0] for c in PIPELINED])
def test_pipelined_messages_never_merge(kept, first, rest, expected):
    sock = kept.connect()
    try:
        data = exchange(sock, first + rest)
    finally:
        sock.close()
    found = responses_in(data, ["GET"] * 4)
    response, body = found[0]
    env = json.loads(body)
    assert (env["REQUEST_METHOD"], env["PATH_INFO"], env["QUERY_STRING"], env["body"]) == expected
    closes = header(response, "connection") == b"close"
    for later, later_body in found[1:]:
        assert not closes, "bytes after a response that closed were answered"
        if later.status_code == 200:
            later_env = json.loads(later_body)
            assert "SMUGGLED" in later_env["PATH_INFO"] or later_env["PATH_INFO"] == "/admin"


def test_pipelined_requests_are_answered_in_order(kept):
    sock = kept.connect()
    try:
        data = exchange(sock, b"".join(head(b"GET /echo?n=%d HTTP/1.1" % i, b"Host: x") for i in range(5)))
    finally:
        sock.close()
    found = responses_in(data, ["GET"] * 5)
    assert [json.loads(body)["QUERY_STRING"] for _, body in found] == [f"n={i}" for i in range(5)]


@pytest.mark.parametrize("request_head, kept_alive", [
    (head(b"GET /echo HTTP/1.1", b"Host: x"), True),  # RFC 9112 §9.3: 1.1 persists by default
    (head(b"GET /echo HTTP/1.1", b"Host: x", b"Connection: close"), False),
    (head(b"GET /echo HTTP/1.0"), False),  # 1.0 closes unless asked
    (head(b"GET /echo HTTP/1.0", b"Connection: keep-alive"), True),
])
def test_who_keeps_the_connection(kept, request_head, kept_alive):
    sock = kept.connect()
    try:
        sock.sendall(request_head)
        sock.settimeout(5)
        data = sock.recv(65536)
        response, _ = responses_in(data, ["GET"])[0]
        if kept_alive:
            assert header(response, "connection") in (None, b"keep-alive")
            sock.sendall(head(b"GET /echo?again HTTP/1.1", b"Host: x", b"Connection: close"))
            again = b""
            while chunk := sock.recv(65536):
                again += chunk
            assert responses_in(again, ["GET"])[0][0].status_code == 200
        else:
            assert header(response, "connection") == b"close"
            while sock.recv(65536):  # and the server closes (a timeout here fails the test)
                pass
    finally:
        sock.close()


def test_an_idle_connection_is_closed_after_the_keepalive(kept):
    sock = kept.connect()
    try:
        sock.sendall(head(b"GET /echo HTTP/1.1", b"Host: x"))
        sock.settimeout(10)
        sock.recv(65536)
        answered = time.monotonic()
        while sock.recv(65536):
            pass
        closed_after = time.monotonic() - answered
    finally:
        sock.close()
    assert 1.5 < closed_after < 4, closed_after  # PREFORK_KEEPALIVE 2


def test_idle_connections_wait_in_the_event_loop_not_the_worker(kept):
    # The one worker keeps 20 idle connections and still answers a new client at once.
    socks = []
    try:
        for _ in range(20):
            sock = kept.connect()
            sock.sendall(head(b"GET /echo HTTP/1.1", b"Host: x"))
            sock.recv(65536)
            socks.append(sock)
        wait_until(lambda: held_connections(kept)["idle"] >= 20, message="20 idle connections held")
        started = time.monotonic()
        assert kept.get("/echo")[0] == 200
        assert time.monotonic() - started < 1
    finally:
        for sock in socks:
            sock.close()


def test_a_full_worker_closes_its_oldest_idle_connection(serve):
    server = serve(settings={**SETTINGS, "PREFORK_KEEPALIVE": 60, "PREFORK_MAX_CONNECTIONS": 3})
    server.wait_workers(1)
    socks = []
    try:
        for _ in range(3):
            sock = server.connect()
            sock.sendall(head(b"GET /echo HTTP/1.1", b"Host: x"))
            sock.recv(65536)
            socks.append(sock)
        wait_until(lambda: held_connections(server)["idle"] == 3, message="3 idle connections held")
        assert server.get("/echo")[0] == 200  # a fourth client: room is made for it
        socks[0].settimeout(5)
        assert socks[0].recv(65536) == b"", "the oldest idle connection was not the one closed"
    finally:
        for sock in socks:
            sock.close()


def test_http_client_reuses_one_connection(kept):
    # http.client (what urllib and many SDKs use) keeps a 1.1 connection for the next request.
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", kept.port, timeout=10)
    try:
        ports = set()
        for _ in range(5):
            conn.request("GET", "/echo")
            env = json.loads(conn.getresponse().read())
            ports.add(env["REMOTE_PORT"])
        assert len(ports) == 1
    finally:
        conn.close()


def idle_by_worker(server):
    from django_prefork.management.commands.preforkstatus import fetch_status

    return [(w.get("connections") or {}).get("idle", 0) for w in fetch_status(server.pid)["worker_list"]]


def fast_latencies(server, keep_alive, seconds=4.0, clients=6):
    """The p99 seconds of `clients` loops on a fast view while one client keeps asking for a
    500 ms one; each fast loop keeps its connection (keep_alive) or opens one a request. With
    keep-alive, the fast connections are opened first and both workers hold some of them."""
    import http.client
    import threading

    def connect():
        return http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)

    conns = []
    if keep_alive:
        # Opened at once, each with a request that takes a while, so both workers take some
        # (one after another, the idle worker that wins every accept race could take them all).
        def first_request(conn):
            conn.request("GET", "/sleep?0.3")
            conn.getresponse().read()

        conns = [connect() for _ in range(clients)]
        openers = [threading.Thread(target=first_request, args=(conn,)) for conn in conns]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join()
        wait_until(lambda: min(idle_by_worker(server)) > 0, message="both workers holding fast connections")
    stop = time.monotonic() + seconds
    latencies = []

    def slow_loop():
        conn = connect()
        while time.monotonic() < stop:
            conn.request("GET", "/sleep?0.5")
            conn.getresponse().read()
        conn.close()

    def fast_loop(conn):
        while time.monotonic() < stop:
            if conn is None:
                conn = connect()
            started = time.monotonic()
            conn.request("GET", "/echo", headers={} if keep_alive else {"Connection": "close"})
            response = conn.getresponse()
            response.read()
            latencies.append(time.monotonic() - started)
            assert response.status == 200
            if not keep_alive:
                conn.close()
                conn = None
            time.sleep(0.01)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=slow_loop)]
    threads += [threading.Thread(target=fast_loop, args=(conns[i] if conns else None,)) for i in range(clients)]
    for conn in conns[clients:]:
        conn.close()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    return latencies[int(len(latencies) * 0.99) - 1]
def test_no_request_waits_behind_a_long_one_on_a_kept_connection(serve):
    # Keep-alive clients on a fast view, one client on a 500 ms view, 2 workers: a fast request
    # on a connection of the busy worker goes to the idle one instead of waiting for the slow one.
    settings = {**SETTINGS, "PREFORK_WORKERS": 2, "PREFORK_KEEPALIVE": 30}
    kept_server = serve(settings=settings)
    kept_server.wait_workers(2)
    with_keepalive = fast_latencies(kept_server, keep_alive=True)
    closing_server = serve(settings={**settings, "PREFORK_KEEPALIVE": 0})
    closing_server.wait_workers(2)
    without = fast_latencies(closing_server, keep_alive=False)
    # A fast request waiting for the slow one would take up to 500 ms; the hand-off costs ~20 ms.
    assert with_keepalive < max(0.1, without + 0.05), (with_keepalive, without)
