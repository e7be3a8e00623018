"""worker.py without forking: SyncWorker's pieces, driven with fakes and a socketpair.

run() ends in os._exit and serve_forever() loops until a signal: both stay
the server tests' (test_keepalive.py, test_arbiter.py, test_master.py). Here:
the decisions (leaving, last request, what a TERM still serves), the app
slot's handle(), and the timeout's 500 (answer_timed_out).
"""

import socket
import time
import types

import h11
import pytest

from django_prefork import http, transport, worker, wsgi
from django_prefork.heartbeat import Heartbeat
from django_prefork.sockets import Listener
from django_prefork.worker import SyncWorker

CONFIG = dict(keepalive=5.0, client_timeout=5.0, limit_request_line=8190, limit_request_fields=100,
              limit_request_field_size=8190, client_min_rate=0, timeout=30, access_log=False,
              access_log_format="runserver", forwarded_allow_ips=("127.0.0.1",), backlog=64, gc_freeze=False,
              limit_request_body=0, threads=1)


class FakeReactor:
    swept = 1.0

    def __init__(self):
        self.answered_conns = []
        self.app_busy = []

    def app_started(self):
        self.app_busy.append(True)

    def app_done(self):
        self.app_busy.append(False)

    def answered(self, conn):
        self.answered_conns.append((conn, conn.keep_alive))

    def counts(self):
        return {"reading": 1, "idle": 2}

    def may_queue(self, size):
        return False


class FakeSlot:
    def __init__(self):
        self.ended, self.published = [], []

    def end_request(self, status, sent):
        self.ended.append((status, sent))

    def set_connections(self, counts):
        self.published.append(counts)


@pytest.fixture
def make_worker(tmp_path):
    made = []

    def make(max_requests=0, slot=None, app=None, **config):
        listener = Listener(socket.create_server(("127.0.0.1", 0)))
        beat = Heartbeat(str(tmp_path))
        cfg = types.SimpleNamespace(**{**CONFIG, **config})
        w = SyncWorker(1, 0, [listener], beat, cfg, load_app=lambda: app, max_requests=max_requests, slot=slot)
        w.reactor = FakeReactor()
        if app is not None:
            w.contexts = {listener.fileno(): wsgi.WorkerContext(app, listener, cfg, beat, w.last_request,
                                                                w.reactor.may_queue)}
        made.append((listener, beat))
        return w

    yield make
    for listener, beat in made:
        listener.close()
        beat.close()


def connection_with(worker_, raw):
    """A socketpair connection holding `raw`, read as the reactor would; and the client's end."""
    server, client = socket.socketpair()
    client.settimeout(5)
    listener_fd = worker_.listeners[0].fileno()
    conn = transport.Connection(server, ("127.0.0.1", 40000), listener_fd=listener_fd)
    context = worker_.contexts.get(listener_fd)
    conn.reader = http.Reader(context.limits if context else http.Limits(8190, 100, 8190), 65536)
    conn.reader.feed(raw)
    return conn, client


def read_response(client, method=b"GET"):
    parser = h11.Connection(h11.CLIENT)
    parser.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    parser.send(h11.EndOfMessage())
    body = b""
    while True:
        event = parser.next_event()
        if event is h11.NEED_DATA:
            parser.receive_data(client.recv(65536))
            continue
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return response, body


def hello(environ, start_response):
    start_response("200 OK", [("Content-Length", "5")])
    return [b"hello"]


GET = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"


# -- the decisions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alive, recycle, leaving", [
    (True, False, False),
    (False, False, True),  # TERM
    (True, True, True),  # USR2 or max requests: its successor runs already
    (False, True, True),
])
def test_leaving(make_worker, alive, recycle, leaving):
    w = make_worker()
    w.alive, w.recycle = alive, recycle
    assert w.leaving() is leaving


@pytest.mark.parametrize("max_requests, served, leaving, last", [
    (0, 1000, False, False),  # no PREFORK_MAX_REQUESTS: never the last
    (3, 0, False, False),
    (3, 1, False, False),
    (3, 2, False, True),  # the third request: its response says Connection: close
    (3, 5, False, True),
    (0, 0, True, True),  # leaving: every response closes
])
def test_last_request(make_worker, max_requests, served, leaving, last):
    w = make_worker(max_requests=max_requests)
    w.served, w.alive = served, not leaving
    assert w.last_request() is last


def test_queued_at_stop_a_recycle_leaves_the_queue_to_the_successor(make_worker, monkeypatch):
    monkeypatch.setattr(worker, "queued_connections", lambda *args: pytest.fail("not asked on a recycle"))
    w = make_worker()
    w.recycle = True
    assert w.queued_at_stop() == 0


def test_queued_at_stop_after_term_counts_the_listen_queues(make_worker, monkeypatch):
    asked = []
    monkeypatch.setattr(worker, "queued_connections", lambda listeners, fallback: asked.append(
        (listeners, fallback)) or 7)
    w = make_worker(backlog=128)
    w.alive = False
    assert w.queued_at_stop() == 7
    assert asked == [(w.listeners, 128)]  # the backlog: where the kernel cannot count them


def test_queued_at_stop_on_a_real_listener(make_worker):
    w = make_worker(backlog=64)
    w.alive = False
    address = w.listeners[0].sock.getsockname()
    clients = [socket.create_connection(address, timeout=5) for _ in range(2)]
    try:
        assert w.queued_at_stop() in (2, 64)  # 2 where the kernel counts them (Linux), else the backlog
    finally:
        for client in clients:
            client.close()


def test_publish_connections_gives_the_slot_the_reactors_counts(make_worker):
    slot = FakeSlot()
    w = make_worker(slot=slot)
    w.publish_connections()
    assert slot.published == [{"reading": 1, "idle": 2}]
    make_worker().publish_connections()  # no slot: nothing to do, no error


# -- the app slot ---------------------------------------------------------------------------------


def test_handle_serves_counts_and_hands_the_connection_back(make_worker):
    slot = FakeSlot()
    w = make_worker(slot=slot, app=hello)
    conn, client = connection_with(w, GET)
    w.handle(conn)
    response, body = read_response(client)
    assert (response.status_code, body) == (200, b"hello")
    assert slot.ended == [(200, 5)] and w.served == 1
    assert w.reactor.answered_conns == [(conn, True)]
    assert w.context_of_request is None
    conn.close()
    client.close()


def test_handle_without_a_slot_clears_the_heartbeat(make_worker):
    w = make_worker(app=hello)
    conn, client = connection_with(w, GET)
    w.heartbeat.start_request(b"GET", b"/x")
    w.handle(conn)
    assert w.heartbeat.current_request() is None
    conn.close()
    client.close()


def test_the_last_request_before_max_requests_closes_and_recycles(make_worker):
    w = make_worker(max_requests=2, app=hello)
    for expected_keep_alive in (True, False):
        conn, client = connection_with(w, GET)
        w.handle(conn)
        assert w.reactor.answered_conns[-1] == (conn, expected_keep_alive)
        conn.close()
        client.close()
    assert w.recycle is True and w.served == 2


def test_a_bug_in_serve_connection_costs_one_connection_not_the_worker(make_worker, monkeypatch):
    def broken(conn, context):
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(worker, "serve_connection", broken)
    slot = FakeSlot()
    w = make_worker(slot=slot, app=hello)
    conn, client = connection_with(w, GET)
    conn.keep_alive = True
    w.handle(conn)
    assert w.reactor.answered_conns == [(conn, False)]
    assert slot.ended == [(0, 0)] and w.context_of_request is None
    conn.close()
    client.close()


def test_refuse_answers_through_the_listeners_context(make_worker):
    w = make_worker(app=hello)
    conn, client = connection_with(w, GET)
    assert w.refuse(conn, http.HTTPError(408, "Request Timeout")) == (408, len(b"408 Request Timeout\n"))
    response, body = read_response(client)
    assert (response.status_code, body) == (408, b"408 Request Timeout\n")
    conn.close()
    client.close()


# -- the timeout's 500 ------------------------------------------------------------------------------


def timed_out_worker(make_worker, head_sent=False, request=True, closed=False, head_only=False):
    w = make_worker(app=hello)
    conn, client = connection_with(w, GET)
    response = wsgi.Response(conn, head_only, True)
    response.head_sent = head_sent
    w.context_of_request = types.SimpleNamespace(response=response)
    if request:
        w.heartbeat.start_request(b"GET", b"/slow")
    if closed:
        conn.close()
    return w, conn, client


def test_answer_timed_out_sends_500_and_lingers(make_worker):
    w, conn, client = timed_out_worker(make_worker)
    conn.queue(b"stale bytes never sent")  # dropped: the 500 is the whole answer
    client.shutdown(socket.SHUT_WR)  # the client's end: the linger ends at once
    started = time.monotonic()
    counted = w.answer_timed_out()
    assert time.monotonic() - started < 1  # did not linger its full LINGER_SECONDS
    response, body = read_response(client)
    assert response.status_code == 500 and body.startswith(b"500 Internal Server Error: the request timed out")
    assert counted == (500, len(body))  # what the counters get: the answer the client saw
    assert (b"connection", b"close") in [(n, v) for n, v in response.headers]
    conn.close()
    client.close()


def test_answer_timed_out_to_a_head_request_has_no_body(make_worker):
    w, conn, client = timed_out_worker(make_worker, head_only=True)
    client.shutdown(socket.SHUT_WR)
    w.answer_timed_out()
    response, body = read_response(client, method=b"HEAD")
    assert (response.status_code, body) == (500, b"")
    conn.close()
    client.close()


@pytest.mark.parametrize("kwargs, counted, why", [
    ({"head_sent": True}, (200, 0), "the client has a status already: the close tells it the rest"),
    ({"request": False}, (0, 0), "idle: no request to answer, none to count"),
    ({"closed": True}, (500, 0), "a finished request's socket is closed: never written to; the request failed"),
])
def test_answer_timed_out_says_nothing_when_it_must_not(make_worker, kwargs, counted, why):
    w, conn, client = timed_out_worker(make_worker, **kwargs)
    if kwargs.get("head_sent"):
        w.context_of_request.response.status_code = 200
    assert w.answer_timed_out() == counted, why
    conn.close()
    client.settimeout(5)
    assert client.recv(100) == b"", why
    client.close()


def test_answer_timed_out_between_requests(make_worker):
    w = make_worker(app=hello)
    w.heartbeat.start_request(b"GET", b"/x")
    w.context_of_request = None
    w.answer_timed_out()  # nothing to answer through, and no error
