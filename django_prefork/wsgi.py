"""WSGI (PEP 3333): a complete request in, the app's response checked and out.

`serve_connection()` is the app slot's whole per-request path: build environ,
call the app, check and frame its response, log it. It gets a connection
whose request the event loop (reactor.py) has read, and leaves it with
`keep_alive` saying whether it may carry another request; every byte goes
through the connection (transport.py), never a socket call of its own.
Everything that does not change between requests (the base environ, the
limits) is prepared once per worker in `WorkerContext`.
"""

import logging
import os
import re
import socket
import sys
import time
from email.utils import formatdate

from django.utils.log import log_message

from . import __version__, accesslog
from .conf import forwarded_trust
from .http import EMPTY_BODY, TOKEN, Body, HTTPError, Limits, decode_path, reason_phrase, split_target
from .lifecycle import ANSWER_TIMEOUT
from .transport import QUEUE, ClientDisconnected, check_deadline

log = logging.getLogger("django_prefork")
access_log = logging.getLogger("django.server")

HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
     "te", "trailer", "trailers", "transfer-encoding", "upgrade")
)
SERVER_SOFTWARE = f"django-prefork/{__version__}"
_BAD_VALUE = re.compile(r"[\r\n\0]")
# Controls other than CR and LF (counted apart), tab allowed: RFC 9110 §5.5 field values.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_BYTES = bytes(b for b in range(0x20) if b != 0x09) + b"\x7f"  # CR and LF too; tab allowed
_NAME_KINDS = {}  # response header name: its kind, below (see _name_kind)
_STATUSES = {}  # status line: its code (see _status_code)
_STATUS_LINES = {}  # status line: its bytes
_PLAIN, _HOP_BY_HOP, _CONTENT_LENGTH, _DATE = "plain", "hop-by-hop", "content-length", "date"
# How a head ends: the connection closes after it, or stays (HTTP/1.1's default, HTTP/1.0 when asked).
_END_CLOSE, _END_KEEP_11, _END_KEEP_10 = b"Connection: close\r\n\r\n", b"\r\n", b"Connection: keep-alive\r\n\r\n"
# (name, value) -> (kind, its line as sent, its Content-Length): a response header checked
# once (see _header_line), then reused; values that never repeat are not kept.
_LINES = {}
_LINES_KEPT, _LINE_VALUE_KEPT = 2048, 200


# What a proxy says to mean "the client spoke https": gunicorn's secure_scheme_headers.
FORWARDED_HTTPS = (("HTTP_X_FORWARDED_PROTO", "https"), ("HTTP_X_FORWARDED_SSL", "on"),
                   ("HTTP_X_FORWARDED_PROTOCOL", "ssl"))


class InvalidHeader(ValueError):
    """The app gave a header that would split or corrupt the response."""


class FileWrapper:
    """wsgi.file_wrapper: a file the server may send with os.sendfile."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read = self.filelike.read
        while block := read(self.blksize):
            yield block


class WorkerContext:
    """What every request of one worker shares: app, limits, prepared environ."""

    response = None  # the latest Response: a timed-out worker answers its client 500 through it

    def __init__(self, app, listener, config, record, stopping=lambda: False, may_queue=None):
        self.app = app
        self.keepalive = config.keepalive
        self.stopping = stopping  # callable: the worker is on its way out, every connection closes
        self.may_queue = may_queue  # callable(bytes): may the event loop finish a response this long
        self.start_request = record.start_request  # the app slot's heartbeat record: names the request if it hangs
        self.client_timeout = config.client_timeout
        self.limits = Limits(
            config.limit_request_line,
            config.limit_request_fields,
            config.limit_request_field_size,
            config.client_timeout,
            config.client_min_rate,
            config.timeout,
            config.limit_request_body,
        )
        self.access_log = config.access_log and config.access_log_format  # its format, or False: off
        self.unix = listener.sock.family == socket.AF_UNIX
        # A unix socket's peer is the proxy on this machine: trusted, as gunicorn does.
        self.trusts_forwarded = (lambda host: True) if self.unix else forwarded_trust(config.forwarded_allow_ips)
        # SCRIPT_NAME in the server's environment mounts the app under that prefix, as gunicorn does.
        self.script_name = os.environ.get("SCRIPT_NAME", "").rstrip("/")
        self.base_environ = {
            "SCRIPT_NAME": self.script_name,
            "SERVER_NAME": listener.host,
            "SERVER_PORT": listener.port,
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": config.threads > 1,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
        }


def serve_connection(conn, context):
    """Run the app on the request `conn` holds, complete; return (status, body bytes sent).

    Never raises for anything a client does. Afterwards `conn.keep_alive` says
    whether the connection may carry another request, and what the client
    has not taken yet is queued on `conn` for the event loop to finish.
    """
    request = conn.reader.request
    context.start_request(request.method, request.target)
    try:
        environ = build_environ(context, request, conn.client)
    except HTTPError as exc:
        conn.keep_alive = False
        return answer_error(conn, exc, context, request_line=None)
    if request.buffer is not None:
        environ["wsgi.input"] = request.buffer.as_input()
    elif request.complete and not request.body:
        environ["wsgi.input"] = EMPTY_BODY
    else:
        environ["wsgi.input"] = Body(conn.sock, request)
    keep_alive = bool(context.keepalive) and request.keep_alive and request.complete and not context.stopping()
    if request.complete:
        request.started = time.monotonic()  # the body is in: the deadline bounds the app and its response
    response = Response(conn, environ["REQUEST_METHOD"] == "HEAD", request.version == "1.1", request.deadline,
                        context.client_timeout, keep_alive, context.may_queue)
    context.response = response  # the one store per request the timeout's 500 needs
    conn.deadline = request.deadline  # what the event loop leaves unsent is bound by it too
    try:
        result = context.app(environ, response.start_response)
        try:
            if request.error is None:
                response.send(result)
        finally:
            if hasattr(result, "close"):
                result.close()
    except ClientDisconnected as exc:
        log.debug("client %s hung up mid-response: %s", environ["REMOTE_ADDR"], exc)
        conn.keep_alive = False
        conn.drop_output()
        return response.status_code, response.body_sent
    except Exception:
        if request.error is None:  # else the app only met the client's error: answer that
            log.exception("Error serving %s %s", environ["REQUEST_METHOD"], environ["RAW_URI"])
        if not response.head_sent:  # after it, closing the connection tells the client
            request.error = request.error or HTTPError(500, "Internal Server Error")
        response.keep_alive = False
    finally:
        if request.buffer is not None:
            request.buffer.close()
    if request.error is not None and not response.head_sent:
        request.error.head_only = response.head_only
        conn.keep_alive = False
        return answer_error(conn, request.error, context, _request_line(environ))
    if response.short_by:
        log.warning('"%s": response body %d bytes shorter than its Content-Length', _request_line(environ),
                    response.short_by)
    conn.keep_alive = response.keep_alive and not response.short_by and request.complete
    conn.said_all = request.last_words()
    if context.access_log:
        log_request(_request_line(environ), response.status_code, response.body_sent, context.access_log,
                    environ, started=request.started)
    return response.status_code, response.body_sent


def _below_mount(path_info, script_name):
    """PATH_INFO without the SCRIPT_NAME prefix; outside it, 404.

    The prefix matches whole segments: under /sub, /sub and /sub/x are the
    app's, /subway is not. gunicorn answers a path outside the prefix 500
    ("Configuration problem"); nothing is mounted there, so here it is a
    404 the app never sees, and a scanner's probes are no server errors.
    """
    if path_info == script_name or path_info.startswith(script_name + "/"):
        return path_info[len(script_name):]
    raise HTTPError(404, "Not Found")


def _forwarded_https(environ):
    """Do a trusted proxy's scheme headers say https? Headers that disagree are refused.

    Each header's first value counts, as Django reads SECURE_PROXY_SSL_HEADER:
    the one the proxy nearest the client set. A proxy that sets one of them
    may pass a client's other one on unchanged; when they disagree, no one
    can say which the proxy wrote, so the request is answered 400 (as gunicorn
    does) rather than trusted.
    """
    said = {environ[key].split(",", 1)[0].strip().lower() == https
            for key, https in FORWARDED_HTTPS if key in environ}
    if len(said) > 1:
        raise HTTPError(400, "Bad Request")
    return said == {True}


def build_environ(context, request, client):
    target = request.target
    if target[:1] == b"/" and b"#" not in target:  # origin-form, as nearly every request is
        path, _, query = target.partition(b"?")
        authority = None
    else:
        path, query, authority = split_target(request.method, target)
    environ = context.base_environ.copy()
    environ["REQUEST_METHOD"] = request.method.decode("latin-1")
    environ["PATH_INFO"] = decode_path(path) if b"%" in path else path.decode("latin-1")
    if context.script_name:
        environ["PATH_INFO"] = _below_mount(environ["PATH_INFO"], context.script_name)
    environ["QUERY_STRING"] = query.decode("latin-1")
    environ["RAW_URI"] = request.target.decode("latin-1")
    environ["SERVER_PROTOCOL"] = "HTTP/" + request.version
    if context.unix:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = "", ""
    else:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
    for name, value in request.headers:
        key = _KEYS.get(name, _UNSEEN)
        if key is _UNSEEN:
            key = _environ_key(name)
        if key is None:
            continue
        value = value.decode("latin-1")
        if key in environ:
            value = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + value
        environ[key] = value
    # Whom to trust is asked only of a request that says something (an address parse costs
    # more than the rest of the environ).
    if ("HTTP_X_FORWARDED_PROTO" in environ or "HTTP_X_FORWARDED_SSL" in environ
            or "HTTP_X_FORWARDED_PROTOCOL" in environ) \
            and context.trusts_forwarded(environ["REMOTE_ADDR"]) and _forwarded_https(environ):
        environ["wsgi.url_scheme"] = "https"
    if authority is not None:  # RFC 9112 §3.2.2: absolute-form wins over Host
        environ["HTTP_HOST"] = authority.decode("latin-1")
    if context.unix and "HTTP_HOST" in environ:
        host, _, port = environ["HTTP_HOST"].rpartition(":")
        if host and port.isdigit():
            environ["SERVER_NAME"], environ["SERVER_PORT"] = host, port
        else:
            environ["SERVER_NAME"] = environ["HTTP_HOST"]
    return environ


_KEYS = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}
_UNSEEN = object()


def _environ_key(name):
    """HTTP_* key for a lowercased header name; None for names with '_'.

    runserver drops them too: X_Forwarded_For must not pose as X-Forwarded-For.
    """
    try:
        return _KEYS[name]
    except KeyError:
        key = None if b"_" in name else "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if len(_KEYS) < 512:
            _KEYS[name] = key
        return key


class Response:
    """start_response, write() and the body: the app's answer, checked and sent.

    Framing, decided once the head is built: with a Content-Length the body
    is cut to it; without one, to an HTTP/1.1 client, chunked, so a body the
    app fails to finish is seen as cut short (the last chunk never goes out);
    to HTTP/1.0, delimited by the close. HEAD, 1xx, 204 and 304 have no body.
    """

    def __init__(self, conn, head_only, http11, deadline=None, io_timeout=0, keep_alive=False, may_queue=None):
        self.conn = conn
        self.head_only = head_only
        self.http11 = http11
        self.deadline = deadline  # a callable: the monotonic time the response must be out by (the watchdog's)
        self.io_timeout = io_timeout  # the longest the client may read nothing: the client timeout (0 = no limit)
        self.keep_alive = keep_alive  # the connection may stay open after it (the head says so)
        self.may_queue = may_queue  # callable(bytes): may the event loop finish sending this many? None: never
        self.sends = 0
        self.status = None
        self.status_code = 0
        self.headers = None
        self.head_sent = False
        self.has_body = True
        self.chunked = False
        self.body_sent = 0
        self.remaining = None  # bytes the app's Content-Length still promises
        self.short_by = 0

    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        code = _STATUSES.get(status) if type(status) is str else None
        if code is None:
            code = _status_code(status)
        self.status, self.status_code, self.headers = status, code, headers
        return self.write

    def _head(self):
        code = self.status_code
        bodiless = code < 200 or code in (204, 304)  # RFC 9110 §6.4.1: never a body, nor its framing
        self.has_body = not (bodiless or self.head_only)
        # From these headers alone: an app that caught our refusal of its first head
        # and called start_response again with exc_info gets a head of its new ones.
        self.remaining, self.chunked = None, False
        parts = [_status_line(self.status)]
        has_date = False
        for header in self.headers:
            try:
                kind, line, length = _LINES[header]  # a line checked before: apps send the same few
            except (KeyError, TypeError):
                kind, line, length = _header_line(header)
            if kind is _PLAIN:
                parts.append(line)
                continue
            if kind is _HOP_BY_HOP:
                log.warning("dropped hop-by-hop header %s: %s (the server owns the connection)", *header)
                continue
            if kind is _CONTENT_LENGTH:
                if bodiless:
                    continue
                if line is None:
                    raise InvalidHeader(f"refusing to send Content-Length {length!r}")
                if self.remaining is not None:
                    if length != self.remaining:
                        raise InvalidHeader(f"refusing to send two Content-Lengths, {self.remaining} and {length}")
                    continue  # the same length twice: say it once
                self.remaining = length
            else:
                has_date = True
            parts.append(line)
        if not has_date:
            parts.append(_date_line())
        if self.has_body and self.remaining is None:
            if self.http11:
                self.chunked = True
                parts.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.keep_alive = False  # HTTP/1.0 without a length: the close delimits the body
        parts.append(_END_CLOSE if not self.keep_alive else _END_KEEP_11 if self.http11 else _END_KEEP_10)
        return b"".join(parts)

    def write(self, data):
        """PEP 3333's write() callable, and the path every body chunk takes."""
        if self.status is None:
            raise AssertionError("write() before start_response()")
        if type(data) is not bytes and not isinstance(data, (bytes, bytearray)):
            # Refused before the head goes out, so the client still gets its 500 (PEP 3333: bytestrings).
            raise TypeError(f"the app gave a {type(data).__name__} where the body must be bytes")
        head = b""
        if not self.head_sent:
            head = self._head()
            self.head_sent = True
        if not self.has_body:
            if data and not self.head_only:
                _warn_dropped_body(self.status_code)
            data = b""
        elif self.remaining is not None:
            if len(data) > self.remaining:
                log.warning("response body longer than its Content-Length: cut at %d bytes",
                            self.body_sent + self.remaining)
                data = data[: self.remaining]
            self.remaining -= len(data)
        self.body_sent += len(data)
        if self.chunked and data:
            if len(data) < 65536:
                data = b"%x\r\n%b\r\n" % (len(data), data)
            else:
                head += b"%x\r\n" % len(data)
                self._send(head)
                self._send(data)
                head, data = b"", b"\r\n"
        if head and len(data) < 65536:
            self._send(head + data)  # one segment for the common small response
        else:
            if head:
                self._send(head)
            if data:
                self._send(data)

    def _send(self, data):
        # What the client does not take at once is left to the event loop when
        # there is room (the app slot moves on to the next request), else sent
        # here, waiting for the client within the client timeout and the deadline.
        conn = self.conn
        if self.sends:
            check_deadline(self.deadline)
        self.sends += 1
        if not conn.out and conn.out_file is None and conn.spool_file is None:
            sent = conn.send_some(data)
            if sent >= len(data):
                return
            data = memoryview(data)[sent:] if type(data) is bytes else data[sent:]  # the app may reuse a bytearray
        may = self.may_queue(len(data)) if self.may_queue is not None else None
        if may is QUEUE and conn.spool_file is None:
            conn.queue(data if type(data) is not bytearray else bytes(data))
        elif may:  # memory spent: the rest goes to a file the loop sends from
            conn.spool(data)
        else:  # past what a worker may hold: the app waits for its client, as a sync worker does
            conn.seal_spool()
            conn.send(data, self.deadline, self.io_timeout)

    def send(self, result):
        """Send the app's iterable; only a body sent to its end gets the last chunk."""
        if isinstance(result, FileWrapper) and self.status is not None and _has_fileno(result.filelike) \
                and (self.head_only or not self.http11 or _has_length(self.headers)):
            self.write(b"")
            if self.has_body:
                self._sendfile(result.filelike)
        else:
            # start_response may come with the first item (PEP 3333), so iterate
            # at least once even when no body will be sent.
            for chunk in result:
                if chunk:
                    self.write(chunk)
                if self.head_sent and (self.remaining == 0 or not self.has_body):
                    break
        if not self.head_sent:
            self.write(b"")
        if self.chunked:
            self._send(b"0\r\n\r\n")
        if self.remaining and self.has_body:
            self.short_by = self.remaining

    def _sendfile(self, filelike):
        try:
            offset = filelike.tell()
        except (AttributeError, OSError):
            offset = 0
        if self.may_queue is not None and self.conn.spool_file is None and self.may_queue(0) is QUEUE:
            # The event loop sends it with no copy, from a descriptor of its own:
            # the app's close() of the file (now, at the end of the request) cannot cut it.
            self.conn.queue_file(os.dup(filelike.fileno()), offset, self.remaining)
            self.body_sent += self.remaining or max(0, os.fstat(filelike.fileno()).st_size - offset)
            self.remaining = 0 if self.remaining is not None else None
            return
        sent = self.conn.sendfile(filelike.fileno(), offset, self.remaining, self.deadline, self.io_timeout)
        self.body_sent += sent
        if self.remaining is not None:
            self.remaining -= sent


def _has_length(headers):
    return any(name.lower() == "content-length" for name, _ in headers)


def _latin1(text):
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


_warned_bodiless = set()


def _warn_dropped_body(status_code):
    # Once per worker and status: an app that does it, does it every time.
    if status_code not in _warned_bodiless:
        _warned_bodiless.add(status_code)
        log.warning("dropped the body of a %d response: it cannot have one (RFC 9110)", status_code)


def _status_line(status):
    line = _STATUS_LINES.get(status)
    if line is None:
        line = f"HTTP/1.1 {status}\r\n".encode("latin-1")  # _status_code checked it
        if len(_STATUS_LINES) < 1024:
            _STATUS_LINES[status] = line
    return line


def _header_line(header):
    """(kind, line, Content-Length) of a header the app gave, checked: a name that is a
    token, a latin-1 line, and no control byte in it (response splitting); kept in
    _LINES when it may well come again. A Content-Length that is not one gives
    (kind, None, the value): refused only if the response could have a body."""
    name, value = header
    kind = _NAME_KINDS.get(name)
    if kind is None:
        kind = _name_kind(name)
    if kind is _HOP_BY_HOP:
        return kind, None, None
    length = None
    if kind is _CONTENT_LENGTH:
        # What the regex [0-9]{1,18} says, without one per response.
        if type(value) is not str or not (value.isdigit() and value.isascii() and len(value) <= 18):
            return kind, None, value
        length = int(value)
    try:
        line = f"{name}: {value}\r\n".encode("latin-1")
    except UnicodeEncodeError:
        raise InvalidHeader(f"refusing to send header {name!r}: {value!r} is not latin-1") from None
    if len(line) - len(line.translate(None, _CONTROL_BYTES)) != 2:  # only our CRLF: one C pass, no regex
        raise InvalidHeader(f"refusing to send header {name!r}: {value!r}")
    if type(value) is str and type(name) is str and len(value) <= _LINE_VALUE_KEPT \
            and len(_LINES) < _LINES_KEPT and name.lower() != "set-cookie":
        _LINES[(name, value)] = kind, line, length
    return kind, line, length


def _status_code(status):
    """The code of a status line, checked here once, then remembered: apps send the same few."""
    code = status[:3] if type(status) is str else ""
    # A final status: 1xx cannot end a response (and 101 would switch protocols, never done here).
    if not (code.isascii() and code.isdigit() and "200" <= code <= "599" and status[3:4] == " "
            and not _BAD_VALUE.search(status) and not _CONTROL.search(status) and _latin1(status)):
        raise InvalidHeader(f"bad status {status!r}")
    if len(_STATUSES) < 1024:
        _STATUSES[status] = int(code)
    return int(code)


def _name_kind(name):
    """What _head does with a header name (checked here once, then remembered): apps send the same few."""
    if type(name) is not str or not name.isascii() or not TOKEN.match(name.encode()):
        raise InvalidHeader(f"refusing to send header name {name!r}")
    lower = name.lower()
    kind = (_HOP_BY_HOP if lower in HOP_BY_HOP else _CONTENT_LENGTH if lower == "content-length"
            else _DATE if lower == "date" else _PLAIN)
    if len(_NAME_KINDS) < 1024:
        _NAME_KINDS[name] = kind
    return kind


def _has_fileno(filelike):
    try:
        filelike.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


_date = [0, "", b""]


def http_date():
    now = int(time.time())
    if _date[0] != now:
        text = formatdate(now, usegmt=True)
        _date[:] = now, text, f"Date: {text}\r\n".encode()
    return _date[1]


def _date_line():
    http_date()
    return _date[2]


def answer_error(conn, exc, context, request_line, may_queue=None):
    """The server's own answer (4xx, 5xx), through the same Response as the app's.

    The connection closes after it: the caller lingers on it first, unless
    the client was too slow for us (408) and gets no more of our time.
    """
    conn.keep_alive = False
    body = f"{exc.status} {exc.reason}\n".encode("latin-1", "replace")
    response = Response(conn, head_only=exc.head_only, http11=True, io_timeout=context.client_timeout,
                        may_queue=may_queue)
    response.start_response(
        f"{exc.status} {reason_phrase(exc.status)}",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    try:
        response.write(body)
    except ClientDisconnected:
        return exc.status, 0
    if exc.status < 500:
        log.info("answered %d to %s: %s", exc.status, request_line or "a malformed request", exc.reason)
    if context.access_log:
        log_request(request_line or "-", exc.status, len(body), context.access_log, client=conn.client)
    return exc.status, response.body_sent


def _request_line(environ):
    return f'{environ["REQUEST_METHOD"]} {environ["RAW_URI"]} {environ["SERVER_PROTOCOL"]}'


def answer_timeout(response, line, started, config):
    """The watchdog's 500 to the client of a request past PREFORK_TIMEOUT, if no head went
    out yet (a close without a word makes a browser send the request again, to the next
    worker); bounded by ANSWER_TIMEOUT. Returns (status, body bytes sent) for the counters."""
    if response.head_sent:
        return response.status_code, response.body_sent  # closing tells the client the rest
    conn = response.conn
    conn.drop_output()
    body = f"500 Internal Server Error: the request timed out after {time.monotonic() - started:.0f} s\n".encode()
    answer = Response(conn, response.head_only, response.http11, io_timeout=ANSWER_TIMEOUT)
    answer.start_response("500 Internal Server Error", [
        ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
    ])
    try:
        answer.write(body)
    except ClientDisconnected:
        return 500, 0
    if config.access_log:
        log_request(line, 500, len(body), config.access_log_format, client=conn.client, started=started)
    return 500, len(body)


def log_request(request_line, status, size, fmt="runserver", environ=None, client=None, started=None):
    """One access log line in `fmt` (accesslog.py), with runserver's levels, logger and formatter."""
    server_time = time.strftime("%d/%b/%Y %H:%M:%S")
    if fmt == "runserver":
        log_message(access_log, '"%s" %s %s', request_line, str(status), str(size),
                    status_code=status, server_time=server_time)
        return
    fields = accesslog.fields(request_line, status, size, environ, client, started)
    line = accesslog.combined(fields) if fmt == "combined" else accesslog.as_json(fields)
    # The line escaped itself, in its own format's way: as the message, it is not escaped again.
    log_message(access_log, line, status_code=status, server_time=server_time,
                **{key: fields[key] for key in ("client_addr", "duration", "user_agent", "request_id")})
