"""wsgi.py: a live server's environ (first), then serve_connection() unit by unit (below).

The live part: what the environ says about the client and its proxy.

PREFORK_FORWARDED_ALLOW_IPS (docs/deploy.md): a trusted peer's `X-Forwarded-Proto:
https` makes `wsgi.url_scheme` https, so a site moved from gunicorn behind
nginx keeps working with SECURE_SSL_REDIRECT and no SECURE_PROXY_SSL_HEADER.
"""

import json
import socket

import pytest

from django_prefork.transport import QUEUE

from .helpers import h11_client, head, receive_all, split

RAW_APPS = "tests.fixtureapp.rawapps.application"


def scheme_seen(server, proto, source="127.0.0.1"):
    """wsgi.url_scheme the app sees for a request from `source` saying X-Forwarded-Proto: `proto`."""
    if server.url.startswith("unix:"):
        sock = server.connect()
    else:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10, source_address=(source, 0))
    try:
        sock.sendall(head(b"GET /echo HTTP/1.1", b"Host: x", b"X-Forwarded-Proto: " + proto))
        sock.shutdown(socket.SHUT_WR)
        return json.loads(split(receive_all(sock))[1])["wsgi.url_scheme"]
    finally:
        sock.close()


@pytest.mark.parametrize("allowed, source, expected", [
    (None, "127.0.0.1", "https"),  # the default trusts the loopback proxy, as gunicorn does
    (None, "127.0.0.2", "http"),  # another peer, even on this machine, is not the proxy
    (["10.0.0.1"], "127.0.0.1", "http"),
    (["127.0.0.0/8"], "127.0.0.2", "https"),
    (["*"], "127.0.0.2", "https"),
    ([], "127.0.0.1", "http"),
], ids=["default-loopback", "default-other-peer", "other-proxy-only", "network", "star", "none"])
def test_forwarded_proto_is_trusted_from_allowed_peers_only(serve, allowed, source, expected):
    settings = {"PREFORK_WORKERS": 1, "WSGI_APPLICATION": RAW_APPS}
    if allowed is not None:
        settings["PREFORK_FORWARDED_ALLOW_IPS"] = allowed
    server = serve(settings=settings)
    assert scheme_seen(server, b"https", source) == expected
    assert scheme_seen(server, b"http", source) == "http"


def test_forwarded_proto_takes_the_first_value_as_django_does(serve):
    server = serve(settings={"PREFORK_WORKERS": 1, "WSGI_APPLICATION": RAW_APPS})
    assert scheme_seen(server, b"HTTPS, http") == "https"
    assert scheme_seen(server, b"http, https") == "http"


def test_script_name_mounts_the_app_under_its_prefix(serve):
    server = serve(env={"SCRIPT_NAME": "/sub"}, settings={"PREFORK_WORKERS": 1, "WSGI_APPLICATION": RAW_APPS})
    status, body = server.get("/sub/echo?x=1")
    assert status == 200
    seen = json.loads(body)
    assert (seen["SCRIPT_NAME"], seen["PATH_INFO"], seen["QUERY_STRING"]) == ("/sub", "/echo", "x=1")
    assert server.get("/echo")[0] == 404  # outside the mount: nothing of the app's is there


def test_a_unix_socket_peer_is_always_trusted(serve, tmp_path):
    server = serve(addr=f"unix:{tmp_path}/app.sock", settings={
        "PREFORK_WORKERS": 1, "WSGI_APPLICATION": RAW_APPS, "PREFORK_FORWARDED_ALLOW_IPS": [],
    })
    assert scheme_seen(server, b"https") == "https"


# -- Unit: serve_connection() as a fixed sequence, against a socketpair (waitress's dummy channel) ----------
#
# No server: the request is fed through http.Reader, as the event loop does, and
# the client's end of a socketpair reads what wsgi.py wrote; h11 (as a client)
# judges the bytes, so a framing mistake fails here and not only in a browser.

import io
import os
import sys
import threading
import types

import h11

from django_prefork import http, transport, wsgi

CLIENT = ("127.0.0.1", 54321)


def config(**overrides):
    """The fields of conf.Config that WorkerContext reads."""
    values = dict(keepalive=5.0, client_timeout=5.0, limit_request_line=8190, limit_request_fields=100,
                  limit_request_field_size=8190, client_min_rate=0, timeout=0, access_log=False,
                  access_log_format="runserver", forwarded_allow_ips=("127.0.0.1",), limit_request_body=0, threads=1)
    values.update(overrides)
    return types.SimpleNamespace(**values)


class FakeHeartbeat:
    def __init__(self):
        self.started = []

    def start_request(self, method, target):
        self.started.append((method, target))


class FakeListener:
    def __init__(self, family=socket.AF_INET):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.host, self.port = ("localhost", "80") if family == socket.AF_UNIX else ("127.0.0.1", "8000")

    def close(self):
        self.sock.close()


class Exchange:
    """One request through serve_connection(); the client end read to its close in a thread."""

    def __init__(self, raw, app, buffer_body=65536, stopping=lambda: False, may_queue=None, family=socket.AF_INET,
                 **config_overrides):
        self.listener = FakeListener(family)
        self.heartbeat = FakeHeartbeat()
        self.context = wsgi.WorkerContext(app, self.listener, config(**config_overrides), self.heartbeat,
                                          stopping=stopping, may_queue=may_queue)
        server, self.client = socket.socketpair()
        self.client.settimeout(10)
        self.conn = transport.Connection(server, None if family == socket.AF_UNIX else CLIENT,
                                         unix=family == socket.AF_UNIX)
        reader = http.Reader(self.context.limits, buffer_body)
        used = reader.feed(raw)
        assert reader.complete, "the table's request must be whole: the reactor hands over no other"
        self.conn.reader, self.conn.inbuf = reader, raw[used:]
        self.received = bytearray()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while data := self.client.recv(65536):
                self.received += data
        except OSError:
            pass

    def serve(self):
        self.result = wsgi.serve_connection(self.conn, self.context)
        self.keep_alive = self.conn.keep_alive
        self.out_file = self.conn.out_file
        return self

    def finish(self):
        """What the event loop would do: send what was queued, then close; the client's bytes."""
        self.conn.wait_flushed(None, 5)
        self.conn.close()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the client never saw the close"
        self.client.close()
        self.listener.close()
        return bytes(self.received)


def run(raw, app, **kwargs):
    exchange = Exchange(raw, app, **kwargs).serve()
    exchange.data = exchange.finish()
    return exchange


def parse(data, method=b"GET"):
    """h11, as a client that sent `method`: (Response, body, whole?, the raw head)."""
    client = h11_client(method, data)
    client.receive_data(b"")
    response, body, whole = None, b"", False
    try:
        while True:
            event = client.next_event()
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                whole = True
            elif event in (h11.NEED_DATA, h11.PAUSED) or isinstance(event, h11.ConnectionClosed):
                break
    except h11.RemoteProtocolError:
        whole = False  # e.g. the close came before the Content-Length's end
    return response, body, whole, data.split(b"\r\n\r\n", 1)[0]


def headers_of(response):
    return [(name.decode(), value.decode()) for name, value in response.headers]


def header(response, name):
    values = [v for n, v in headers_of(response) if n == name.lower()]
    return values[0] if len(values) == 1 else values or None


def request(*lines, body=b""):
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


GET11 = request(b"GET /path?q=1 HTTP/1.1", b"Host: example.com")
GET11_CLOSE = request(b"GET / HTTP/1.1", b"Host: x", b"Connection: close")
GET10 = request(b"GET / HTTP/1.0")
GET10_KEEP = request(b"GET / HTTP/1.0", b"Connection: keep-alive")
HEAD11 = request(b"HEAD / HTTP/1.1", b"Host: x")


def app_of(status="200 OK", headers=(("Content-Type", "text/plain"),), body=(b"hello",), length=True):
    def app(environ, start_response):
        sent = list(headers)
        if length:
            sent.append(("Content-Length", str(sum(map(len, body)))))
        start_response(status, sent)
        return list(body)
    return app


def chunked_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hel", b"lo"]


# (id, request, app, Exchange kwargs, status, body, keep_alive, Connection header, why)
KEEP_ALIVE_CASES = [
    ("1.1-default", GET11, app_of(), {}, 200, b"hello", True, None,
     "RFC 9112 §9.3: HTTP/1.1 persists unless either side says close"),
    ("1.1-chunked", GET11, chunked_app, {}, 200, b"hello", True, None,
     "RFC 9112 §7.1: no length, HTTP/1.1: chunked keeps the connection"),
    ("1.1-close", GET11_CLOSE, app_of(), {}, 200, b"hello", False, "close",
     "RFC 9112 §9.6: the client's close is echoed and honoured"),
    ("1.0-default", GET10, app_of(), {}, 200, b"hello", False, "close",
     "RFC 9112 §9.3: HTTP/1.0 closes unless keep-alive is asked"),
    ("1.0-keep-alive", GET10_KEEP, app_of(), {}, 200, b"hello", True, "keep-alive",
     "RFC 9112 §C.2.2: a 1.0 keep-alive is answered with Connection: keep-alive"),
    ("1.0-keep-alive-no-length", GET10_KEEP, chunked_app, {}, 200, b"hello", False, "close",
     "RFC 9112 §6.3 (8): no length to a 1.0 client: the close delimits the body"),
    ("keepalive-0", GET11, app_of(), {"keepalive": 0}, 200, b"hello", False, "close",
     "PREFORK_KEEPALIVE = 0: every response closes"),
    ("stopping", GET11, app_of(), {"stopping": lambda: True}, 200, b"hello", False, "close",
     "a worker on its way out (TERM, recycle) closes every connection after its response"),
    ("204", GET11, app_of("204 No Content", body=(b"dropped",)), {}, 204, b"", True, None,
     "RFC 9110 §15.3.5: 204 has no body, and no framing to keep the connection from"),
    ("304", GET11, app_of("304 Not Modified", body=()), {}, 304, b"", True, None,
     "RFC 9110 §15.4.5: 304 has no body"),
]


@pytest.mark.parametrize("raw, app, kwargs, status, body, keep_alive, connection, why",
                         [case[1:] for case in KEEP_ALIVE_CASES], ids=[case[0] for case in KEEP_ALIVE_CASES])
def test_serve_connection_frames_and_keeps_alive(raw, app, kwargs, status, body, keep_alive, connection, why):
    exchange = run(raw, app, **kwargs)
    response, got, whole, head = parse(exchange.data)
    assert (response.status_code, got, whole) == (status, body, True), why
    assert exchange.keep_alive == keep_alive, why  # keepalive 0 leaves a falsy 0 here, not False
    assert header(response, "connection") == connection, why
    assert exchange.result == (status, len(body))
    assert header(response, "date") is not None and head.count(b"\r\nDate: ") == 1
    if status in (204, 304):
        assert header(response, "content-length") is None and header(response, "transfer-encoding") is None, why


def test_serve_connection_names_the_request_to_the_heartbeat():
    exchange = run(GET11, app_of())
    assert exchange.heartbeat.started == [(b"GET", b"/path?q=1")]


def test_head_has_no_body_but_keeps_its_content_length():
    # RFC 9110 §9.3.2: HEAD's answer is GET's head, Content-Length included; no body bytes.
    exchange = run(HEAD11, app_of(body=(b"hello",)))
    response, body, whole, head = parse(exchange.data, method=b"HEAD")
    assert (response.status_code, body, whole, header(response, "content-length")) == (200, b"", True, "5")
    assert exchange.data.endswith(b"\r\n\r\n") and exchange.keep_alive


def test_head_without_a_length_is_not_chunked():
    exchange = run(HEAD11, chunked_app)
    assert exchange.data.endswith(b"\r\n\r\n") and b"0\r\n\r\n" not in exchange.data
    assert exchange.keep_alive


def _raises_before_head(environ, start_response):
    raise RuntimeError("boom")


def _raises_after_start(environ, start_response):
    start_response("200 OK", [("Content-Length", "5")])
    raise RuntimeError("boom")


def _raises_mid_body(environ, start_response):
    start_response("200 OK", [])
    yield b"part"
    raise RuntimeError("boom")


def _short(environ, start_response):
    start_response("200 OK", [("Content-Length", "10")])
    return [b"12345"]


def _long(environ, start_response):
    start_response("200 OK", [("Content-Length", "3")])
    return [b"12345"]


def _header(name, value):
    def app(environ, start_response):
        start_response("200 OK", [(name, value), ("Content-Length", "2")])
        return [b"ok"]
    return app


def _status(status):
    def app(environ, start_response):
        start_response(status, [("Content-Length", "2")])
        return [b"ok"]
    return app


def _twice(environ, start_response):
    start_response("200 OK", [])
    start_response("200 OK", [])
    return [b"ok"]


def _lengths(*values):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", v) for v in values])
        return [b"ok"]
    return app


# (id, app, status, body, whole, why): what the client gets when the app misbehaves
APP_ERROR_CASES = [
    ("raises-before-head", _raises_before_head, 500, b"500 Internal Server Error\n", True,
     "PEP 3333: an error before the head is the server's 500"),
    ("raises-after-start-response", _raises_after_start, 500, b"500 Internal Server Error\n", True,
     "start_response sends nothing: the 500 replaces the head never sent"),
    ("raises-mid-body", _raises_mid_body, 200, b"part", False,
     "after the head only the close can tell: no last chunk (RFC 9112 §7.1)"),
    ("short-body", _short, 200, b"12345", False,
     "RFC 9112 §6.3: a body short of its Content-Length is incomplete: close"),
    ("long-body", _long, 200, b"123", True, "the body is cut to its Content-Length, never past it"),
    ("crlf-in-value", _header("X-A", "a\r\nSet-Cookie: evil=1"), 500, b"500 Internal Server Error\n", True,
     "response splitting (CWE-113, CVE-2019-9740's kind): refused"),
    ("lf-in-value", _header("X-A", "a\nSet-Cookie: evil=1"), 500, b"500 Internal Server Error\n", True,
     "a bare LF splits a response too"),
    ("nul-in-value", _header("X-A", "a\0b"), 500, b"500 Internal Server Error\n", True,
     "RFC 9110 §5.5: NUL is never a field value byte"),
    ("control-in-value", _header("X-A", "a\x01b"), 500, b"500 Internal Server Error\n", True,
     "RFC 9110 §5.5: controls other than HTAB are refused"),
    ("space-in-name", _header("X A", "v"), 500, b"500 Internal Server Error\n", True,
     "RFC 9110 §5.1: a field name is a token"),
    ("colon-in-name", _header("X-A: b\r\nX-B", "v"), 500, b"500 Internal Server Error\n", True,
     "an injected name splits the head too"),
    ("non-latin-1", _header("X-A", "\u2603"), 500, b"500 Internal Server Error\n", True,
     "PEP 3333: header values are latin-1 native strings"),
    ("bad-status", _status("20 OK"), 500, b"500 Internal Server Error\n", True,
     "RFC 9112 §4: a status is three digits"),
    ("1xx-status", _status("101 Switching Protocols"), 500, b"500 Internal Server Error\n", True,
     "a 1xx cannot end a response; 101 would switch protocols"),
    ("crlf-in-status", _status("200 OK\r\nX-A: b"), 500, b"500 Internal Server Error\n", True,
     "response splitting through the status line"),
    ("start-response-twice", _twice, 500, b"500 Internal Server Error\n", True,
     "PEP 3333: a second start_response needs exc_info"),
    ("two-lengths", _lengths("2", "3"), 500, b"500 Internal Server Error\n", True,
     "RFC 9110 §8.6: differing Content-Lengths are never sent"),
    ("bad-length", _lengths("2x"), 500, b"500 Internal Server Error\n", True,
     "RFC 9110 §8.6: Content-Length is digits"),
]


@pytest.mark.parametrize("app, status, body, whole, why", [case[1:] for case in APP_ERROR_CASES],
                         ids=[case[0] for case in APP_ERROR_CASES])
def test_a_misbehaving_app_gets_a_well_formed_answer_or_a_close(app, status, body, whole, why):
    exchange = run(GET11, app)
    response, got, got_whole, head = parse(exchange.data)
    assert (response.status_code, got, got_whole) == (status, body, whole), why
    assert b"evil" not in head and b"X-B" not in head, why
    if status == 500 or not whole:
        assert exchange.keep_alive is False, why
    if status == 500:
        assert header(response, "connection") == "close"


def test_the_same_content_length_twice_is_said_once():
    exchange = run(GET11, _lengths("2", "2"))
    response, body, whole, head = parse(exchange.data)
    assert (response.status_code, body, whole, head.count(b"Content-Length")) == (200, b"ok", True, 1)


def test_a_header_line_checked_once_is_reused_and_a_bad_one_never_kept():
    good, evil = ("X-Cached", "v"), ("X-Cached", "v\r\nSet-Cookie: evil=1")
    for _ in range(2):
        response, body, whole, head = parse(run(GET11, _header(*good)).data)
        assert (response.status_code, header(response, "x-cached")) == (200, "v")
    assert (good in wsgi._LINES, evil in wsgi._LINES) == (True, False)
    response, body, whole, head = parse(run(GET11, _header(*evil)).data)
    assert response.status_code == 500 and b"evil" not in head  # a known name, a new value: checked


def test_header_lines_that_never_repeat_are_not_kept():
    for value in ("session=abc", "x" * 300):
        run(GET11, _header("Set-Cookie" if "=" in value else "X-Long", value))
    assert not any(name in ("Set-Cookie", "X-Long") for name, _ in wsgi._LINES)


def test_a_kept_content_length_line_still_frames_each_response():
    for _ in range(2):
        response, body, whole, head = parse(run(GET11, _long).data)
        assert (body, whole) == (b"123", True)


@pytest.mark.parametrize("raw, said_all", [(GET11_CLOSE, True), (GET11, False), (GET10, True), (GET10_KEEP, False)])
def test_a_client_that_said_its_request_was_its_last(raw, said_all):
    # It sends nothing after: closing needs no look for unread input (transport.unread_input).
    exchange = Exchange(raw, app_of())
    exchange.serve()
    assert exchange.conn.said_all is said_all
    exchange.finish()


def test_an_upgrade_request_is_closed_by_us_not_by_its_client():
    # The server refuses to switch protocols and closes (Request.keep_alive), but the
    # client never said the request was its last: what it sends after must still be
    # looked for, so the close lingers instead of resetting the response away.
    raw = request(b"GET / HTTP/1.1", b"Host: x", b"Connection: Upgrade", b"Upgrade: websocket")
    exchange = Exchange(raw, app_of())
    exchange.serve()
    assert exchange.keep_alive is False
    exchange.client.sendall(GET11)
    assert exchange.conn.said_all is False
    assert exchange.conn.unread_input()
    exchange.finish()


@pytest.mark.parametrize("raw, after", [
    (request(b"POST / HTTP/1.0", b"Content-Length: 2") + b"ab", b"\r\n"),  # an old browser's CRLF after a POST body
    (request(b"POST / HTTP/1.1", b"Host: x", b"Connection: close", b"Content-Length: 2") + b"ab", b"c"),  # excess body
], ids=["crlf-after-body", "excess-body"])
def test_what_follows_a_last_request_with_a_body_is_still_looked_for(raw, after):
    # RFC 9112 §9.6: closing over unread input resets the connection, and the response
    # the kernel still holds is lost. The old code lingered here; a request with a body
    # is where such bytes come (RFC 9112 §2.2's extra CRLF, a miscounted Content-Length).
    exchange = Exchange(raw, app_of())
    exchange.serve()
    exchange.client.sendall(after)
    assert exchange.conn.unread_input()
    exchange.finish()


def test_a_request_without_a_body_reads_as_empty_every_way():
    seen = []

    def app(environ, start_response):
        body = environ["wsgi.input"]
        seen.append((body.read(), body.read(5), body.readline(), body.readlines(), list(body),
                     next(body, "end")))  # an iterator, as a Body is: a bodyless request's input too
        start_response("200 OK", [("Content-Length", "0")])
        return []

    run(GET11, app)
    assert seen == [(b"", b"", b"", [], [], "end")]


HOP_BY_HOP_HEADERS = [
    ("Connection", "keep-alive"), ("Keep-Alive", "timeout=99"), ("Proxy-Authenticate", "Basic"),
    ("Proxy-Authorization", "x"), ("TE", "trailers"), ("Trailer", "X-T"), ("Transfer-Encoding", "chunked"),
    ("Upgrade", "websocket"),
]


def test_hop_by_hop_headers_are_dropped():
    # RFC 9110 §7.6.1 and PEP 3333 ("hop-by-hop headers are the server's"): the connection is ours.
    exchange = run(GET11_CLOSE, app_of(headers=HOP_BY_HOP_HEADERS + [("X-Kept", "1")]))
    response, body, whole, head = parse(exchange.data)
    assert (response.status_code, body, whole) == (200, b"hello", True)
    names = [name for name, _ in headers_of(response)]
    for name, _ in HOP_BY_HOP_HEADERS:
        if name != "Connection":
            assert name.lower() not in names
    assert header(response, "connection") == "close" and header(response, "x-kept") == "1"


def test_the_write_callable_sends_before_the_iterable():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", "11")])
        write(b"hello ")
        return [b"world"]

    response, body, whole, _ = parse(run(GET11, app).data)
    assert (response.status_code, body, whole) == (200, b"hello world", True)


def test_write_before_start_response_is_refused():
    with pytest.raises(AssertionError, match="before start_response"):
        wsgi.Response(None, False, True).write(b"x")


def test_exc_info_before_the_head_replaces_the_status():
    # PEP 3333: start_response(status, headers, exc_info) before anything is sent: the new head wins.
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        try:
            raise ValueError("late")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Length", "4")], sys.exc_info())
        return [b"oops"]

    exchange = run(GET11, app)
    response, body, whole, _ = parse(exchange.data)
    assert (response.status_code, body, whole, exchange.keep_alive) == (503, b"oops", True, True)


def test_exc_info_after_the_head_re_raises_and_closes():
    # PEP 3333: once the head is out, start_response must re-raise exc_info.
    seen = []

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", "10")])
        write(b"12345")
        try:
            raise ValueError("late")
        except ValueError:
            try:
                start_response("500 Internal Server Error", [], sys.exc_info())
            except ValueError as exc:
                seen.append(exc)
                raise
        return [b"never"]

    exchange = run(GET11, app)
    response, body, whole, _ = parse(exchange.data)
    assert [str(e) for e in seen] == ["late"]
    assert (response.status_code, body, whole, exchange.keep_alive) == (200, b"12345", False, False)


def test_close_is_called_on_the_apps_iterable():
    # PEP 3333: the server calls close() on the iterable, whatever happened.
    closed = []

    class Body:
        def __iter__(self):
            yield b"ok"

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return Body()

    run(GET11, app)
    assert closed == [True]


def _file_app(path, length=True):
    def app(environ, start_response):
        size = os.path.getsize(path)
        start_response("200 OK", [("Content-Length", str(size))] if length else [])
        return environ["wsgi.file_wrapper"](open(path, "rb"))
    return app


@pytest.mark.parametrize("may_queue, offloaded", [
    (lambda size: QUEUE, True),  # room in the worker's queue: the event loop sendfiles it, the app slot moves on
    (lambda size: None, False),  # nowhere left to hold it: the app slot sends it itself
    (None, False),  # no event loop (the timeout's 500): sent here
], ids=["room", "full", "no-loop"])
def test_file_wrapper_goes_to_the_event_loop_when_it_may(tmp_path, may_queue, offloaded):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 64
    path.write_bytes(data)
    exchange = Exchange(GET11, _file_app(path), may_queue=may_queue).serve()
    assert (exchange.out_file is not None) is offloaded
    assert exchange.result == (200, len(data))
    response, body, whole, _ = parse(exchange.finish())
    assert (response.status_code, body, whole, exchange.keep_alive) == (200, data, True, True)


def test_file_wrapper_without_a_length_to_http11_is_chunked_not_sendfiled(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 1000)
    exchange = Exchange(GET11, _file_app(path, length=False), may_queue=lambda size: QUEUE).serve()
    assert exchange.out_file is None  # sendfile cannot chunk
    response, body, whole, _ = parse(exchange.finish())
    assert (body, whole, header(response, "transfer-encoding")) == (b"x" * 1000, True, "chunked")


def test_file_wrapper_iterates_a_file_without_fileno():
    wrapper = wsgi.FileWrapper(io.BytesIO(b"abcdefgh"), blksize=3)
    assert list(wrapper) == [b"abc", b"def", b"gh"]


# (id, request, environ key, expected, why)
ENVIRON_CASES = [
    ("path", GET11, "PATH_INFO", "/path", "PEP 3333"),
    ("query", GET11, "QUERY_STRING", "q=1", "PEP 3333"),
    ("raw-uri", GET11, "RAW_URI", "/path?q=1", "gunicorn's RAW_URI"),
    ("protocol-10", GET10, "SERVER_PROTOCOL", "HTTP/1.0", "PEP 3333"),
    ("host", GET11, "HTTP_HOST", "example.com", "PEP 3333"),
    ("remote", GET11, "REMOTE_ADDR", "127.0.0.1", "the peer's address"),
    ("remote-port", GET11, "REMOTE_PORT", "54321", "the peer's port, a string"),
    ("server-name", GET11, "SERVER_NAME", "127.0.0.1", "the listener's host"),
    ("server-port", GET11, "SERVER_PORT", "8000", "the listener's port, a string"),
    ("absolute-form", request(b"GET http://other.example/p HTTP/1.1", b"Host: x"), "HTTP_HOST", "other.example",
     "RFC 9112 §3.2.2: the absolute-form's authority wins over Host"),
    ("underscore-dropped", request(b"GET / HTTP/1.1", b"Host: x", b"X_Forwarded_For: 6.6.6.6"),
     "HTTP_X_FORWARDED_FOR", None, "CVE-2015-0219: X_Forwarded_For must not pose as X-Forwarded-For"),
    ("repeated-joined", request(b"GET / HTTP/1.1", b"Host: x", b"Accept: a", b"Accept: b"), "HTTP_ACCEPT", "a,b",
     "RFC 9110 §5.3: repeated fields join with a comma"),
    ("cookies-joined", request(b"GET / HTTP/1.1", b"Host: x", b"Cookie: a=1", b"Cookie: b=2"), "HTTP_COOKIE",
     "a=1; b=2", "RFC 6265 §5.4: cookies join with '; '"),
    ("forwarded-proto", request(b"GET / HTTP/1.1", b"Host: x", b"X-Forwarded-Proto: https"), "wsgi.url_scheme",
     "https", "PREFORK_FORWARDED_ALLOW_IPS: a trusted peer's X-Forwarded-Proto"),
    ("body", request(b"POST / HTTP/1.1", b"Host: x", b"Content-Length: 4", body=b"data"), "body", "data",
     "wsgi.input: the buffered body"),
    ("content-length", request(b"POST / HTTP/1.1", b"Host: x", b"Content-Length: 4", body=b"data"),
     "CONTENT_LENGTH", "4", "PEP 3333: CONTENT_LENGTH without HTTP_"),
]


@pytest.mark.parametrize("raw, key, expected, why", [case[1:] for case in ENVIRON_CASES],
                         ids=[case[0] for case in ENVIRON_CASES])
def test_environ(raw, key, expected, why):
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        seen["body"] = environ["wsgi.input"].read().decode()
        start_response("200 OK", [("Content-Length", "0")])
        return []

    run(raw, app)
    assert seen.get(key) == expected, why


def environ_seen(raw, **kwargs):
    """The environ the app saw, or the status the server answered in its place."""
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [("Content-Length", "0")])
        return []

    exchange = run(raw, app, **kwargs)
    return seen or parse(exchange.data)[0].status_code


def forwarded(*headers):
    return request(b"GET / HTTP/1.1", b"Host: x", *headers)


# (id, headers, the scheme or the server's status, why)
SCHEME_CASES = [
    ("ssl-on", [b"X-Forwarded-Ssl: on"], "https", "gunicorn's secure_scheme_headers: X-Forwarded-Ssl"),
    ("ssl-off", [b"X-Forwarded-Ssl: off"], "http", "off is no https"),
    ("protocol-ssl", [b"X-Forwarded-Protocol: ssl"], "https", "gunicorn's secure_scheme_headers: X-Forwarded-Protocol"),
    ("case", [b"X-Forwarded-Ssl: ON"], "https", "values are compared without case, as Django's proxies send them"),
    ("all-agree", [b"X-Forwarded-Proto: https", b"X-Forwarded-Ssl: on"], "https", "agreeing headers"),
    ("disagree", [b"X-Forwarded-Proto: http", b"X-Forwarded-Ssl: on"], 400,
     "the proxy set one and passed the client's other on: no one can say which is true (gunicorn: 400)"),
    ("none", [], "http", "no header: the connection's own scheme"),
]


@pytest.mark.parametrize("headers, expected, why", [c[1:] for c in SCHEME_CASES], ids=[c[0] for c in SCHEME_CASES])
def test_a_trusted_proxys_scheme_headers(headers, expected, why):
    seen = environ_seen(forwarded(*headers))
    assert (seen if isinstance(seen, int) else seen["wsgi.url_scheme"]) == expected, why


def test_an_untrusted_peers_scheme_headers_are_ignored():
    seen = environ_seen(forwarded(b"X-Forwarded-Ssl: on", b"X-Forwarded-Proto: http"), forwarded_allow_ips=())
    assert seen["wsgi.url_scheme"] == "http"  # neither counted nor refused: they are the client's words


# (SCRIPT_NAME, request target, (SCRIPT_NAME, PATH_INFO) the app sees, or the server's status; why)
MOUNT_CASES = [
    ("/sub", b"/sub/echo/", ("/sub", "/echo/"), "the prefix goes to SCRIPT_NAME, the rest is PATH_INFO"),
    ("/sub", b"/sub", ("/sub", ""), "the mount point itself: PATH_INFO empty, as PEP 3333 allows"),
    ("/sub/", b"/sub/x", ("/sub", "/x"), "a trailing slash in SCRIPT_NAME is dropped"),
    ("/sub", b"/s%75b/x", ("/sub", "/x"), "matched after percent-decoding, as PATH_INFO is"),
    ("/sub", b"/subway", 404, "whole segments only: /subway is not under /sub"),
    ("/sub", b"/echo/", 404, "outside the mount nothing of the app's is there (gunicorn: 500)"),
    ("", b"/echo/", ("", "/echo/"), "no SCRIPT_NAME: the app at the root"),
]


@pytest.mark.parametrize("script_name, target, expected, why", MOUNT_CASES, ids=[c[-1] for c in MOUNT_CASES])
def test_script_name_from_the_environment(monkeypatch, script_name, target, expected, why):
    monkeypatch.setenv("SCRIPT_NAME", script_name)
    seen = environ_seen(request(b"GET " + target + b" HTTP/1.1", b"Host: x"))
    assert (seen if isinstance(seen, int) else (seen["SCRIPT_NAME"], seen["PATH_INFO"])) == expected, why


def test_environ_on_a_unix_socket_takes_the_server_from_host():
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [("Content-Length", "0")])
        return []

    run(request(b"GET / HTTP/1.1", b"Host: example.com:8443", b"X-Forwarded-Proto: https"), app,
        family=socket.AF_UNIX, forwarded_allow_ips=())
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"], seen["REMOTE_ADDR"], seen["wsgi.url_scheme"]) == \
        ("example.com", "8443", "", "https")


@pytest.mark.parametrize("status, reason, head_only", [
    (400, "Bad request", False),
    (408, "Request Timeout", False),
    (431, "Request header fields too large", False),
    (503, "Too many unfinished request heads at once", False),
    (400, "Bad request", True),  # the request was a HEAD: RFC 9110 §9.3.2, no body
])
def test_answer_error_is_a_well_formed_closing_response(status, reason, head_only):
    exchange = Exchange(GET11, app_of())  # the connection only: answer_error needs no request
    exc = http.HTTPError(status, reason)
    exc.head_only = head_only
    exchange.conn.keep_alive = True
    result = wsgi.answer_error(exchange.conn, exc, exchange.context, request_line=None)
    assert exchange.conn.keep_alive is False
    response, body, whole, _ = parse(exchange.finish(), method=b"HEAD" if head_only else b"GET")
    expected = b"" if head_only else f"{status} {reason}\n".encode()
    assert (response.status_code, body, whole) == (status, expected, True)
    assert header(response, "connection") == "close"
    assert header(response, "content-length") == str(len(f"{status} {reason}\n"))
    assert result == (status, len(expected))


def test_answer_error_to_a_client_gone_is_quiet():
    exchange = Exchange(GET11, app_of())
    exchange.conn.sock.shutdown(socket.SHUT_WR)  # the reading thread sees its end
    exchange.thread.join(10)
    exchange.client.close()  # the client is gone: writing now fails with EPIPE
    assert wsgi.answer_error(exchange.conn, http.HTTPError(400, "x"), exchange.context, None) == (400, 0)
    exchange.conn.close()
    exchange.listener.close()


def test_a_queued_body_is_a_copy_of_what_the_app_gave():
    # The bytearray check in _send shows the intent: the event loop sends later, so it must own the bytes.
    size = 1 << 20  # more than a socketpair's buffer: the first send is partial, the rest queued

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(2 + 2 * size))])
        yield b"go"  # the head and these go out whole
        buf = bytearray(b"b" * size)
        yield buf
        buf[:] = b"c" * size  # a reused buffer, same size (a resize would raise BufferError)
        yield buf

    exchange = Exchange(GET11, app, may_queue=lambda size: QUEUE).serve()
    response, body, whole, _ = parse(exchange.finish())
    assert whole and body == b"go" + b"b" * size + b"c" * size


def _str_body(length):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "5")] if length else [])
        return ["hello"]  # str, not bytes: PEP 3333 forbids it
    return app


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
def test_a_str_body_is_a_500_not_an_empty_close(length):
    # PEP 3333: an error before any byte is sent is the server's 500; an empty close makes a browser retry.
    exchange = run(GET11, _str_body(length))
    assert exchange.data, "not a byte sent: the connection closed without a response"
    response, body, whole, _ = parse(exchange.data)
    assert (response.status_code, whole) == (500, True)
    assert exchange.result[0] == 500
