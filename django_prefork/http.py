"""HTTP/1.x requests: the head parsed by httptools (llhttp), the body buffered or streamed.

Theory of operation
-------------------
A connection may carry many requests, one after another. `Reader` takes
one request from the bytes a connection brings, and says where it ends:
whatever follows (a pipelined request, excess bytes after an HTTP/1.0
request) is never parsed into it; it is the next Reader's, or dropped when
the connection closes after this one. Method, version and upgrade flag are
captured when the head completes, the target only before it.

llhttp, in its strict default, already refuses most smuggling vectors:
Content-Length with Transfer-Encoding, duplicate or signed lengths, obs-fold,
bare CR or LF, controls in field values, bad chunk framing. What it leaves to
its caller, this module does:

* limits: llhttp has none, so the reader caps the request target, the
  number and size of header lines and the bytes of the whole head; trailers
  share the header budget, and chunked framing or a trailer line that makes
  no progress for longer than a header line may be is cut off (431) before
  httptools, which buffers a field until it ends, can grow with it;
* the rules of RFC 9112 it does not know: exactly one Host, at most one
  Content-Type, no chunked on HTTP/1.0, chunked last, 501 for codings we
  cannot decode and for methods it does not know, 505 for versions other
  than 1.0 and 1.1, no CONNECT or authority-form target;
* Upgrade, which httptools turns into "no body": we never switch protocols,
  so the body is framed by a second parser (`_body_parser`) as if the
  Upgrade field were not there;
* the request target, split here rather than by httptools.parse_url (it wraps
  an unmaintained parser).

Bodies. By default a body is whole before the app sees its request
(`BodyBuffer`: memory up to PREFORK_BUFFER_BODY, then a temporary file);
the event loop's deadlines bound how slowly it may come. With
PREFORK_BUFFER_BODY = None the app reads it from the socket as it comes
(`Body`): a Content-Length body straight from the socket, a chunked one
through llhttp; either way `Body` holds only what the app has not read yet,
and a body slower than PREFORK_CLIENT_MIN_RATE once its first client timeout
is over is answered 408 (`_Clock`), long before the watchdog's timeout.

The parser holds its protocol object, the Request, which holds the parser:
a cycle only the garbage collector would free. Once a request needs its
parser no more (its head complete without a body, or its body counted here,
or ended), the Request lets go of it, and both are freed by refcount the
moment the request ends, with no collector pass.
"""

import io
import re
import tempfile
import time
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

import httptools

from . import debugger
from .lifecycle import request_time
from .sockets import set_io_timeout

RECV_SIZE = 65536
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
FORBIDDEN_TRAILERS = frozenset(
    (b"content-length", b"transfer-encoding", b"host", b"content-type", b"content-encoding")
)
_HEAD_END = b"\r\n\r\n"
# Where body bytes land off the socket before the parser or the app's buffer
# takes them: one per process, as a worker serves one request at a time.
_SCRATCH = memoryview(bytearray(RECV_SIZE))


def reason_phrase(status):
    """The standard reason phrase of `status` (RFC 9110's names), for the answers the server writes itself."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class HTTPError(Exception):
    """A request the server answers itself, with `status` and a short reason."""

    head_only = False  # the request was a HEAD: no body in the answer

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _MessageEnd(Exception):
    """Raised from on_message_complete: llhttp stops before the next message."""


class Limits:
    __slots__ = ("request_line", "fields", "field_size", "head", "client_timeout", "min_rate", "body_time", "body")

    def __init__(self, request_line, fields, field_size, client_timeout=10, min_rate=0, timeout=0, body=0):
        self.request_line = request_line
        self.body = body  # the largest body, bytes (0: no limit): a client declaring or sending more gets 413
        self.fields = fields
        self.field_size = field_size
        # Bounds what llhttp buffers for a header line that never ends.
        self.head = request_line + 16 + fields * (field_size + 2) + 2
        self.client_timeout = client_timeout
        self.min_rate = min_rate  # body bytes/s owed once client_timeout is spent; 0 = no minimum
        self.body_time = request_time(timeout)  # from the request's start: body in, response out


# The header names a rule of ours looks at as they arrive (Request.on_header); any other is kept as it is.
_RULED = frozenset((b"host", b"content-type", b"content-length", b"transfer-encoding", b"expect"))


class Request:
    """The parser's callbacks, collecting one request into plain fields."""

    def __init__(self, limits):
        self.limits = limits
        self.parser = None
        self.method = b""
        self.target = b""
        self.version = "1.1"
        self.headers = []  # (name lowercased, value) in arrival order
        self.host_count = 0
        self.content_type_seen = False
        self.content_length = None
        self.chunked = False
        self.upgrade = False
        self.keep_alive = False
        self.expect_continue = False
        self.headers_complete = False
        self.complete = False
        self.trailers = 0
        self.started = 0.0  # monotonic: when its first bytes were read
        # Whether the bytes being fed may run past the message's end. Not while a
        # head is fed up to its blank line (the common request: no exception).
        self.stop_at_end = True
        self.progress = False  # a body byte or a whole trailer arrived in this feed
        self.body = bytearray()  # decoded body bytes the app has not read yet
        self.sink = self.body.extend
        self.buffer = None  # the BodyBuffer holding the whole body, when the server buffers it
        self.error = None  # an HTTPError met after the head, while reading the body

    # -- httptools callbacks -------------------------------------------------

    def on_url(self, url):
        self.target += url
        if len(self.target) > self.limits.request_line:
            raise HTTPError(414, "Request-URI Too Long")

    def on_header(self, name, value):
        if self.headers_complete:
            return self._on_trailer(name, value)
        if len(self.headers) >= self.limits.fields:
            raise HTTPError(431, "Too many header fields")
        if len(name) + len(value) + 2 > self.limits.field_size:
            raise HTTPError(431, "Header field too long")
        name = name.lower()
        if name not in _RULED:
            self.headers.append((name, value))
            return
        if name == b"host":
            self.host_count += 1
        elif name == b"content-type":
            if self.content_type_seen:
                raise HTTPError(400, "More than one Content-Type header")
            self.content_type_seen = True
        elif name == b"content-length":
            # llhttp has checked it is digits, and fits in 64 bits once its leading
            # zeros are gone; int() itself refuses over 4300 digits.
            self.content_length = int(value.lstrip(b"0") or b"0")
        elif name == b"transfer-encoding":
            self._check_codings(value)
        elif name == b"expect" and self.parser.get_http_version() != "1.0":  # RFC 9110 §10.1.1: ignored on 1.0
            if value.lower() != b"100-continue":
                raise HTTPError(417, "Expectation Failed")
            self.expect_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self):
        # The first message's, whatever follows it in the same packet.
        parser = self.parser
        self.method = parser.get_method()
        self.version = parser.get_http_version()
        self.upgrade = parser.should_upgrade() and self.method != b"CONNECT"
        self.keep_alive = parser.should_keep_alive() and not self.upgrade  # llhttp reads Connection and the version
        self.headers_complete = True

    def on_body(self, data):
        self.progress = True
        self.sink(data)

    def on_message_complete(self):
        self.complete = True
        if self.stop_at_end:
            raise _MessageEnd  # llhttp stops here: the next message's bytes are never parsed

    # -- rules llhttp leaves to us ---------------------------------------------

    def _check_codings(self, value):
        codings = [c.strip(b" \t").lower() for c in value.split(b",")]
        if not all(TOKEN.match(c) for c in codings):
            raise HTTPError(400, "Bad Transfer-Encoding")
        if self.chunked or b"chunked" in codings[:-1]:
            raise HTTPError(400, "chunked must be the last transfer coding")
        if any(c != b"chunked" for c in codings):
            raise HTTPError(501, "Unsupported transfer coding")
        self.chunked = True

    def _on_trailer(self, name, value):
        self.progress = True
        self.trailers += 1
        if len(self.headers) + self.trailers > self.limits.fields:
            raise HTTPError(431, "Too many header and trailer fields")
        if len(name) + len(value) + 2 > self.limits.field_size:
            raise HTTPError(431, "Trailer field too long")
        if name.lower() in FORBIDDEN_TRAILERS:
            raise HTTPError(400, "Forbidden trailer field")

    def deadline(self):
        """When reading the body or writing the response must stop: before the watchdog fires.

        None without a timeout. A request paused in pdb gets the pause back,
        as the watchdog does (debugger.py).
        """
        if not self.limits.body_time:
            return None
        return self.started + self.limits.body_time + debugger.paused_since(self.started)

    def last_words(self):
        """Did the client say this request, read whole and without a body, is its last?

        Its own word only (an Upgrade request is closed by us, not by it), and only for a
        request without a body: bytes after a body (an old browser's CRLF, a miscounted
        length) are what lingering is for; after a bodyless request a client sends nothing.
        """
        return (not self.keep_alive and not self.upgrade and self.complete
                and self.content_length is None and not self.chunked)

    def check_head(self):
        if self.version not in ("1.1", "1.0"):
            raise HTTPError(505, "HTTP Version Not Supported")
        if self.version == "1.1" and self.host_count != 1:
            raise HTTPError(400, "Exactly one Host header is required")
        if self.host_count > 1:
            raise HTTPError(400, "More than one Host header")
        if self.chunked and self.version == "1.0":
            raise HTTPError(400, "chunked is not allowed on HTTP/1.0")
        if self.method == b"CONNECT":
            raise HTTPError(405, "CONNECT is not supported")


class _BodyOnly:
    """Callbacks of the parser that frames an Upgrade request's body."""

    def __init__(self, request):
        self.request = request
        self.in_body = False

    def on_headers_complete(self):
        self.in_body = True

    def on_header(self, name, value):
        if self.in_body:
            self.request.on_header(name, value)

    def on_body(self, data):
        self.request.on_body(data)

    def on_message_complete(self):
        self.request.on_message_complete()


def _body_parser(request, rest):
    """A parser for the body of an Upgrade request: the head it saw said "no body".

    It is primed with a head carrying only the framing, then fed the bytes
    that followed the real head.
    """
    parser = httptools.HttpRequestParser(_BodyOnly(request))
    request.complete = False
    framing = b"Transfer-Encoding: chunked" if request.chunked else b"Content-Length: %d" % (request.content_length or 0)
    _feed(parser, request, b"POST / HTTP/1.1\r\nHost: x\r\n" + framing + _HEAD_END)
    if rest and not request.complete:
        _feed(parser, request, rest)
    return parser


def _feed(parser, request, data):
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        return  # CONNECT or Upgrade, paused at its head's end: check_head refuses or _body_parser frames it
    except httptools.HttpParserCallbackError as exc:
        if isinstance(exc.__context__, _MessageEnd):
            return
        if isinstance(exc.__context__, HTTPError):
            raise exc.__context__ from None
        raise HTTPError(400, "Bad request") from exc  # a rule of ours that did not expect these bytes
    except httptools.HttpParserInvalidMethodError:
        # RFC 9110 §9.1: a well-formed method we do not know is 501, not 400.
        method = b"" if request.headers_complete else bytes(data).lstrip(b"\r\n").split(b" ", 1)[0]
        if method and TOKEN.match(method):
            raise HTTPError(501, "Method Not Implemented") from None
        raise HTTPError(400, "Invalid method") from None
    except httptools.HttpParserError as exc:
        message = str(exc)
        if "HTTP version" in message:
            raise HTTPError(505, "HTTP Version Not Supported") from None
        raise HTTPError(400, message) from None


class Reader:
    """One request, read from bytes as they arrive: no socket in here (h11's way).

    The event loop feeds it whatever a connection's recv() brought;
    `feed(data)` takes the bytes that belong to this request and returns how
    many, so the rest (a pipelined request) is left for a fresh Reader. A
    message boundary is found without trusting the parser to stop in time:

    * the head ends at its first blank line (llhttp refuses bare CR and LF
      and obs-fold, so no earlier CRLFCRLF can end it), found here, with the
      last three bytes of the previous read kept for a blank line split
      across two reads;
    * a Content-Length body is counted here, the parser never sees it;
    * a chunked body always ends with a blank line too (the last-chunk line
      or the last trailer, then CRLF), so it is fed in pieces cut after each
      CRLFCRLF and can only complete at a piece's end.

    `streaming`: the request goes to the app once its head is complete and
    the app reads the rest of the body from the socket (`Body`); what
    arrived with the head is kept for it in request.body.
    """

    __slots__ = ("request", "tail", "received", "left", "stalled", "first", "buffer_body")

    def __init__(self, limits, buffer_body=None):
        self.buffer_body = buffer_body  # bytes of body in memory, then a file; None: the body is streamed
        request = self.request = Request(limits)
        request.parser = httptools.HttpRequestParser(request)
        self.tail = b""
        self.received = 0  # head bytes
        self.left = None  # Content-Length body bytes still to come
        self.stalled = 0  # chunked bytes fed since a body byte or a trailer came out
        self.first = b""  # the start of the request line: was it a HEAD?

    @property
    def head_complete(self):
        return self.request.headers_complete

    @property
    def complete(self):
        return self.request.complete

    def feed(self, data):
        """Take this request's bytes from `data`; return how many. HTTPError for a bad request."""
        request = self.request
        if not request.started:
            request.started = time.monotonic()
        try:
            used = 0
            if not request.headers_complete:
                used = self._feed_head(data)
                if not request.headers_complete or request.complete:
                    return used
            if self.left is not None:
                take = min(self.left, len(data) - used)
                if take:
                    request.sink(data[used:used + take] if used or take < len(data) else data)
                    self.left -= take
                if not self.left:
                    request.complete = True
                return used + take
            return used + self._feed_chunked(data, used)
        except HTTPError as exc:
            exc.head_only = self.first.lstrip(b"\r\n").startswith(b"HEAD ")
            raise

    def _feed_head(self, data):
        request = self.request
        if len(self.first) < 16:
            self.first += data[:16]
        at = 0
        while True:
            end = _find_blank_line(self.tail, data, at)
            if end < 0:
                break
            request.stop_at_end = False  # a head fed up to its blank line ends where llhttp stops
            _feed(request.parser, request, data[at:end] if at or end < len(data) else data)
            request.stop_at_end = True
            at = end
            self.tail = b""
            if request.headers_complete:
                self.received += at
                self._head_done()
                return at
        if at < len(data):
            _feed(request.parser, request, data[at:])  # no blank line in it: it cannot end the head
            self.tail = (self.tail + data[at:])[-3:]
        self.received += len(data)
        if self.received > request.limits.head:
            raise HTTPError(431, "Request header fields too large")
        return len(data)

    def _head_done(self):
        request = self.request
        request.check_head()
        limit = request.limits.body
        if limit and (request.content_length or 0) > limit:
            raise HTTPError(413, f"Content Too Large: the body may be at most {limit} bytes")
        if request.upgrade:
            request.parser = _body_parser(request, b"")
        if request.complete:
            request.parser = None  # the cycle: see the module's docstring
            return
        if self.buffer_body is not None:
            request.buffer = BodyBuffer(self.buffer_body)
            request.sink = request.buffer.write
        if not request.chunked:
            self.left = request.content_length or 0
            request.parser = None  # counted here from now on
            if not self.left:
                request.complete = True

    def _feed_chunked(self, data, at):
        """Feed the parser up to each blank line; return the bytes taken."""
        request = self.request
        start = at
        while at < len(data) and not request.complete:
            end = _find_blank_line(self.tail, data, at)
            piece_end = end if end >= 0 else len(data)
            request.progress = False
            _feed(request.parser, request, data[at:piece_end])
            self.tail = (self.tail + data[at:piece_end])[-3:] if end < 0 else b""
            if request.progress or request.complete:
                self.stalled = 0
            else:
                # Chunk framing or a trailer line with no end in sight: httptools
                # keeps a field whole until it ends, so cut it off here.
                self.stalled += piece_end - at
                if self.stalled > request.limits.field_size + 2:
                    raise HTTPError(431, "Trailer or chunk framing too long")
            limit = request.limits.body
            if limit and request.buffer is not None and request.buffer.size > limit:
                raise HTTPError(413, f"Content Too Large: the body may be at most {limit} bytes")
            at = piece_end
        if request.complete:
            request.parser = None
        return at - start


class BodyBuffer:
    """A request body held until it is whole: in memory up to `memory` bytes, then in a
    temporary file (as nginx's client_body_buffer_size), so an upload of any size or speed
    reaches the app complete and costs the worker at most `memory` bytes of it. All the
    bodies a worker holds share WORKER_MEMORY: past it, the next bytes go to a file too."""

    WORKER_MEMORY = 32 * 1024 * 1024
    held = 0  # bytes in memory, over every BodyBuffer of this process

    __slots__ = ("memory", "data", "file", "size")

    def __init__(self, memory):
        self.memory = memory
        self.data = bytearray()
        self.file = None
        self.size = 0

    def write(self, data):
        self.size += len(data)
        if self.file is None:
            if len(self.data) + len(data) <= self.memory and BodyBuffer.held + len(data) <= self.WORKER_MEMORY:
                self.data += data
                BodyBuffer.held += len(data)
                return
            self.file = tempfile.TemporaryFile(prefix="prefork-body-")
            self.file.write(self.data)
            self._forget_data()
        self.file.write(data)

    def as_input(self):
        """wsgi.input: the whole body, from its start."""
        if self.file is not None:
            self.file.seek(0)
            return self.file
        return io.BytesIO(self.data)

    def close(self):
        self._forget_data()
        if self.file is not None:
            self.file.close()  # a TemporaryFile: unlinked already, the space freed with this

    def _forget_data(self):
        if self.data is not None:
            BodyBuffer.held -= len(self.data)
            self.data = None


def _find_blank_line(tail, data, at):
    """The index in `data` just past the first CRLFCRLF at or after `at` (the 3 bytes of
    `tail` before `data` count when `at` is 0); -1 when there is none."""
    if tail and not at:
        joined = tail + data[:3]
        found = joined.find(_HEAD_END)
        if found >= 0:
            return found + 4 - len(tail)
    found = data.find(_HEAD_END, at)
    return found + 4 if found >= 0 else -1


def split_target(method, target):
    """Return (path, query, authority or None) of a request target (RFC 9112 §3.2).

    Origin-form and absolute-form are served; asterisk-form only for OPTIONS.
    The fragment, which clients should not send, is dropped.
    """
    target = target.split(b"#", 1)[0]
    authority = None
    if not target.startswith(b"/"):
        if target == b"*" and method == b"OPTIONS":
            return b"*", b"", None
        scheme, sep, rest = target.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https"):
            raise HTTPError(400, "Bad request target")
        slash = rest.find(b"/")
        query_mark = rest.find(b"?")
        ends = [i for i in (slash, query_mark) if i >= 0]
        end = min(ends) if ends else len(rest)
        authority, target = rest[:end], rest[end:]
        if not authority or b"@" in authority:
            raise HTTPError(400, "Bad request target")
        if not target.startswith(b"/"):
            target = b"/" + target
    path, _, query = target.partition(b"?")
    return path, query, authority


def decode_path(path):
    """Percent-decode to the latin-1 str PEP 3333 wants for PATH_INFO."""
    if b"%" in path:
        path = unquote_to_bytes(path)
    return path.decode("latin-1")


class _Clock:
    """How long a body may keep the worker waiting on its client.

    * Any silence longer than the client timeout: 408 (SO_RCVTIMEO).
    * PREFORK_CLIENT_MIN_RATE, Apache mod_reqtimeout's MinRate over windows:
      the first client timeout of waiting is free; after it, every window of
      a client timeout's worth of waiting must bring `min_rate` bytes a
      second. Bytes sent early never pay for silence later (a cumulative
      budget let 8 MB sent at once buy half an hour of one byte every few
      seconds). Only time spent waiting in recv counts, so an app that is
      slow to read never makes its client look slow.
    * The whole body must arrive before the watchdog would kill the worker
      (`Limits.body_time` after the request began): a body too slow for
      PREFORK_TIMEOUT is answered 408 and the worker lives. The kernel's recv
      timeout is lowered (a syscall) only when less than a client timeout is
      left before that deadline.
    """

    __slots__ = ("sock", "limits", "deadline", "waited", "window_waited", "window_bytes", "lowered")

    def __init__(self, sock, limits, deadline):
        self.sock = sock
        self.limits = limits
        self.deadline = deadline  # the request's deadline method
        self.waited = 0.0
        self.window_waited = 0.0
        self.window_bytes = 0
        self.lowered = False

    def recv_into(self, view):
        limits = self.limits
        deadline = self.deadline()
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _slow("the body took longer than the request may run (PREFORK_TIMEOUT)")
            if left < limits.client_timeout:
                set_io_timeout(self.sock, left)
                self.lowered = True
        started = time.monotonic()
        try:
            count = self.sock.recv_into(view)
        except BlockingIOError:  # SO_RCVTIMEO: the client stalled mid-body
            raise _slow("the client sent nothing for the client timeout") from None
        finally:
            waited = time.monotonic() - started
            self.waited += waited
        if limits.min_rate and self.waited > limits.client_timeout:
            self.window_waited += min(waited, self.waited - limits.client_timeout)
            self.window_bytes += count
            if self.window_waited >= limits.client_timeout:
                if self.window_bytes < limits.min_rate * self.window_waited:
                    raise _slow(f"the body came at {self.window_bytes / self.window_waited:.0f} bytes/s, "
                                f"below PREFORK_CLIENT_MIN_RATE {limits.min_rate}")
                self.window_waited, self.window_bytes = 0.0, 0
        return count


def _slow(why):
    return TimeoutError(f"408: {why}")


class EmptyBody:
    """wsgi.input of a request that has no body: one for all of them, it holds nothing."""

    __slots__ = ()

    def read(self, size=-1):
        return b""

    def readline(self, size=-1):
        return b""

    def readlines(self, hint=-1):
        return []

    def __iter__(self):
        return self

    def __next__(self):  # an iterator, as Body is: next(wsgi.input) ends, it does not fail
        raise StopIteration


EMPTY_BODY = EmptyBody()


class Body:
    """wsgi.input: the request body, read from the socket only as the app asks.

    `Expect: 100-continue` is answered on the first read, so an app that
    rejects a request early never makes the client send its upload.
    """

    def __init__(self, sock, request):
        self._sock = sock
        self._request = request
        self._clock = None  # made on the first recv: most requests have no body
        self._continue_pending = request.expect_continue and not request.complete
        self._stalled = 0  # bytes fed to the parser since a body byte or trailer came out
        if request.chunked or request.complete:
            self._left = None  # framed by the parser
        else:
            # Content-Length: the parser is done with it; what it already
            # passed on (bytes that came with the head) is in request.body.
            self._left = (request.content_length or 0) - len(request.body)
            request.parser = None  # never fed again: the bytes are counted here (the cycle: see the module's docstring)
            if self._left <= 0:
                request.complete = True

    def _recv_into(self, view):
        """recv_into for the body, minding 100-continue, a hang-up and the min rate."""
        request = self._request
        if self._continue_pending:
            self._continue_pending = False
            self._sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self._clock is None:
            self._clock = _Clock(self._sock, request.limits, request.deadline)
        try:
            count = self._clock.recv_into(view)
        except TimeoutError as exc:
            request.error = HTTPError(408, f"Request Timeout: {str(exc)[5:]}")
            raise
        if not count:
            request.error = HTTPError(400, "Client closed before the end of the body")
            raise ConnectionAbortedError(request.error.reason)
        return count

    def _fill(self):
        """Bring one more recv() worth of body into request.body; False at the end."""
        request = self._request
        if request.complete or request.error:
            return False
        if self._left is not None:
            view = _SCRATCH[: min(RECV_SIZE, self._left)]
            count = self._recv_into(view)
            request.sink(view[:count])
            self._left -= count
            request.complete = not self._left
            return True
        count = self._recv_into(_SCRATCH)
        request.progress = False
        try:
            _feed(request.parser, request, _SCRATCH[:count])
        except HTTPError as exc:
            request.error = exc
            raise ConnectionAbortedError(f"Bad request body: {exc.reason}") from None
        if request.complete:
            request.parser = None  # the cycle, broken as the body ends
        if request.progress or request.complete:
            self._stalled = 0
        else:
            # Chunk framing or a trailer line with no end in sight: httptools
            # keeps a field whole until it ends, so cut it off here.
            self._stalled += count
            if self._stalled > request.limits.field_size + 2:
                request.error = HTTPError(431, "Trailer or chunk framing too long")
                raise ConnectionAbortedError(request.error.reason)
        return True

    def _read_all(self):
        """read(): the body in one buffer that grows as it arrives.

        Grown, not sized from Content-Length up front: a client declaring
        400 MB and sending two bytes must not cost 400 MB. io.BytesIO hands
        its buffer over as the bytes object getvalue() returns, so the body
        is never copied once whole (bytes(bytearray) would briefly hold it
        twice): about 1.1 times the body at the peak.
        """
        request = self._request
        out = io.BytesIO()
        out.write(request.body)
        request.body.clear()
        request.sink = out.write
        try:
            while self._fill():
                pass
        finally:
            request.sink = request.body.extend
        return out.getvalue()

    def read(self, size=-1):
        if size is None or size < 0:
            return self._read_all()
        buf = self._request.body
        while len(buf) < size and self._fill():
            pass
        data = bytes(buf[:size])
        del buf[:size]
        return data

    def readline(self, size=-1):
        buf = self._request.body
        start = 0
        while True:
            newline = buf.find(b"\n", start)
            if newline >= 0:
                end = newline + 1
                break
            if 0 <= size <= len(buf):
                end = size
                break
            start = len(buf)
            if not self._fill():
                end = len(buf)
                break
        if 0 <= size < end:
            end = size
        data = bytes(buf[:end])
        del buf[:end]
        return data

    def readlines(self, hint=-1):
        lines, total = [], 0
        for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line
