"""HTTP/1.x requests: the head parsed by httptools (llhttp), the body streamed.

Theory of operation
-------------------
A connection carries exactly one request. The parser is stopped at the end
of the first message (`on_message_complete` raises `_MessageEnd`, which
llhttp obeys at once), so whatever the client sent after it (a pipelined
request, excess body bytes, anything after an HTTP/1.0 request) is never
parsed into the request and never reaches the app: method, version and
upgrade flag are captured when the head completes, the target only before
it. The bytes left unread are drained by the server before it closes.

llhttp, in its strict default, already refuses most smuggling vectors:
Content-Length with Transfer-Encoding, duplicate or signed lengths, obs-fold,
bare CR or LF, controls in field values, bad chunk framing. What it leaves to
its caller, this module does:

* limits: llhttp has none, so the read loop caps the request target, the
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

Bodies. A Content-Length body is read straight from the socket (the parser
has nothing to add to it); a chunked one is fed through llhttp as it comes.
Either way `Body` holds only what the app has not read yet: an upload read
in pieces keeps the worker flat, and one read whole (`read()`) costs one
buffer of its size, filled in place. A body slower than
`PREFORK_CLIENT_MIN_RATE` once its first client timeout is over is answered
408 (`_Clock`): the worker is freed long before the watchdog's timeout.
"""

import io
import re
import time
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

import httptools

from . import debugger
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


class ClientGone(Exception):
    """The client closed or went silent before saying anything worth an answer."""


class _MessageEnd(Exception):
    """Raised from on_message_complete: llhttp stops before the next message."""


class Limits:
    __slots__ = ("request_line", "fields", "field_size", "head", "client_timeout", "min_rate", "body_time")

    def __init__(self, request_line, fields, field_size, client_timeout=10, min_rate=0, timeout=0):
        self.request_line = request_line
        self.fields = fields
        self.field_size = field_size
        # Bounds what llhttp buffers for a header line that never ends.
        self.head = request_line + 16 + fields * (field_size + 2) + 2
        self.client_timeout = client_timeout
        self.min_rate = min_rate  # body bytes/s owed once client_timeout is spent; 0 = no minimum
        # Seconds from a request's start its body must have arrived in: before the
        # watchdog (PREFORK_TIMEOUT, which gives 2 s of notice) would kill the worker.
        self.body_time = max(timeout - 2, timeout / 2) if timeout else 0


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


def _feed_head(parser, request, data):
    """Feed `data`, cut after each blank line while the head is not complete.

    A head fed up to its blank line ends where llhttp stops, so a body-less
    request completes without the _MessageEnd exception; what follows the
    head (body bytes, or a pipelined request) is fed with the stop armed.
    """
    at = 0
    while not request.headers_complete:
        end = data.find(_HEAD_END, at)
        if end < 0:
            break
        request.stop_at_end = False
        _feed(parser, request, data[at:end + 4] if at or end + 4 < len(data) else data)
        request.stop_at_end = True
        at = end + 4
    if at < len(data) and not request.complete:
        _feed(parser, request, data[at:] if at else data)


def read_request(sock, limits):
    """Read one request head from `sock`; return the Request.

    `sock` is blocking with kernel timeouts (SO_RCVTIMEO: see sockets.py).
    The whole head must arrive within the client timeout of its first bytes: a
    client trickling one header a second cannot hold a worker longer than that.
    An HTTPError raised here says in `head_only` whether the request, as far
    as it came, was a HEAD: the answer must then have no body.
    """
    pieces = []
    try:
        return _read_head(sock, limits, pieces)
    except HTTPError as exc:
        first = pieces[0].lstrip(b"\r\n") if pieces else b""
        exc.head_only = first.startswith(b"HEAD ")
        raise


def _read_head(sock, limits, pieces):
    request = Request(limits)
    parser = request.parser = httptools.HttpRequestParser(request)
    request.started = time.monotonic()
    received = 0
    deadline = None
    while True:
        try:
            data = sock.recv(RECV_SIZE)
        except (BlockingIOError, TimeoutError):  # SO_RCVTIMEO ran out
            if received:
                raise HTTPError(408, "Request Timeout") from None
            raise ClientGone() from None
        except OSError:
            raise ClientGone() from None
        if not data:
            if received:
                raise HTTPError(400, "Incomplete request head")
            raise ClientGone()
        received += len(data)
        pieces.append(data)
        _feed_head(parser, request, data)
        if request.headers_complete:
            break
        if received > limits.head:
            raise HTTPError(431, "Request header fields too large")
        # The head came in pieces (rare): bound the next recv by what is left.
        if deadline is None:
            deadline = time.monotonic() + limits.client_timeout
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HTTPError(408, "Request Timeout")
        set_io_timeout(sock, remaining)
    if deadline is not None:
        set_io_timeout(sock, limits.client_timeout)
    request.check_head()
    if request.upgrade:
        data = b"".join(pieces)
        start = len(data) - len(data.lstrip(b"\r\n"))  # llhttp skips empty lines before a request
        request.parser = _body_parser(request, data[data.index(_HEAD_END, start) + 4:])
    if request.complete:
        # The parser holds its protocol, the Request, which holds the parser: a
        # cycle only the garbage collector would free. A complete request (no
        # body to come) needs its parser no more; dropped, the request's objects
        # are freed by refcount the moment it ends, and no GC pass runs for them.
        request.parser = None
    return request


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
            request.parser = None  # never fed again: the bytes are counted here (the cycle, see _read_head)
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
            request.parser = None  # see _read_head: the cycle, broken as the body ends
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
