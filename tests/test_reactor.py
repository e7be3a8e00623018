"""reactor.py in-process: a real listener on 127.0.0.1, no worker, no fork.

The Reactor is driven by hand, as SyncWorker.serve_forever does: next_request(),
wait(), answered(), sweep(now) with a `now` in the future instead of sleeping.
answer_error and end_request are fakes that record what the reactor asked for.
Every wait is a poll with a deadline.
"""

import os
import socket
import time
import types

import pytest

from django_prefork.transport import QUEUE, SPOOL

from django_prefork import lifecycle
from django_prefork import reactor as reactor_module
from django_prefork.http import Limits
from django_prefork.lifecycle import LINGER_SECONDS
from django_prefork.reactor import (DEADLINES, IDLE, LINGERING, READING, STATES, TRANSITIONS, WAITING, WRITING,
                                    Reactor)
from django_prefork.sockets import Listener

GET = b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n"


def get(path=b""):
    return GET % path


class Rig:
    def __init__(self, **overrides):
        values = dict(client_timeout=5.0, keepalive=2.0, max_connections=100, buffer_body=65536, client_min_rate=0)
        values.update(overrides)
        self.config = types.SimpleNamespace(**values)
        self.listener = Listener(socket.create_server(("127.0.0.1", 0)))
        self.address = self.listener.sock.getsockname()
        self.wakeup_r, self.wakeup_w = os.pipe()
        self.errors = []  # (status, reason) answered by the server itself
        self.ends = []  # (status, sent) counted by end_request
        self.reactor = Reactor([self.listener], self.config, self.wakeup_r, self.answer_error, self.end_request)
        self.reactor.limits = Limits(8190, 100, 8190, self.config.client_timeout)
        self.clients = []
        self.popped = []  # ready connections turn_until took from the reactor

    def answer_error(self, conn, exc):
        self.errors.append((exc.status, exc.reason))
        return exc.status, 0

    def end_request(self, status, sent):
        self.ends.append((status, sent))

    def connect(self, data=b""):
        client = socket.create_connection(self.address, timeout=5)
        self.clients.append(client)
        if data:
            client.sendall(data)
        return client

    def next_ready(self, timeout=5.0):
        """The next connection with a complete request, turning the loop as the worker does."""
        deadline = time.monotonic() + timeout
        while True:
            conn = self.reactor.next_request()
            if conn is not None:
                return conn
            if time.monotonic() > deadline:
                raise AssertionError(f"no request ready after {timeout} s; held: {self.reactor.counts()}")
            self.reactor.wait(0.05)

    def turn_until(self, predicate, timeout=5.0, message="condition"):
        """Turn the loop (accepting too, as the worker's next_request() does) until `predicate()`.

        A request that becomes ready meanwhile is kept in `self.popped`.
        """
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {message}; held: {self.reactor.counts()}")
            conn = self.reactor.next_request()
            if conn is not None:
                self.popped.append(conn)
                continue
            self.reactor.wait(0.05)

    def answer(self, conn, keep_alive=True, body=b""):
        """What the app slot does: a response (sent, or queued), then answered()."""
        conn.keep_alive = keep_alive
        if body:
            conn.queue(body)
        self.reactor.answered(conn)

    def held(self, **expected):
        counts = self.reactor.counts()
        return {state: counts[state] for state in expected} == expected

    def close(self):
        for client in self.clients:
            client.close()
        self.reactor.close()
        self.listener.close()
        os.close(self.wakeup_r)
        os.close(self.wakeup_w)


@pytest.fixture
def rig():
    rigs = []

    def make(**overrides):
        made = Rig(**overrides)
        rigs.append(made)
        return made

    yield make
    for made in rigs:
        made.close()


def closed_by_server(client, timeout=5.0):
    """Did the server close `client`'s connection (EOF or RST) within `timeout`?"""
    client.settimeout(timeout)
    try:
        while client.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        return False
    return True


# -- the tables -------------------------------------------------------------------------------


def test_every_state_has_a_deadline_and_a_watch():
    assert set(DEADLINES) == set(STATES)
    assert set(reactor_module._WATCH) == set(STATES)


def test_transitions_join_every_state():
    sources = {source for source, _ in TRANSITIONS}
    targets = set(TRANSITIONS.values())
    assert sources | targets == set(STATES)
    assert targets <= set(STATES) and sources <= set(STATES)
    # Only lingering leaves by closing: every other state moves on.
    assert set(STATES) - sources == {LINGERING}
    # READING is where a connection starts (accept) and IDLE comes back to it.
    assert TRANSITIONS[(IDLE, "bytes come")] == READING


# -- reading ----------------------------------------------------------------------------------


def test_a_request_arriving_with_the_connect_is_ready_without_a_wait(rig):
    r = rig()
    r.connect(get(b"first"))
    conn = r.reactor.next_request()  # no wait(): accept, recv, parse in one call
    assert conn is not None and conn.state == WAITING
    assert conn.reader.request.target == b"/first" and conn.reader.complete
    assert r.reactor.next_request() is None


def test_a_partial_head_waits_for_the_rest(rig):
    r = rig()
    client = r.connect(b"GET /slow HTTP/1.1\r\nHo")
    assert r.reactor.next_request() is None
    assert r.held(reading=1, waiting=0)
    client.sendall(b"st: x\r\n\r\n")
    assert r.reactor.next_request() is None  # nobody read it yet: only wait() does
    conn = r.next_ready()
    assert conn.reader.request.target == b"/slow"


def test_pipelined_requests_become_ready_one_after_another(rig):
    # RFC 9112 §9.3.2: pipelined requests are answered in order, one at a time.
    r = rig()
    r.connect(get(b"1") + get(b"2") + get(b"3"))
    first = r.next_ready()
    assert first.reader.request.target == b"/1"
    assert r.reactor.next_request() is None  # the next one waits until this one is answered
    r.answer(first)
    second = r.reactor.next_request()
    assert second is first and second.reader.request.target == b"/2"
    r.answer(second)
    assert r.reactor.next_request().reader.request.target == b"/3"


def test_a_buffered_body_is_whole_before_the_request_is_ready(rig):
    r = rig()
    client = r.connect(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    assert r.reactor.next_request() is None
    client.sendall(b"67890")
    conn = r.next_ready()
    assert conn.reader.request.buffer.as_input().read() == b"1234567890"


def test_expect_100_continue_is_answered_before_the_body(rig):
    # RFC 9110 §10.1.1: a client waiting for 100 Continue sends its body only then.
    r = rig()
    client = r.connect(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    r.turn_until(lambda: r.reactor.counts()[READING] == 1 and r.reactor.conns, message="the head read")
    assert client.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    client.sendall(b"body")
    assert r.next_ready().reader.complete


@pytest.mark.parametrize("data, status, why", [
    (b"GET / HTTP/1.1\r\n\r\n", 400, "RFC 9112 §3.2: HTTP/1.1 needs exactly one Host"),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "RFC 9110 §15.6.6"),
    (b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 501, "RFC 9110 §9.1: an unknown method is 501"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400,
     "RFC 9112 §6.3: differing lengths (request smuggling, CVE-2019-16785's kind)"),
])
def test_a_bad_request_is_refused_and_lingers(rig, data, status, why):
    r = rig()
    client = r.connect(data)
    assert r.reactor.next_request() is None
    assert [s for s, _ in r.errors] == [status], why
    assert r.ends == [(status, 0)]
    assert r.held(lingering=1)  # RFC 9112 §9.6: half-close, read what still comes, then close
    assert closed_by_server(client)
    r.reactor.sweep(time.monotonic() + LINGER_SECONDS + 0.1)
    assert r.reactor.drained()


def test_a_client_closing_mid_head_is_answered_400(rig):
    r = rig()
    client = r.connect(b"GET / HTTP/1.1\r\nHo")
    assert r.reactor.next_request() is None
    client.shutdown(socket.SHUT_WR)
    r.turn_until(lambda: r.errors, message="the refusal")
    assert r.errors == [(400, "Incomplete request head")]


def test_head_memory_bound_answers_503(rig, monkeypatch):
    monkeypatch.setattr(reactor_module, "HEAD_MEMORY", 10)
    r = rig()
    r.connect(b"GET /a-long-target HTTP/1.1\r\n")
    assert r.reactor.next_request() is None
    assert [s for s, _ in r.errors] == [503]
    assert r.reactor.head_bytes == 0  # the refused head is no longer counted


# -- deadlines (sweep with a future `now`: no sleeping) --------------------------------------------


def test_a_silent_connection_is_dropped_after_the_client_timeout(rig):
    r = rig()
    client = r.connect()
    r.turn_until(lambda: r.reactor.conns, message="the accept")
    assert r.held(reading=1)
    r.reactor.sweep(time.monotonic() + 1)
    assert r.held(reading=1)  # not yet
    r.reactor.sweep(time.monotonic() + r.config.client_timeout + 0.1)
    assert r.reactor.drained() and r.errors == []  # said nothing: closed without a word
    assert closed_by_server(client)


def test_a_head_not_whole_within_the_client_timeout_gets_408(rig):
    # Slowloris: a head trickled forever. RFC 9110 §15.5.9, and no linger for a client too slow for us.
    r = rig()
    client = r.connect(b"GET / HTTP/1.1\r\n")
    assert r.reactor.next_request() is None
    r.reactor.sweep(time.monotonic() + r.config.client_timeout + 0.1)
    assert [s for s, _ in r.errors] == [408] and r.ends == [(408, 0)]
    assert r.reactor.drained()
    assert closed_by_server(client)


def test_a_body_silent_for_the_client_timeout_gets_408(rig):
    r = rig()
    r.connect(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n123")
    assert r.reactor.next_request() is None
    r.reactor.sweep(time.monotonic() + r.config.client_timeout + 0.1)
    assert [s for s, _ in r.errors] == [408]


def test_a_body_below_the_min_rate_gets_408(rig):
    # mod_reqtimeout's MinRate (CVE-2007-6750's slow POST): the first client timeout is free, then windows.
    r = rig(client_min_rate=1000)
    client = r.connect(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n1")
    assert r.reactor.next_request() is None
    conn = next(iter(r.reactor.conns.values()))
    timeout = r.config.client_timeout
    start = conn.body_since
    # Keep it from looking silent: each sweep sees bytes "just heard".
    conn.heard = start + timeout + 1
    r.reactor.sweep(start + timeout + 1)  # the window opens
    assert r.errors == []
    conn.heard = start + 2 * timeout + 1.5
    r.reactor.sweep(start + 2 * timeout + 1.5)  # a window of nothing: 0 bytes/s
    assert [s for s, _ in r.errors] == [408]
    assert "PREFORK_CLIENT_MIN_RATE" in r.errors[0][1]
    client.close()


def test_an_idle_keep_alive_connection_is_dropped_after_keepalive(rig):
    r = rig(keepalive=2.0)
    client = r.connect(get())
    r.answer(r.next_ready())
    assert r.held(idle=1)
    r.reactor.sweep(time.monotonic() + 1.0)
    assert r.held(idle=1)
    r.reactor.sweep(time.monotonic() + 2.1)
    assert r.reactor.drained() and r.errors == []
    assert closed_by_server(client)


def test_an_idle_connection_comes_back_to_reading(rig):
    r = rig()
    client = r.connect(get(b"1"))
    r.answer(r.next_ready())
    client.sendall(get(b"2"))
    conn = r.next_ready()
    assert conn.reader.request.target == b"/2" and conn.served == 1


# -- writing ------------------------------------------------------------------------------------


def test_a_response_the_client_has_not_taken_is_finished_by_the_loop(rig):
    r = rig()
    client = r.connect(get())
    conn = r.next_ready()
    body = b"x" * (4 << 20)  # more than the socket buffers hold
    r.answer(conn, body=body)
    assert r.held(writing=1) and r.reactor.queued > 0
    assert r.reactor.may_queue(reactor_module.QUEUE_LIMIT) is not QUEUE  # what is queued counts against the limit
    client.setblocking(False)
    got = bytearray()

    def read_some():
        try:
            got.extend(client.recv(1 << 20))
        except BlockingIOError:
            pass
        return len(got) == len(body) and r.held(idle=1)

    r.turn_until(read_some, message="the whole body and idle")
    assert bytes(got) == body and r.reactor.queued == 0


def test_a_client_reading_nothing_is_dropped_after_the_client_timeout(rig):
    r = rig()
    r.connect(get())
    r.answer(r.next_ready(), body=b"x" * (4 << 20))
    assert r.held(writing=1)
    r.reactor.sweep(time.monotonic() + r.config.client_timeout + 0.1)
    assert r.reactor.drained() and r.reactor.queued == 0


def test_memory_then_files_then_nowhere(rig):
    r = rig()
    assert r.reactor.may_queue(0) is QUEUE and r.reactor.may_queue(reactor_module.QUEUE_LIMIT) is QUEUE
    assert r.reactor.may_queue(reactor_module.QUEUE_LIMIT + 1) is SPOOL  # past memory: a temporary file
    assert r.reactor.may_queue(reactor_module.SPOOL_LIMIT) is None  # past the files' bound: the app waits


# -- bounds ---------------------------------------------------------------------------------------


def test_when_full_the_oldest_idle_connection_makes_room(rig):
    r = rig(max_connections=2)
    oldest = r.connect(get(b"a"))
    r.answer(r.next_ready())
    newer = r.connect(get(b"b"))
    r.answer(r.next_ready())
    assert r.held(idle=2)
    r.connect(get(b"c"))
    conn = r.next_ready()
    assert conn.reader.request.target == b"/c"
    assert closed_by_server(oldest)
    assert len(r.reactor.conns) == 2
    newer.setblocking(False)
    with pytest.raises(BlockingIOError):
        newer.recv(1)  # still open


def test_when_full_with_nothing_idle_the_listen_queue_keeps_the_client(rig):
    r = rig(max_connections=1)
    r.connect(b"GET / HTTP/1.1\r\n")  # holds the only place, reading
    assert r.reactor.next_request() is None
    r.connect(get(b"waiting"))
    for _ in range(3):
        r.reactor.wait(0.02)
        assert r.reactor.next_request() is None
    assert len(r.reactor.conns) == 1


# -- stopping -------------------------------------------------------------------------------------


def test_stop_closes_idle_gives_silent_a_moment_and_keeps_the_rest(rig):
    r = rig()
    idle = r.connect(get(b"idle"))
    r.answer(r.next_ready())
    silent = r.connect()
    r.turn_until(lambda: len(r.reactor.conns) == 2, message="the second accept")
    partial = r.connect(b"GET /partial HTTP/1.1\r\n")
    r.turn_until(lambda: len(r.reactor.conns) == 3, message="the third accept")
    ready = r.connect(get(b"ready"))
    waiting = r.next_ready()
    r.reactor.stop(None)
    assert closed_by_server(idle)
    # A connection that said nothing may be a queued request on its way: SILENT_AT_STOP to say it.
    assert r.held(reading=2, waiting=1)
    r.reactor.sweep(time.monotonic() + lifecycle.SILENT_AT_STOP)
    assert closed_by_server(silent)
    assert r.held(reading=1, waiting=1)
    assert not r.reactor.drained()
    # The queue is drained: the partial head may still become a request, answered with a close.
    partial.sendall(b"Host: x\r\n\r\n")
    r.answer(waiting)  # keep_alive asked, but stopping closes it
    assert closed_by_server(ready)
    last = r.next_ready()
    assert last.reader.request.target == b"/partial"
    r.answer(last)
    assert r.reactor.drained()


def test_stop_accepts_no_more(rig):
    r = rig()
    r.reactor.stop(None)
    r.connect(get())
    for _ in range(3):
        r.reactor.wait(0.02)
        assert r.reactor.next_request() is None
    assert r.reactor.drained()


def test_stop_with_a_quota_takes_that_many_queued_connections(rig):
    r = rig()
    r.connect(get(b"1"))
    r.connect(get(b"2"))
    r.reactor.stop(1)
    r.answer(r.next_ready())
    for _ in range(3):
        r.reactor.wait(0.02)
        assert r.reactor.next_request() is None
    assert r.reactor.drained()


# -- counts and close -----------------------------------------------------------------------------


def test_counts_by_state(rig):
    r = rig()
    assert r.reactor.counts() == dict.fromkeys(STATES, 0)
    r.connect(get(b"idle"))
    r.answer(r.next_ready())
    r.connect(get(b"waiting"))
    r.next_ready()
    r.connect(b"GET / HTTP/1.1\r\n")
    r.turn_until(lambda: len(r.reactor.conns) == 3, message="the third accept")
    assert r.reactor.counts() == {READING: 1, WAITING: 1, WRITING: 0, IDLE: 1, LINGERING: 0}


def test_close_drops_every_connection(rig):
    r = rig()
    client = r.connect(get())
    r.next_ready()
    r.reactor.close()
    assert r.reactor.conns == {}
    assert closed_by_server(client)
    r.reactor = types.SimpleNamespace(close=lambda: None)  # closed once: the fixture's close is a no-op


def test_the_wakeup_pipe_ends_a_wait(rig):
    r = rig()
    os.write(r.wakeup_w, b"x")
    started = time.monotonic()
    assert r.reactor.wait(5) is True
    assert time.monotonic() - started < 1
