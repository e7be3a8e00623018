"""Plain WSGI apps for the HTTP tests, one per path; anything else goes to Django.

WSGI_APPLICATION = "tests.fixtureapp.rawapps.application"
"""

import json
import os
import sys
import tempfile
from wsgiref.validate import validator

from django.core.wsgi import get_wsgi_application

django_app = get_wsgi_application()
ENVIRON_KEYS = (
    "REQUEST_METHOD", "SERVER_SOFTWARE", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH",
    "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT", "RAW_URI",
    "wsgi.url_scheme", "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.input_terminated",
)


def echo(environ, start_response):
    """The environ and the whole body as JSON: the differential tests' oracle view."""
    body = environ["wsgi.input"].read()
    data = {k: environ[k] for k in ENVIRON_KEYS if k in environ}
    data.update({k: v for k, v in environ.items() if k.startswith("HTTP_")})
    data["wsgi.version"] = list(environ["wsgi.version"])
    data["body"] = body.decode("latin-1")
    data["pid"] = os.getpid()
    out = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


def strict_echo(environ, start_response):
    """echo, reading the body the one way wsgiref.validate allows: read(n)."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    out = json.dumps({"body": body.decode("latin-1"), "query": environ["QUERY_STRING"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


def lines(environ, start_response):
    """Reads the body with readline(), readlines() and iteration, in turns."""
    stream = environ["wsgi.input"]
    first = stream.readline()
    second = stream.readline(3)
    rest = stream.readlines()
    out = json.dumps([first.decode(), second.decode(), [r.decode() for r in rest]]).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [out]


def count(environ, start_response):
    """Reads the body in 64 KiB pieces and reports its size and the worker's peak RSS."""
    total = 0
    while chunk := environ["wsgi.input"].read(65536):
        total += len(chunk)
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"received": total, "peak_rss_kib": rss}).encode()]


def reject_early(environ, start_response):
    """Answers without reading the body (Expect: 100-continue must not be answered)."""
    start_response("413 Payload Too Large", [("Content-Type", "text/plain")])
    return [b"too big\n"]


def stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return (f"part {i}\n".encode() for i in range(5))


def stream_big(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return (b"x" * 65536 for _ in range(256))


def short(environ, start_response):
    start_response("200 OK", [("Content-Length", "100")])
    return [b"only ten b"]


def long(environ, start_response):
    start_response("200 OK", [("Content-Length", "5")])
    return [b"0123456789"]


def raise_before(environ, start_response):
    raise RuntimeError("failed before the headers")


def raise_after(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first part\n"
    raise RuntimeError("failed after the headers")


def inject(environ, start_response):
    start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: pwned=1")])
    return [b"never sent"]


BAD_HEADERS = {
    "crlf": ("X-Evil", "a\r\nSet-Cookie: pwned=1"), "lf": ("X-Evil", "a\nSet-Cookie: pwned=1"),
    "cr": ("X-Evil", "a\rpwned"), "nul": ("X-Evil", "a\0pwned"), "name-space": ("X-Evil: pwned", "1"),
    "name-colon": ("X-Evil:", "pwned"), "name-crlf": ("X-Evil\r\nSet-Cookie", "pwned"),
}


def bad_header(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), BAD_HEADERS[environ["QUERY_STRING"]]])
    return [b"never sent"]


def hop(environ, start_response):
    start_response("200 OK", [("Connection", "keep-alive"), ("Transfer-Encoding", "chunked"), ("X-Kept", "1")])
    return [b"hop"]


def no_content(environ, start_response):
    start_response("204 No Content", [])
    return [b"must not be sent"]


def write_callable(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    return [b"and returned"]


def exc_info_before(environ, start_response):
    try:
        raise ValueError("app error")
    except ValueError:
        start_response("200 OK", [("Content-Type", "text/plain")])
        start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"replaced status"]


def retry_after_refused_head(environ, start_response):
    """A head we refuse (a CR in a value, no Content-Length: chunked), caught by the app,
    then start_response again with exc_info and a Content-Length: its own 500."""
    write = start_response("200 OK", [("X-Split", "a\r\nSet-Cookie: evil=1")])
    try:
        write(b"never sent")
    except ValueError:  # InvalidHeader
        start_response("500 App Error", [("Content-Type", "text/plain"), ("Content-Length", "9")], sys.exc_info())
    return [b"app error"]


class Closing:
    """An iterable whose close() leaves a mark the test can find."""

    def __init__(self, environ):
        self.marker = environ["QUERY_STRING"]

    def __iter__(self):
        yield b"closing"

    def close(self):
        with open(self.marker, "w") as f:
            f.write("closed")


def closing(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing(environ)


_FILE = os.path.join(tempfile.gettempdir(), f"prefork-test-file-{os.getuid()}.bin")


def file(environ, start_response):
    if not os.path.exists(_FILE):
        with open(_FILE + ".tmp", "wb") as f:
            f.write(bytes(range(256)) * 4096)  # 1 MiB
        os.replace(_FILE + ".tmp", _FILE)
    f = open(_FILE, "rb")
    start_response("200 OK", [("Content-Length", str(os.path.getsize(_FILE)))])
    return environ["wsgi.file_wrapper"](f, 65536)


def _status_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def read_whole(environ, start_response):
    """read() with no size, as Django's request.body does; the RSS it cost."""
    rss_before = _status_kib("VmRSS")
    body = environ["wsgi.input"].read()
    out = json.dumps({
        "received": len(body), "type": type(body).__name__, "zeros": body.count(0) if len(body) < 1 << 20 else None,
        "rss_before_kib": rss_before, "peak_rss_kib": _status_kib("VmHWM"),
    }).encode()
    del body
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


def rss(environ, start_response):
    out = json.dumps({"rss_kib": _status_kib("VmRSS"), "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


def bodiless(environ, start_response):
    """/bodiless?204 or ?304 or ?100: a status that cannot have a body, given one anyway."""
    status = {"204": "204 No Content", "304": "304 Not Modified"}[environ["QUERY_STRING"]]
    start_response(status, [("Content-Length", "16"), ("Content-Type", "text/plain"), ("ETag", '"x"')])
    return [b"must not be sent"]


def not_latin1(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Name", "snow \u2603 man")])
    return [b"never sent"]


def slow_echo(environ, start_response):
    """echo, after a pause: a pipelined packet sent a little later arrives while we work."""
    import time

    time.sleep(0.1)
    return echo(environ, start_response)


def sleep(environ, start_response):
    """/sleep?0.2: hold the worker that long (a view waiting on its database)."""
    import time

    time.sleep(float(environ["QUERY_STRING"] or "0.2"))
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


_HOARD = []


def hog(environ, start_response):
    """/hog?60: allocate that many MB and keep them, as a leaking view would."""
    _HOARD.append(bytearray(int(environ["QUERY_STRING"] or "60") * 1024 * 1024))
    for i in range(0, len(_HOARD[-1]), 4096):
        _HOARD[-1][i] = 1  # touch every page: private memory, counted in USS
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


_WARM = None


def warm(environ, start_response):
    """/warm: a module-level cache built lazily on first use (tens of MB of Python objects),
    as a site's URL resolvers and template caches are: the worker's own memory until a refork."""
    global _WARM
    if _WARM is None:
        _WARM = {i: (f"entry {i}", [i] * 4) for i in range(250_000)}
    body = f"{os.getpid()} {len(_WARM)}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def spawn_thread(environ, start_response):
    """/spawn-thread: the worker runs a thread of the app's for good (an exporter, say)."""
    import threading

    threading.Thread(target=threading.Event().wait, name="app-exporter", daemon=True).start()
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


BAD_FRAMING = {
    "cl-twice-differing": ("200 OK", [("Content-Length", "3"), ("Content-Length", "10")]),
    "cl-negative": ("200 OK", [("Content-Length", "-5")]),
    "cl-plus": ("200 OK", [("Content-Length", "+10")]),
    "cl-underscore": ("200 OK", [("Content-Length", "1_0")]),
    "status-100": ("100 Continue", []),
    "status-101": ("101 Switching Protocols", [("Upgrade", "websocket")]),
    "status-099": ("099 Odd", []),
    "control-in-value": ("200 OK", [("X-Esc", "a\x1b[31mred")]),
    "control-in-status": ("200 O\x0bK", []),
    "status-not-latin1": ("200 \u2603", []),
}


def bad_framing(environ, start_response):
    """/bad-framing?kind: a response whose framing a client could not trust."""
    status, headers = BAD_FRAMING[environ["QUERY_STRING"]]
    start_response(status, headers)
    return [b"0123456789"]


def same_length_twice(environ, start_response):
    start_response("200 OK", [("Content-Length", "10"), ("Content-Length", "10")])
    return [b"0123456789"]


ROUTES = {
    "/echo": echo, "/validate": validator(strict_echo), "/lines": lines, "/count": count,
    "/reject": reject_early, "/stream": stream, "/stream-big": stream_big, "/short": short, "/long": long,
    "/raise-before": raise_before, "/raise-after": raise_after, "/inject": inject, "/bad-header": bad_header, "/hop": hop,
    "/nocontent": no_content, "/write": write_callable, "/exc-info": exc_info_before,
    "/retry-head": retry_after_refused_head,
    "/closing": closing, "/file": file, "/read-whole": read_whole, "/rss": rss, "/bodiless": bodiless,
    "/not-latin1": not_latin1, "/slow-echo": slow_echo, "/sleep": sleep, "/hog": hog,
    "/warm": warm, "/spawn-thread": spawn_thread,
    "/bad-framing": bad_framing, "/same-length-twice": same_length_twice, "*": echo,
}


def application(environ, start_response):
    path = environ["PATH_INFO"]
    route = path if path == "*" else "/" + path.split("/")[1]
    return ROUTES.get(route, django_app)(environ, start_response)
