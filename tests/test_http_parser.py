"""Unit tests of http.py's own rules: the request target, the path, the body reader."""

import gc
import socket
import weakref

import httptools
import pytest
from hypothesis import given
from hypothesis import strategies as st

from django_prefork.http import Body, BodyBuffer, HTTPError, Limits, Reader, Request, _feed, decode_path, split_target


@pytest.mark.parametrize(
    "method, target, expected",
    [
        (b"GET", b"/a/b?x=1&y", (b"/a/b", b"x=1&y", None)),
        (b"GET", b"/a#frag", (b"/a", b"", None)),
        (b"GET", b"/?", (b"/", b"", None)),
        (b"GET", b"http://example.com", (b"/", b"", b"example.com")),
        (b"GET", b"HTTPS://example.com:8443/p?q", (b"/p", b"q", b"example.com:8443")),
        (b"GET", b"http://example.com?q=1", (b"/", b"q=1", b"example.com")),
        (b"OPTIONS", b"*", (b"*", b"", None)),
    ],
)
def test_split_target(method, target, expected):
    assert split_target(method, target) == expected


@pytest.mark.parametrize(
    "method, target",
    [(b"GET", b"*"), (b"GET", b"example.com:80"), (b"GET", b"ftp://x/"), (b"GET", b"http:///nohost"),
     (b"GET", b"http://user@host/"), (b"GET", b"relative/path")],
)
def test_split_target_rejects(method, target):
    with pytest.raises(HTTPError) as caught:
        split_target(method, target)
    assert caught.value.status == 400


@given(st.binary(max_size=64))
def test_decode_path_is_latin1_of_the_unquoted_bytes(raw):
    from urllib.parse import quote_from_bytes

    assert decode_path(quote_from_bytes(raw, safe="/").encode()) == raw.decode("latin-1")


def parse(data, limits=Limits(8190, 100, 8190)):
    request = Request(limits)
    parser = request.parser = httptools.HttpRequestParser(request)
    _feed(parser, request, data)
    request.check_head()
    return request, parser


def test_headers_are_lowercased_in_order_and_host_counted():
    request, _ = parse(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
    assert request.headers == [(b"host", b"x"), (b"x-a", b"1"), (b"x-a", b"2")]
    assert request.host_count == 1 and request.complete


def test_body_reader_over_a_socketpair():
    ours, theirs = socket.socketpair()
    try:
        head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        request, parser = parse(head)
        body = Body(ours, request)
        theirs.sendall(b"4\r\nab\nc\r\n3\r\nd\ne\r\n0\r\n\r\n")
        assert body.readline() == b"ab\n"
        assert body.read(2) == b"cd"
        assert list(body) == [b"\n", b"e"]
        assert body.read() == b"" and request.complete
    finally:
        ours.close()
        theirs.close()


def test_expect_continue_is_sent_on_the_first_read_only():
    ours, theirs = socket.socketpair()
    try:
        request, parser = parse(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        body = Body(ours, request)
        theirs.sendall(b"hi")
        assert body.read(2) == b"hi"
        assert theirs.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert body.read() == b""
    finally:
        ours.close()
        theirs.close()


@pytest.mark.parametrize("head, later", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b""),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", b""),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n", b"hello"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", b"5\r\nhello\r\n0\r\nA: b\r\n\r\n"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: upgrade\r\nContent-Length: 5\r\n\r\n", b"hello"),
], ids=["GET", "length-with-head", "length-after-head", "chunked-with-trailer", "upgrade-with-length"])
def test_a_request_read_to_its_end_leaves_no_cycle_for_the_collector(head, later):
    """The parser holds its Request; the Request lets go of it, so refcounting frees both."""
    ours, theirs = socket.socketpair()
    gc.disable()
    try:
        reader = Reader(Limits(8190, 100, 8190))
        reader.feed(head)
        request = reader.request
        del reader
        theirs.sendall(later)
        assert Body(ours, request).read() == (b"hello" if b"POST" in head else b"")
        gone = weakref.ref(request)
        del request
        assert gone() is None, "the request waits for the garbage collector"
    finally:
        gc.enable()
        ours.close()
        theirs.close()


# -- Reader: one request from bytes as they come ------------------------------------------

LIMITS = Limits(8190, 100, 8190)
GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"

# (id, one request, what follows it): Reader must take exactly the request (RFC 9112 §6.3 framing).
BOUNDARIES = [
    ("bodiless", GET, GET),
    ("leading-empty-lines", b"\r\n\r\n" + GET, GET),  # §2.2: empty lines before a request are skipped
    ("content-length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", GET),
    ("content-length-0", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"hello" + GET),
    ("chunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", GET),
    ("chunked-crlfcrlf-in-data", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"4\r\n\r\n\r\n\r\n0\r\n\r\n", GET),  # a blank line inside a chunk ends nothing
    ("chunked-trailer", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"2\r\nhi\r\n0\r\nX-Sum: 1\r\n\r\n", GET),
    ("chunk-extension", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"2;a=b\r\nhi\r\n0;c\r\n\r\n", GET),
    ("upgrade-length", b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: upgrade\r\n"
                       b"Content-Length: 2\r\n\r\nhi", GET),  # never switched: framed as any other
]


def feed_all(reader, data, step):
    """Feed `data` `step` bytes at a time; return the bytes the reader did not take."""
    at = 0
    while at < len(data):
        piece = data[at:at + step]
        used = reader.feed(piece)
        if reader.complete:
            return data[at + used:]
        assert used == len(piece), "an incomplete request must take everything it is given"
        at += step
    return b""


@pytest.mark.parametrize("message, rest", [c[1:] for c in BOUNDARIES], ids=[c[0] for c in BOUNDARIES])
@pytest.mark.parametrize("step", [1, 2, 3, 7, 1 << 20])
def test_a_reader_takes_exactly_its_message(message, rest, step):
    reader = Reader(LIMITS, buffer_body=1024)
    assert feed_all(reader, message + rest, step) == rest
    assert reader.complete


@given(st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_any_split_of_a_chunked_request_keeps_the_boundary(cuts):
    message = BOUNDARIES[5][1]
    data = message + GET
    reader = Reader(LIMITS, buffer_body=1024)
    at, left = 0, b""
    for cut in cuts + [len(data)]:
        piece = data[at:at + cut]
        if not piece:
            break
        used = reader.feed(piece)
        if reader.complete:
            left = data[at + used:]
            break
        at += cut
    assert reader.complete and left == GET
    assert reader.request.buffer.as_input().read() == b"\r\n\r\n"


def test_a_buffered_body_spools_to_a_file_past_its_memory():
    reader = Reader(LIMITS, buffer_body=4)
    reader.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhel")
    buffer = reader.request.buffer
    assert buffer.file is None
    reader.feed(b"lo world")
    assert reader.complete and buffer.file is not None
    assert buffer.as_input().read() == b"hello worl"
    buffer.close()


def test_a_streamed_body_is_left_to_the_app():
    reader = Reader(LIMITS)  # buffer_body None: the app reads the rest itself
    reader.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhel")
    assert reader.head_complete and not reader.complete
    assert reader.request.buffer is None and bytes(reader.request.body) == b"hel"


@pytest.mark.parametrize("data, status", [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\nY: z\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(102)), 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 900_000, 431),  # a field never ending: the head's bound
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # RFC 9112 §3.2: Host is required on 1.1
    (b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;" + b"e" * 9000, 431),
])
def test_a_reader_refuses_bad_requests_as_they_come(data, status):
    reader = Reader(LIMITS, buffer_body=1024)
    with pytest.raises(HTTPError) as refused:
        feed_all(reader, data, 512)
    assert refused.value.status == status


def test_a_refused_head_says_whether_it_was_a_head_request():
    reader = Reader(LIMITS)
    with pytest.raises(HTTPError) as refused:
        reader.feed(b"HEAD / HTTP/2.0\r\nHost: x\r\n\r\n")
    assert refused.value.head_only


def test_keep_alive_is_read_from_the_version_and_connection():
    cases = {
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n": True,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n": False,
        b"GET / HTTP/1.0\r\n\r\n": False,
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n": True,
    }
    for data, keep in cases.items():
        reader = Reader(LIMITS)
        reader.feed(data)
        assert reader.request.keep_alive is keep, data


def test_a_body_buffer_counts_what_it_holds():
    buffer = BodyBuffer(8)
    buffer.write(b"1234")
    buffer.write(b"5678")
    assert buffer.file is None and buffer.size == 8
    buffer.write(b"9")
    assert buffer.file is not None and buffer.as_input().read() == b"123456789"
    buffer.close()


def test_the_bodies_of_a_worker_share_one_memory_budget(monkeypatch):
    monkeypatch.setattr(BodyBuffer, "WORKER_MEMORY", 10)
    monkeypatch.setattr(BodyBuffer, "held", 0)  # what other tests left unclosed is not ours
    first, second = BodyBuffer(8), BodyBuffer(8)
    first.write(b"12345678")
    second.write(b"abc")  # 11 bytes would be past the worker's 10: to a file
    assert first.file is None and second.file is not None
    first.close()
    third = BodyBuffer(8)
    third.write(b"xyz")  # the first's memory was given back
    assert third.file is None
    for buffer in (second, third):
        buffer.close()
    assert BodyBuffer.held == 0


@pytest.mark.parametrize("data", [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n",  # declared: refused before a byte of it
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
], ids=["content-length", "chunked"])
def test_a_body_past_the_limit_is_413(data):
    # What one upload may spool to disk is bounded (nginx's client_max_body_size).
    reader = Reader(Limits(8190, 100, 8190, body=10), buffer_body=4)
    with pytest.raises(HTTPError) as refused:
        feed_all(reader, data, 7)
    assert refused.value.status == 413
    if reader.request.buffer is not None:
        reader.request.buffer.close()


def test_a_body_at_the_limit_passes():
    reader = Reader(Limits(8190, 100, 8190, body=10), buffer_body=4)
    reader.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
    assert reader.complete and reader.request.buffer.as_input().read() == b"0123456789"
    reader.request.buffer.close()
