"""One message per connection, bounded trailers and bodies, responses clients can check.

docs/http.md's "One message per connection", limits and "Responses", against a live
server over raw sockets. Each table row says what the app must have seen:
whatever follows the first message (a pipelined request, excess body bytes)
must never change it.
"""

import json
import shutil
import socket
import subprocess
import threading
import time

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import Server, busy_workers, h11_client, head, held_connections, receive_all, send, split, status_of, wait_until, worker_pid

RAW_APPS = "tests.fixtureapp.rawapps.application"
GET = head(b"GET /x/SMUGGLED?id=2 HTTP/1.1", b"Host: x")
DELETE_10 = head(b"DELETE /SMUGGLED?id=1 HTTP/1.0")

# (id, first message, what follows it, the app's view of the first: method, path, query, body)
PIPELINED = [
    ("get-then-get", head(b"GET /echo?a=1 HTTP/1.1", b"Host: x"), GET, ("GET", "/echo", "a=1", "")),
    # The report that opened issue #9: the app ran DELETE /echo/SMUGGLED?id=1.
    ("get-then-delete", head(b"GET /echo HTTP/1.1", b"Host: x"), DELETE_10, ("GET", "/echo", "", "")),
    ("three-requests", head(b"GET /echo HTTP/1.1", b"Host: x"), GET + DELETE_10, ("GET", "/echo", "", "")),
    ("query-then-request", head(b"GET /echo?q=1&r HTTP/1.1", b"Host: x"), b"GET /?x=", ("GET", "/echo", "q=1&r", "")),
    ("body-then-request", head(b"POST /echo HTTP/1.1", b"Host: x", b"Content-Length: 5", body=b"hello"), GET,
     ("POST", "/echo", "", "hello")),
    ("absolute-form-second", head(b"GET /echo HTTP/1.1", b"Host: x"),
     head(b"POST http://evil.example/admin HTTP/1.1", b"Host: evil", b"Content-Length: 0"), ("GET", "/echo", "", "")),
    ("short-content-length", head(b"POST /echo HTTP/1.1", b"Host: x", b"Content-Length: 2", body=b"ab"),
     b"cdef" + GET, ("POST", "/echo", "", "ab")),
    ("trailer-then-request", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked",
                                  body=b"2\r\nhi\r\n0\r\nX-Sum: 1\r\n\r\n"), GET, ("POST", "/echo", "", "hi")),
    ("chunked-then-request", head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked",
                                  body=b"2\r\nhi\r\n0\r\n\r\n"), DELETE_10, ("POST", "/echo", "", "hi")),
    ("http10-then-bytes", head(b"GET /echo HTTP/1.0"), b"Host: x\r\n\r\n" + GET, ("GET", "/echo", "", "")),
    ("connection-close-then-request", head(b"GET /echo HTTP/1.1", b"Host: x", b"Connection: close"), GET,
     ("GET", "/echo", "", "")),
]


def app_view(response):
    assert response.count(b"HTTP/1.1 ") == 1, f"more than one response: {response[:600]!r}"
    assert status_of(response) == 200, response[:300]
    env = json.loads(split(response)[1])
    return env["REQUEST_METHOD"], env["PATH_INFO"], env["QUERY_STRING"], env["body"]


def send_in_two(server, first, rest, pause=0.05):
    """The second part a little later, while the first request is being served."""
    sock = server.connect()
    try:
        sock.sendall(first)
        time.sleep(pause)
        try:
            sock.sendall(rest)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # already answered and closed: the rest never mattered
        return receive_all(sock)
    finally:
        sock.close()


@pytest.mark.parametrize("first, rest, expected", [c[1:] for c in PIPELINED], ids=[c[0] for c in PIPELINED])
def test_only_the_first_message_reaches_the_app(server, first, rest, expected):
    before = worker_pid(server)
    assert app_view(send(server, first + rest)) == expected
    slow_first = first.replace(b" /echo", b" /slow-echo", 1)
    method, path, query, body = expected
    assert app_view(send_in_two(server, slow_first, rest)) == (method, "/slow-echo", query, body)
    assert worker_pid(server) == before


@pytest.mark.parametrize("together", [True, False], ids=["one-packet", "two-packets"])
def test_head_then_get_has_no_body(server, together):
    first = head(b"HEAD /echo HTTP/1.1", b"Host: x")
    response = send(server, first + GET) if together else send_in_two(server, first.replace(b"/echo", b"/slow-echo"), GET)
    head_, body = response.split(b"\r\n\r\n", 1)
    assert head_.startswith(b"HTTP/1.1 200 ") and b"\r\nContent-Length: " in head_
    assert body == b""


FIRSTS = [
    head(b"GET /echo?a=1 HTTP/1.1", b"Host: x"),
    head(b"GET /echo HTTP/1.0"),
    head(b"POST /echo HTTP/1.1", b"Host: x", b"Content-Length: 3", body=b"abc"),
    head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked", body=b"3\r\nabc\r\n0\r\n\r\n"),
]
AFTER = st.one_of(
    st.binary(min_size=1, max_size=200),
    st.sampled_from([GET, DELETE_10, b"0\r\n\r\n", b"\r\n", b"Content-Length: 5\r\n\r\nhello", b"X: y\r\n\r\n"]),
)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(first=st.sampled_from(FIRSTS), after=AFTER)
def test_fuzz_whatever_follows_the_first_message_changes_nothing(server, first, after):
    assert app_view(send(server, first + after)) == app_view(send(server, first))


# -- trailers ----------------------------------------------------------------

CHUNKED_HEAD = head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked")


def rss_of(server):
    sock_response = send(server, head(b"GET /rss HTTP/1.1", b"Host: x"))
    return json.loads(split(sock_response)[1])


def flood(server, first, more):
    """Send `first`, then `more` again and again until the server answers; (response, seconds after first)."""
    sock = server.connect(timeout=10)
    try:
        sock.sendall(first)
        sent_at = time.monotonic()
        sock.setblocking(False)
        response = b""
        deadline = sent_at + 10
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                response += chunk
                continue
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
            try:
                sock.send(more)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                time.sleep(0.01)
        return response, time.monotonic() - sent_at
    finally:
        sock.close()


@pytest.mark.parametrize("first, more", [
    (CHUNKED_HEAD + b"2\r\nhi\r\n0\r\nX-Endless: ", b"a" * 65536),
    (CHUNKED_HEAD + b"2\r\nhi\r\n0\r\n", b"".join(b"X-T%d: y\r\n" % i for i in range(10_000))),
    (CHUNKED_HEAD + b"2;ext=", b"e" * 65536),
], ids=["endless-trailer-value", "ten-thousand-trailer-lines", "endless-chunk-extension"])
def test_a_trailer_flood_is_431_at_once_and_costs_nothing(server, first, more):
    before = rss_of(server)
    response, seconds = flood(server, first, more)
    assert status_of(response) == 431, response[:300]
    assert seconds < 1.0
    after = rss_of(server)
    assert after["pid"] == before["pid"]
    assert abs(after["rss_kib"] - before["rss_kib"]) < 10 * 1024, (before, after)


# -- bodies --------------------------------------------------------------------

def test_a_body_read_whole_costs_about_its_size(serve):
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_KEEPALIVE": 0, "WSGI_APPLICATION": RAW_APPS})
    size = 64 * 1024 * 1024
    block = b"x" * (1 << 20)
    for framing in ("length", "chunked"):
        sock = server.connect(timeout=60)
        try:
            if framing == "length":
                sock.sendall(head(b"POST /read-whole HTTP/1.1", b"Host: x", b"Content-Length: %d" % size))
                for _ in range(size // len(block)):
                    sock.sendall(block)
            else:
                sock.sendall(head(b"POST /read-whole HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked"))
                for _ in range(size // len(block)):
                    sock.sendall(b"%x\r\n%b\r\n" % (len(block), block))
                sock.sendall(b"0\r\n\r\n")
            response = receive_all(sock)
        finally:
            sock.close()
        result = json.loads(split(response)[1])
        assert result["received"] == size and result["type"] == "bytes"
        grew = (result["peak_rss_kib"] - result["rss_before_kib"]) * 1024
        assert grew < 1.3 * size, (framing, result)


def test_upgrade_is_not_honoured_and_the_body_is_read(server):
    for framing, body in ((b"Content-Length: 5", b"hello"), (b"Transfer-Encoding: chunked", b"5\r\nhello\r\n0\r\n\r\n")):
        response = send(server, head(b"POST /echo HTTP/1.1", b"Host: x", b"Connection: upgrade", b"Upgrade: h2c",
                                     framing, body=body + GET))
        assert status_of(response) == 200 and not response.startswith(b"HTTP/1.1 101")
        env = json.loads(split(response)[1])
        assert env["body"] == "hello" and env["REQUEST_METHOD"] == "POST"


@pytest.fixture(scope="module")
def two_workers():
    srv = Server(settings={
        "PREFORK_WORKERS": 2, "PREFORK_KEEPALIVE": 0, "PREFORK_CLIENT_TIMEOUT": 2, "PREFORK_TIMEOUT": 20, "WSGI_APPLICATION": RAW_APPS,
    })
    srv.start()
    srv.wait_workers(2)
    yield srv
    srv.close()


def trickle(server, rate, seconds, results, name):
    """Upload at `rate` bytes/s for at most `seconds`; record (status, seconds) or the body sent."""
    sock = server.connect(timeout=30)
    started = time.monotonic()
    total = int(rate * seconds)
    try:
        sock.sendall(head(b"POST /read-whole HTTP/1.1", b"Host: x", b"Content-Length: %d" % total))
        step = max(1, rate // 8)
        sent = 0
        while sent < total:
            time.sleep(step / rate)
            try:
                sock.sendall(b"x" * min(step, total - sent))
            except OSError:
                break
            sent += step
        sock.settimeout(10)
        response = receive_all(sock)
        results[name] = (status_of(response), time.monotonic() - started)
    finally:
        sock.close()


def gets_while(server, threads):
    """A plain GET every 0.1 s while `threads` run; the longest any of them waited."""
    longest_wait = 0.0
    while any(t.is_alive() for t in threads):
        started = time.monotonic()
        assert status_of(send(server, head(b"GET /rss HTTP/1.1", b"Host: x"), timeout=15)) == 200
        longest_wait = max(longest_wait, time.monotonic() - started)
        time.sleep(0.1)  # the pace of the probe, not a wait for anything
    for thread in threads:
        thread.join()
    return longest_wait


def test_two_trickling_uploads_get_408_and_never_hold_a_worker(two_workers):
    server = two_workers
    workers = server.wait_workers(2)
    results = {}
    threads = [threading.Thread(target=trickle, args=(server, 1024, 20, results, i)) for i in range(2)]
    for thread in threads:
        thread.start()
    wait_until(lambda: held_connections(server)["reading"] == 2, message="both uploads held by the event loops")
    assert busy_workers(server) == 0  # buffered: the app never sees an upload before it is whole
    longest_wait = gets_while(server, threads)
    # CLIENT_TIMEOUT 2 s free, then a 2 s window short of 4096 bytes/s: cut at about 4 s.
    assert [status for status, _ in results.values()] == [408, 408], results
    assert all(seconds < 5.5 for _, seconds in results.values()), results
    assert longest_wait < 1, longest_wait
    assert server.worker_pids() == workers, "a worker died"
    assert "timed out" not in server.output


def test_two_trickling_streamed_uploads_get_408_and_the_workers_serve_on(serve):
    # PREFORK_BUFFER_BODY = None: the app reads the body as it comes, so the upload holds the worker.
    server = serve(settings={"PREFORK_WORKERS": 2, "PREFORK_KEEPALIVE": 0, "PREFORK_BUFFER_BODY": None,
                             "PREFORK_CLIENT_TIMEOUT": 2, "PREFORK_TIMEOUT": 20, "WSGI_APPLICATION": RAW_APPS})
    workers = server.wait_workers(2)
    results = {}
    threads = [threading.Thread(target=trickle, args=(server, 1024, 20, results, i)) for i in range(2)]
    for thread in threads:
        thread.start()
    wait_until(lambda: busy_workers(server) == 2, message="both uploads holding a worker")
    longest_wait = gets_while(server, threads)
    # CLIENT_TIMEOUT 2 s, then 1 s more per 4096 bytes: a 1 KiB/s upload is cut at about 2.7 s.
    assert [status for status, _ in results.values()] == [408, 408], results
    assert all(seconds < 5 for _, seconds in results.values()), results
    assert longest_wait < 5, longest_wait  # a worker freed at about 2.7 s, on a loaded machine
    assert server.worker_pids() == workers, "a worker died"
    assert "timed out" not in server.output


def test_a_64_kbit_upload_passes_the_minimum_rate(two_workers):
    results = {}
    trickle(two_workers, 8000, 4, results, "modem")
    assert results["modem"][0] == 200


# -- responses -------------------------------------------------------------------

def h11_response(data, method="GET"):
    """Events h11, as a client, reads from `data`; the last is EndOfMessage or an error."""
    conn = h11_client(method, data)
    conn.receive_data(b"")
    events = []
    try:
        while True:
            event = conn.next_event()
            events.append(event)
            if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)) or event is h11.NEED_DATA:
                return events
    except h11.RemoteProtocolError as exc:
        events.append(exc)
        return events


def test_a_streamed_body_is_chunked_and_complete(server):
    response = send(server, head(b"GET /stream HTTP/1.1", b"Host: x"))
    assert b"\r\nTransfer-Encoding: chunked\r\n" in response.split(b"\r\n\r\n")[0] + b"\r\n"
    events = h11_response(response)
    assert isinstance(events[-1], h11.EndOfMessage), events
    assert b"".join(e.data for e in events if isinstance(e, h11.Data)) == b"".join(b"part %d\n" % i for i in range(5))


def test_a_streamed_body_on_http10_is_delimited_by_the_close(server):
    response = send(server, head(b"GET /stream HTTP/1.0"))
    head_, body = response.split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding" not in head_ and body == b"".join(b"part %d\n" % i for i in range(5))


def test_a_broken_stream_is_seen_as_incomplete(server):
    events = h11_response(send(server, head(b"GET /raise-after HTTP/1.1", b"Host: x")))
    assert isinstance(events[-1], h11.RemoteProtocolError), events


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_sees_a_broken_stream_as_cut_short(server):
    url = f"http://127.0.0.1:{server.port}"
    broken = subprocess.run(["curl", "-sS", "-o", "/dev/null", url + "/raise-after"], capture_output=True, text=True)
    assert broken.returncode == 18, broken.stderr  # CURLE_PARTIAL_FILE
    whole = subprocess.run(["curl", "-sS", url + "/stream"], capture_output=True)
    assert whole.returncode == 0 and whole.stdout == b"".join(b"part %d\n" % i for i in range(5))


@pytest.mark.parametrize("status", [b"204", b"304"])
def test_bodiless_statuses_lose_their_framing_and_body(server, status):
    response = send(server, head(b"GET /bodiless?" + status + b" HTTP/1.1", b"Host: x"))
    head_, body = response.split(b"\r\n\r\n", 1)
    assert head_.startswith(b"HTTP/1.1 " + status)
    assert b"Content-Length" not in head_ and b"Transfer-Encoding" not in head_ and body == b""
    assert b'ETag: "x"' in head_
    server.wait_for(f"dropped the body of a {status.decode()} response")
    send(server, head(b"GET /bodiless?" + status + b" HTTP/1.1", b"Host: x"))
    assert server.output.count(f"dropped the body of a {status.decode()} response") == 1


def test_a_header_that_is_not_latin1_is_a_500_naming_it(server):
    response = send(server, head(b"GET /not-latin1 HTTP/1.1", b"Host: x"))
    assert status_of(response) == 500 and b"never sent" not in response
    server.wait_for("refusing to send header 'X-Name'.* is not latin-1")


def test_server_software_names_us(server):
    from django_prefork import __version__

    env = json.loads(split(send(server, head(b"GET /echo HTTP/1.1", b"Host: x")))[1])
    assert env["SERVER_SOFTWARE"] == f"django-prefork/{__version__}"


# -- found by a hostile client (a review of the above) ----------------------------------------

def test_a_content_length_with_thousands_of_leading_zeros_is_served(server):
    before = worker_pid(server)
    response = send(server, head(b"POST /echo HTTP/1.1", b"Host: x", b"Content-Length: " + b"0" * 4400 + b"5",
                                 body=b"abcde"))
    assert status_of(response) == 200 and json.loads(split(response)[1])["body"] == "abcde"
    assert worker_pid(server) == before, "the worker crashed on int() of the length"


def test_a_declared_length_costs_nothing_until_the_body_arrives(server):
    before = rss_of(server)
    sock = server.connect()
    try:
        sock.sendall(head(b"POST /read-whole HTTP/1.1", b"Host: x", b"Content-Length: 400000000", body=b"ab"))
        sock.shutdown(socket.SHUT_WR)  # and the client goes: 400, after the worker waited in read()
        assert status_of(receive_all(sock)) == 400
    finally:
        sock.close()
    after = rss_of(server)
    assert after["pid"] == before["pid"]
    peak_growth = json.loads(split(send(server, head(b"POST /read-whole HTTP/1.1", b"Host: x",
                                                     b"Content-Length: 3", body=b"abc")))[1])
    assert (peak_growth["peak_rss_kib"] - before["rss_kib"]) < 20 * 1024, (before, peak_growth)


@pytest.mark.parametrize("data", [
    head(b"HEAD /echo HTTP/1.1", b"Host: x", b"Host: y"),
    head(b"HEAD /raise-before HTTP/1.1", b"Host: x"),
    b"HEAD /echo HTTP/1.1\r\nHost: x\r\nX: \x01\r\n\r\n",
], ids=["two-hosts", "app-error", "bad-byte"])
def test_the_servers_own_answer_to_head_has_no_body(server, data):
    response = send(server, data)
    assert status_of(response) in (400, 500)
    head_, body = response.split(b"\r\n\r\n", 1)
    assert b"Content-Length: " in head_ and body == b""


def test_an_upgrade_request_after_empty_lines_gets_its_own_body(server):
    response = send(server, b"\r\n\r\n" + head(b"POST /echo HTTP/1.1", b"Host: x", b"Upgrade: websocket",
                                                b"Connection: Upgrade", b"Content-Length: 15",
                                                body=b"BODY-0123456789"))
    assert json.loads(split(response)[1])["body"] == "BODY-0123456789"


def test_expect_is_ignored_on_http10(server):
    sock = server.connect()
    try:
        sock.sendall(head(b"POST /echo HTTP/1.0", b"Expect: 100-continue", b"Content-Length: 3", body=b"abc"))
        response = receive_all(sock)
    finally:
        sock.close()
    assert b"100 Continue" not in response and json.loads(split(response)[1])["body"] == "abc"


def test_an_unknown_method_after_empty_lines_is_501(server):
    assert status_of(send(server, b"\r\n" + head(b"FOO /echo HTTP/1.1", b"Host: x"))) == 501


@pytest.mark.parametrize("kind", ["cl-twice-differing", "cl-negative", "cl-plus", "cl-underscore", "status-100",
                                  "status-101", "status-099", "control-in-value", "control-in-status",
                                  "status-not-latin1"])
def test_a_response_framing_a_client_could_not_trust_is_a_500(server, kind):
    response = send(server, head(b"GET /bad-framing?" + kind.encode() + b" HTTP/1.1", b"Host: x"))
    assert status_of(response) == 500
    assert b"0123456789" not in response and b"\x1b" not in response and b"\x0b" not in response


def test_a_status_that_is_not_latin1_is_refused_as_a_bad_status(server):
    assert status_of(send(server, head(b"GET /bad-framing?status-not-latin1 HTTP/1.1", b"Host: x"))) == 500
    server.wait_for("InvalidHeader: bad status '200 \u2603'")


def test_an_app_answering_its_own_500_after_a_refused_head_gets_a_well_framed_one(server):
    """The refused head had set chunked framing; the app's second head has a Content-Length."""
    response = send(server, head(b"GET /retry-head HTTP/1.1", b"Host: x"))
    events = h11_response(response)
    assert isinstance(events[-1], h11.EndOfMessage), events
    assert events[0].status_code == 500 and b"".join(e.data for e in events if isinstance(e, h11.Data)) == b"app error"
    assert b"evil" not in response


def test_the_same_length_twice_is_said_once(server):
    head_, body = split(send(server, head(b"GET /same-length-twice HTTP/1.1", b"Host: x")))
    assert head_.count(b"Content-Length: 10") == 1 and body == b"0123456789"


def test_early_bytes_do_not_pay_for_later_silence(two_workers):
    """8 MB at once, then a byte now and then: 408 once a window brings too little, no watchdog kill."""
    server = two_workers
    workers = server.wait_workers(2)
    sock = server.connect(timeout=30)
    started = time.monotonic()
    try:
        sock.sendall(head(b"POST /read-whole HTTP/1.1", b"Host: x", b"Content-Length: 100000000"))
        sock.sendall(b"x" * (8 << 20))
        response = b""
        sock.settimeout(0.5)
        while time.monotonic() - started < 15:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                sock.send(b"x")
                continue
            if not chunk:
                break
            response += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        sock.close()
    assert status_of(response) == 408, response[:200]
    assert time.monotonic() - started < 8  # CLIENT_TIMEOUT 2 s of grace, then a 2 s window
    assert server.worker_pids() == workers and "timed out" not in server.output


def test_a_streamed_body_too_slow_for_the_timeout_is_408_not_a_kill(serve):
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_KEEPALIVE": 0, "PREFORK_BUFFER_BODY": None,
                             "PREFORK_TIMEOUT": 5, "PREFORK_CLIENT_TIMEOUT": 2, "WSGI_APPLICATION": RAW_APPS})
    (worker,) = server.wait_workers(1)
    results = {}
    trickle(server, 8000, 20, results, "steady")  # fast enough for the min rate, too long for the timeout
    status, seconds = results["steady"]
    assert status == 408 and seconds < 5, results
    assert server.worker_pids() == [worker] and "timed out" not in server.output


def test_a_buffered_body_longer_than_the_timeout_passes(serve):
    # Buffered, the upload costs the worker nothing while it lasts: only the min rate bounds it.
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_KEEPALIVE": 0, "PREFORK_TIMEOUT": 4,
                             "PREFORK_CLIENT_TIMEOUT": 2, "WSGI_APPLICATION": RAW_APPS})
    (worker,) = server.wait_workers(1)
    results = {}
    thread = threading.Thread(target=trickle, args=(server, 8000, 6, results, "steady"))
    thread.start()
    wait_until(lambda: held_connections(server)["reading"] == 1, message="the upload held by the event loop")
    assert server.get("/rss")[0] == 200  # the one worker serves on meanwhile
    thread.join()
    assert results["steady"][0] == 200, results
    assert server.worker_pids() == [worker] and "timed out" not in server.output


def one_worker_and_a_small_window(serve, timeout):
    """A one-worker server (client timeout 2 s) and a connection to it with a 4 KiB receive buffer."""
    server = serve(settings={"PREFORK_WORKERS": 1, "PREFORK_KEEPALIVE": 0, "PREFORK_TIMEOUT": timeout, "PREFORK_CLIENT_TIMEOUT": 2,
                             "WSGI_APPLICATION": RAW_APPS})
    (worker,) = server.wait_workers(1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    return server, worker, sock


def test_a_client_that_reads_nothing_is_given_up_after_the_client_timeout(serve):
    server, worker, sock = one_worker_and_a_small_window(serve, timeout=30)
    try:
        started = time.monotonic()
        sock.sendall(head(b"GET /stream-big HTTP/1.1", b"Host: x"))  # 16 MB, and we read none of it
        wait_until(lambda: held_connections(server)["writing"] == 1, message="the response left to the event loop")
        status, _ = server.get("/rss", timeout=15)
        answered = time.monotonic() - started
        wait_until(lambda: held_connections(server)["writing"] == 0, timeout=10, message="the silent reader dropped")
        dropped = time.monotonic() - started
    finally:
        sock.close()
    # The worker served on at once; the response was given up after 2 s of silence, long
    # before the deadline (28 s).
    assert status == 200 and answered < 1.5, answered
    assert 1.5 < dropped < 4, dropped
    assert server.worker_pids() == [worker] and "timed out" not in server.output


def test_a_slow_reader_is_cut_off_at_the_deadline(serve):
    server, worker, sock = one_worker_and_a_small_window(serve, timeout=5)
    started = time.monotonic()
    try:
        sock.sendall(head(b"GET /stream-big HTTP/1.1", b"Host: x"))  # 16 MB, far more than the buffers hold
        wait_until(lambda: held_connections(server)["writing"] == 1, message="the response left to the event loop")
        assert server.get("/rss", timeout=15)[0] == 200
        answered = time.monotonic() - started
        sock.settimeout(10)
        received = 0
        while time.monotonic() - started < 12:
            try:
                chunk = sock.recv(2048)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += len(chunk)
            time.sleep(0.05)  # about 40 KB/s
        ended = time.monotonic() - started
    finally:
        sock.close()
    # Served on at once; the slow reader cut off at PREFORK_TIMEOUT - 2 s (the kernel may still
    # deliver what it had buffered), well short of the 16 MB.
    assert answered < 1.5, answered
    assert ended < 6 and received < 16_000_000, (ended, received)
    assert server.worker_pids() == [worker] and "timed out" not in server.output
