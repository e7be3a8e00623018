"""Unit tests of http.py's own rules: the request target, the path, the body reader."""

import gc
import socket
import weakref

import httptools
import pytest
from hypothesis import given
from hypothesis import strategies as st

from django_prefork.http import Body, HTTPError, Limits, Request, _feed, decode_path, read_request, split_target


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
        theirs.sendall(head)
        request = read_request(ours, Limits(8190, 100, 8190))
        theirs.sendall(later)
        assert Body(ours, request).read() == (b"hello" if b"POST" in head else b"")
        gone = weakref.ref(request)
        del request
        assert gone() is None, "the request waits for the garbage collector"
    finally:
        gc.enable()
        ours.close()
        theirs.close()
