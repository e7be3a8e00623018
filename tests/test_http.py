"""HTTP/1.x against a live server: adversarial bytes, one case a row.

Every case asserts the exact status and that the one worker is still the
same process afterwards (a bad client must never kill or hang a worker).
"""

import json
import re
import socket
import time

import pytest

from .helpers import GOOD, dechunk, head, receive_all, send, split, status_of, worker_pid

# (id, raw request, expected status)
CASES = [
    ("good", GOOD, 200),
    ("http10-without-host", head(b"GET /echo HTTP/1.0"), 200),
    ("absolute-form", head(b"GET http://example.com/echo?q=1#frag HTTP/1.1", b"Host: x"), 200),
    ("options-asterisk", head(b"OPTIONS * HTTP/1.1", b"Host: x"), 200),
    ("content-length-body", head(b"POST /echo HTTP/1.1", b"Host: x", b"Content-Length: 5", body=b"hello"), 200),
    ("chunked-body", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked",
                          body=b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), 200),
    ("chunked-with-trailer", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked",
                                  body=b"2\r\nhi\r\n0\r\nX-Checksum: 1\r\n\r\n"), 200),
    ("missing-host", head(b"GET /echo HTTP/1.1"), 400),
    ("two-hosts", head(b"GET /echo HTTP/1.1", b"Host: a", b"Host: b"), 400),
    ("http20", head(b"GET /echo HTTP/2.0", b"Host: x"), 505),
    ("http12", head(b"GET /echo HTTP/1.2", b"Host: x"), 505),
    ("http30", head(b"GET /echo HTTP/3.0", b"Host: x"), 505),
    # CVE-2024-6827 (TE.CL): Content-Length with Transfer-Encoding, either order.
    ("cl-and-te", head(b"POST /echo HTTP/1.1", b"Host: x", b"Content-Length: 5", b"Transfer-Encoding: chunked",
                       body=b"0\r\n\r\n"), 400),
    ("te-and-cl", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked", b"Content-Length: 5",
                       body=b"0\r\n\r\n"), 400),
    # CVE-2024-1135: conflicting Transfer-Encoding fields.
    ("te-chunked-then-identity", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked",
                                      b"Transfer-Encoding: identity", body=b"0\r\n\r\n"), 400),
    ("te-chunked-twice", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked",
                              b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400),
    # gunicorn #3364: non-breaking spaces around chunked.
    ("te-nbsp-chunked", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: \xa0chunked\xa0",
                             body=b"0\r\n\r\n"), 400),
    ("chunked-not-last", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked, gzip"), 400),
    ("chunked-on-http10", head(b"POST /echo HTTP/1.0", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400),
    ("te-gzip", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: gzip"), 501),
    ("te-identity", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: identity"), 501),
    ("te-gzip-chunked", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: gzip, chunked"), 501),
    ("cl-duplicate-same", head(b"POST /echo HTTP/1.1", b"Host: x", b"Content-Length: 1", b"Content-Length: 1",
                               body=b"a"), 400),
    ("cl-duplicate-differing", head(b"POST /echo HTTP/1.1", b"Host: x", b"Content-Length: 1",
                                    b"Content-Length: 2", body=b"ab"), 400),
    ("cl-list", head(b"POST /echo HTTP/1.1", b"Host: x", b"Content-Length: 1, 1", body=b"a"), 400),
    ("cl-plus", head(b"POST /echo HTTP/1.1", b"Host: x", b"Content-Length: +1", body=b"a"), 400),
    ("cl-negative", head(b"POST /echo HTTP/1.1", b"Host: x", b"Content-Length: -1"), 400),
    ("cl-hex", head(b"POST /echo HTTP/1.1", b"Host: x", b"Content-Length: 0x1", body=b"a"), 400),
    ("obs-fold", head(b"GET /echo HTTP/1.1", b"Host: x", b"X-Folded: a", b" b"), 400),
    ("bare-lf", b"GET /echo HTTP/1.1\nHost: x\n\n", 400),
    ("bare-lf-in-headers", b"GET /echo HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400),
    ("bare-cr", b"GET /echo HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400),
    ("nul-in-value", head(b"GET /echo HTTP/1.1", b"Host: x", b"X-Nul: a\x00b"), 400),
    ("control-in-value", head(b"GET /echo HTTP/1.1", b"Host: x", b"X-Ctl: a\x01b"), 400),
    ("space-before-colon", head(b"GET /echo HTTP/1.1", b"Host : x"), 400),
    ("space-in-name", head(b"GET /echo HTTP/1.1", b"Host: x", b"X Y: z"), 400),
    ("bad-chunk-size", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked",
                            body=b"zz\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk-size-overflow", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked",
                                 body=b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n"), 400),
    ("missing-chunk-crlf", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked",
                                body=b"5\r\nhelloX0\r\n\r\n"), 400),
    ("trailer-content-length", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked",
                                    body=b"0\r\nContent-Length: 5\r\n\r\n"), 400),
    ("trailer-host", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked",
                          body=b"0\r\nHost: evil\r\n\r\n"), 400),
    ("trailer-transfer-encoding", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked",
                                       body=b"0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400),
    ("request-line-too-long", head(b"GET /echo?" + b"a" * 9000 + b" HTTP/1.1", b"Host: x"), 414),
    ("too-many-fields", head(b"GET /echo HTTP/1.1", b"Host: x", *[b"X-%d: y" % i for i in range(100)]), 431),
    ("field-too-long", head(b"GET /echo HTTP/1.1", b"Host: x", b"X-Long: " + b"a" * 9000), 431),
    ("endless-field", b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Endless: " + b"a" * 1_000_000, 431),
    ("expect-other", head(b"POST /echo HTTP/1.1", b"Host: x", b"Expect: something", b"Content-Length: 0"), 417),
    ("connect", head(b"CONNECT example.com:443 HTTP/1.1", b"Host: example.com:443"), 405),
    ("authority-form-on-get", head(b"GET example.com:80 HTTP/1.1", b"Host: x"), 400),
    ("asterisk-on-get", head(b"GET * HTTP/1.1", b"Host: x"), 400),
    ("bad-scheme", head(b"GET ftp://example.com/ HTTP/1.1", b"Host: x"), 400),
    ("bad-method", head(b"G@T /echo HTTP/1.1", b"Host: x"), 400),
    ("content-type-twice", head(b"POST /echo HTTP/1.1", b"Host: x", b"Content-Type: text/plain",
                                b"Content-Type: application/json", b"Content-Length: 2", body=b"{}"), 400),
    ("unknown-method", head(b"FOO /echo HTTP/1.1", b"Host: x"), 501),
    ("upgrade-with-body", head(b"POST /echo HTTP/1.1", b"Host: x", b"Connection: upgrade", b"Upgrade: websocket",
                               b"Content-Length: 5", body=b"hello"), 200),
    ("trailers-past-the-field-count", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked",
                                           body=b"0\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(100)) + b"\r\n"),
     431),
    ("trailer-too-long", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked",
                              body=b"0\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n"), 431),
    ("tls-handshake", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, 400),
    ("incomplete-head-then-close", b"GET /echo HTTP/1.1\r\nHost: x\r\n", 400),
]

@pytest.mark.parametrize("data, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_adversarial_request(server, data, expected):
    before = worker_pid(server)
    response = send(server, data)
    assert status_of(response) == expected, response[:300]
    head = split(response)[0]
    assert head.count(b"\r\nConnection: close") == 1
    if expected >= 400:
        assert re.search(rb"\r\nContent-Length: \d+", head)
    assert worker_pid(server) == before, "the worker died or was replaced"


def echo(server, data):
    response = send(server, data)
    assert status_of(response) == 200, response[:300]
    return json.loads(split(response)[1])


def test_environ_is_complete(server):
    env = echo(server, head(
        b"POST /echo/a%20b%C3%A9?x=%20y&z HTTP/1.1", b"Host: example.com:8080", b"Content-Type: text/plain",
        b"Content-Length: 3", b"X-Forwarded-For: 1.2.3.4", b"X_Forwarded_For: 6.6.6.6", b"Accept: a",
        b"Accept: b", b"Cookie: a=1", b"Cookie: b=2", body=b"abc",
    ))
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/echo/a b\xc3\xa9"  # latin-1 str of the decoded bytes
    assert env["QUERY_STRING"] == "x=%20y&z"
    assert env["RAW_URI"] == "/echo/a%20b%C3%A9?x=%20y&z"
    assert env["CONTENT_TYPE"] == "text/plain" and env["CONTENT_LENGTH"] == "3"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(server.port))
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"].isdigit()
    assert env["HTTP_HOST"] == "example.com:8080"
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"  # the underscore twin was dropped
    assert env["HTTP_ACCEPT"] == "a,b"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["wsgi.version"] == [1, 0] and env["wsgi.url_scheme"] == "http"
    assert (env["wsgi.multithread"], env["wsgi.multiprocess"], env["wsgi.run_once"]) == (False, True, False)
    assert env["wsgi.input_terminated"] is True
    assert env["body"] == "abc"


def test_absolute_form_authority_replaces_host(server):
    env = echo(server, head(b"GET http://real.example:81/echo?q HTTP/1.1", b"Host: other"))
    assert env["HTTP_HOST"] == "real.example:81"
    assert env["PATH_INFO"] == "/echo" and env["QUERY_STRING"] == "q"


def test_chunked_body_is_decoded_and_trailers_are_not_headers(server):
    env = echo(server, head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked",
                            body=b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n"))
    assert env["body"] == "hello!"
    assert "HTTP_X_TRAILER" not in env
    assert "CONTENT_LENGTH" not in env


def test_wsgiref_validator_accepts_get_and_post(server):
    assert send(server, head(b"GET /validate?a=1 HTTP/1.1", b"Host: x")).startswith(b"HTTP/1.1 200 ")
    response = send(server, head(b"POST /validate HTTP/1.1", b"Host: x", b"Content-Length: 4", body=b"data"))
    assert response.startswith(b"HTTP/1.1 200 ")
    assert json.loads(split(response)[1])["body"] == "data"
    assert "AssertionError" not in server.output


def test_readline_readlines_and_iteration(server):
    response = send(server, head(b"POST /lines HTTP/1.1", b"Host: x", b"Content-Length: 19",
                                 body=b"one\ntwothree\nfour\n\n"))
    assert json.loads(split(response)[1]) == ["one\n", "two", ["three\n", "four\n", "\n"]]


def test_expect_100_continue_is_sent_when_the_app_reads(server):
    sock = server.connect()
    try:
        sock.sendall(head(b"POST /echo HTTP/1.1", b"Host: x", b"Expect: 100-continue", b"Content-Length: 5"))
        interim = sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        response = receive_all(sock)
    finally:
        sock.close()
    assert status_of(response) == 200 and json.loads(split(response)[1])["body"] == "hello"


def test_no_100_continue_when_the_app_answers_without_reading(serve):
    # Streamed bodies (PREFORK_BUFFER_BODY = None): the app decides whether the upload comes at all.
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_KEEPALIVE": 0, "PREFORK_BUFFER_BODY": None,
                             "WSGI_APPLICATION": "tests.fixtureapp.rawapps.application"})
    response = send(server, head(b"POST /reject HTTP/1.1", b"Host: x", b"Expect: 100-continue",
                                 b"Content-Length: 1000000"), half_close=False)
    assert status_of(response) == 413 and b"100 Continue" not in response


def test_a_buffering_server_answers_100_continue_itself(server):
    # As nginx does: the body is read before the app is asked, so the server invites it.
    sock = server.connect()
    try:
        sock.sendall(head(b"POST /reject HTTP/1.1", b"Host: x", b"Expect: 100-continue", b"Content-Length: 5"))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        response = receive_all(sock)
    finally:
        sock.close()
    assert status_of(response) == 413 and b"100 Continue" not in response


def test_a_large_upload_keeps_the_worker_memory_flat(server):
    size = 200 * 1024 * 1024
    sock = server.connect(timeout=60)
    try:
        sock.sendall(head(b"POST /count HTTP/1.1", b"Host: x", b"Content-Length: %d" % size))
        block = b"x" * (1 << 20)
        for _ in range(size // len(block)):
            sock.sendall(block)
        response = receive_all(sock)
    finally:
        sock.close()
    result = json.loads(split(response)[1])
    assert result["received"] == size
    assert result["peak_rss_kib"] < 150 * 1024, result  # far below the 200 MiB it read


def test_a_trickled_head_gets_408_within_the_client_timeout(server):
    before = worker_pid(server)
    sock = server.connect()
    started = time.monotonic()
    try:
        sock.sendall(b"GET /echo HTTP/1.1\r\n")
        response = b""
        for i in range(10):  # one header a second: never complete within 2 s
            time.sleep(0.5)
            try:
                sock.sendall(b"X-%d: y\r\n" % i)
            except OSError:
                break
        sock.settimeout(5)
        while chunk := sock.recv(65536):
            response += chunk
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    assert status_of(response) == 408
    assert time.monotonic() - started < 6
    assert worker_pid(server) == before


def test_a_stalled_body_is_cut_off_after_the_client_timeout(server):
    before = worker_pid(server)
    sock = server.connect()
    started = time.monotonic()
    try:
        sock.sendall(head(b"POST /echo HTTP/1.1", b"Host: x", b"Content-Length: 100", body=b"only ten b"))
        sock.settimeout(8)
        response = receive_all(sock)
    finally:
        sock.close()
    assert time.monotonic() - started < 5
    assert not response.startswith(b"HTTP/1.1 200")
    assert worker_pid(server) == before


def response_of(server, path, method=b"GET"):
    return send(server, head(method + b" " + path + b" HTTP/1.1", b"Host: x"))


def test_head_has_no_body_but_keeps_the_length(server):
    head_, body = split(response_of(server, b"/echo", b"HEAD"))
    assert head_.startswith(b"HTTP/1.1 200") and b"Content-Length: " in head_ and body == b""


def test_204_has_no_body(server):
    assert split(response_of(server, b"/nocontent"))[1] == b""


def test_unknown_length_streams_until_close(server):
    assert split(response_of(server, b"/stream"))[1] == b"".join(b"part %d\n" % i for i in range(5))


def test_header_injection_is_a_500_and_never_sent(server):
    response = response_of(server, b"/inject")
    assert status_of(response) == 500
    assert b"pwned" not in response and b"never sent" not in response
    server.wait_for("refusing to send header 'X-Evil'")


@pytest.mark.parametrize("kind", ["crlf", "lf", "cr", "nul", "name-space", "name-colon", "name-crlf"])
def test_a_header_that_could_split_the_response_is_a_500(server, kind):
    response = response_of(server, b"/bad-header?" + kind.encode())
    assert status_of(response) == 500
    assert b"pwned" not in response and b"never sent" not in response


def test_hop_by_hop_headers_are_dropped(server):
    head_, body = split(response_of(server, b"/hop"))
    assert b"keep-alive" not in head_
    assert head_.count(b"Transfer-Encoding:") == 1  # ours: the app's was dropped, not doubled
    assert head_.count(b"Connection:") == 1 and b"X-Kept: 1" in head_ and body == b"hop"
    server.wait_for("dropped hop-by-hop header Transfer-Encoding")


def test_short_body_is_logged_and_closed(server):
    head_, body = split(response_of(server, b"/short"))
    assert b"Content-Length: 100" in head_ and body == b"only ten b"
    server.wait_for(r'"GET /short HTTP/1.1": response body 90 bytes shorter than its Content-Length')


def test_long_body_is_cut_at_content_length(server):
    assert split(response_of(server, b"/long"))[1] == b"01234"
    server.wait_for("response body longer than its Content-Length: cut at 5 bytes")


def test_exception_before_headers_is_a_logged_500(server):
    assert status_of(response_of(server, b"/raise-before")) == 500
    server.wait_for(r"Error serving GET /raise-before(.|\n)*RuntimeError: failed before the headers")


def test_exception_after_headers_closes_the_connection(server):
    response = response_of(server, b"/raise-after")
    assert status_of(response) == 200
    head_, body = response.split(b"\r\n\r\n", 1)
    assert b"\r\nTransfer-Encoding: chunked\r\n" in head_ + b"\r\n"
    assert body == b"b\r\nfirst part\n\r\n"  # and no last chunk: the client sees the cut
    with pytest.raises(AssertionError, match="cut short"):
        dechunk(body)
    server.wait_for(r"Error serving GET /raise-after(.|\n)*RuntimeError: failed after the headers")
    server.wait_for(r'"GET /raise-after HTTP/1.1" 200 11')  # in the access log all the same


def test_write_callable_and_exc_info(server):
    assert split(response_of(server, b"/write"))[1] == b"written and returned"
    assert response_of(server, b"/exc-info").startswith(b"HTTP/1.1 500 Oops\r\n")


def test_close_is_always_called(server, tmp_path):
    marker = tmp_path / "closed"
    response_of(server, b"/closing?" + str(marker).encode())
    assert marker.read_text() == "closed"
    marker.unlink()
    response_of(server, b"/closing?" + str(marker).encode(), method=b"HEAD")
    assert marker.read_text() == "closed"


def test_file_wrapper_sends_the_whole_file(server):
    head_, body = split(response_of(server, b"/file"))
    assert b"Content-Length: 1048576" in head_
    assert body == bytes(range(256)) * 4096


def test_access_log_lines(server):
    response_of(server, b"/echo?log=1")
    send(server, head(b"GET /echo HTTP/1.1"))
    server.wait_for(r'\[\d\d/\w{3}/\d{4} \d\d:\d\d:\d\d\] "GET /echo\?log=1 HTTP/1.1" 200 \d+')
    server.wait_for(r'\] "-" 400 \d+')


def test_a_big_streamed_response_read_at_full_speed_arrives_whole_twice(server):
    """16 MiB through non-blocking sends: the buffers fill, the worker waits for room, all of it arrives."""
    before = worker_pid(server)
    for _ in range(2):
        head_, body = split(response_of(server, b"/stream-big"))
        assert head_.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in head_
        assert body == b"x" * (16 << 20)  # split() has taken the chunks apart, and checked the last one
    assert worker_pid(server) == before


def test_a_client_hanging_up_mid_response_is_no_error(server):
    before = worker_pid(server)
    for _ in range(5):
        sock = server.connect()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(head(b"GET /stream-big HTTP/1.1", b"Host: x"))
        sock.recv(10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST: the server's next write fails
    assert worker_pid(server) == before
    assert "Error serving GET /stream-big" not in server.output


# -- unit: the server's own reason phrases ----------------------------------------------------

@pytest.mark.parametrize("status, phrase", [
    (408, "Request Timeout"), (431, "Request Header Fields Too Large"), (505, "HTTP Version Not Supported"),
    (599, "Error"),  # no standard name: a generic one, never an exception
])
def test_reason_phrases_are_the_standard_ones(status, phrase):
    from django_prefork.http import reason_phrase

    assert reason_phrase(status) == phrase
