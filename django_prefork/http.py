"""HTTP/1.x requests: the head parsed by httptools (llhttp), the body streamed.

Theory of operation
-------------------
llhttp, in its strict default, already refuses most smuggling vectors:
Content-Length with Transfer-Encoding, duplicate or signed lengths, obs-fold,
bare CR or LF, controls in field values, bad chunk framing. What it leaves to
its caller, this module does:

* limits: llhttp has none, so the read loop caps the request target, the
  number and size of header lines and the bytes of the whole head;
* the rules of RFC 9112 it does not know: exactly one Host on HTTP/1.1, no
  chunked on HTTP/1.0, chunked last, 501 for codings we cannot decode, 505
  for versions other than 1.0 and 1.1, no CONNECT or authority-form target;
* the request target, split here rather than by httptools.parse_url (it wraps
  an unmaintained parser);
* trailers, which llhttp reports like headers: checked, never kept.

The body is fed through the same parser as the client sends it, so chunked
framing is decoded by llhttp and `Body.read()` only ever holds what one
recv() brought: an upload of any size keeps the worker's memory flat.
"""

import re
import time
from urllib.parse import unquote_to_bytes

import httptools

from .sockets import set_io_timeout

RECV_SIZE = 65536
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
FORBIDDEN_TRAILERS = frozenset(
    (b"content-length", b"transfer-encoding", b"host", b"content-type", b"content-encoding")
)


class HTTPError(Exception):
    """A request the server answers itself, with `status` and a short reason."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ClientGone(Exception):
    """The client closed or went silent before saying anything worth an answer."""


class Request:
    """The parser's callbacks, collecting one request's head into plain fields."""

    def __init__(self, limits):
        self.limits = limits
        self.method = b""
        self.target = b""
        self.version = "1.1"
        self.headers = []  # (name lowercased, value) in arrival order
        self.host_count = 0
        self.chunked = False
        self.expect_continue = False
        self.headers_complete = False
        self.complete = False
        self.body = bytearray()
        self.error = None  # an HTTPError met after the head, while reading the body

    # -- httptools callbacks -------------------------------------------------

    def on_url(self, url):
        self.target += url
        if len(self.target) > self.limits.request_line:
            raise HTTPError(414, "Request-URI Too Long")

    def on_header(self, name, value):
        if self.headers_complete:
            return self._on_trailer(name)
        if len(self.headers) >= self.limits.fields:
            raise HTTPError(431, "Too many header fields")
        if len(name) + len(value) + 2 > self.limits.field_size:
            raise HTTPError(431, "Header field too long")
        name = name.lower()
        if name == b"host":
            self.host_count += 1
        elif name == b"transfer-encoding":
            self._check_codings(value)
        elif name == b"expect":
            if value.lower() != b"100-continue":
                raise HTTPError(417, "Expectation Failed")
            self.expect_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self):
        self.headers_complete = True

    def on_body(self, data):
        self.body += data

    def on_message_complete(self):
        self.complete = True

    # -- rules llhttp leaves to us ---------------------------------------------

    def _check_codings(self, value):
        codings = [c.strip(b" \t").lower() for c in value.split(b",")]
        if not all(_TOKEN.match(c) for c in codings):
            raise HTTPError(400, "Bad Transfer-Encoding")
        if self.chunked or b"chunked" in codings[:-1]:
            raise HTTPError(400, "chunked must be the last transfer coding")
        if any(c != b"chunked" for c in codings):
            raise HTTPError(501, "Unsupported transfer coding")
        self.chunked = True

    def _on_trailer(self, name):
        if name.lower() in FORBIDDEN_TRAILERS:
            raise HTTPError(400, "Forbidden trailer field")

    def check_head(self, parser):
        self.method = parser.get_method()
        self.version = parser.get_http_version()
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


class Limits:
    __slots__ = ("request_line", "fields", "field_size", "head")

    def __init__(self, request_line, fields, field_size):
        self.request_line = request_line
        self.fields = fields
        self.field_size = field_size
        # Bounds what llhttp buffers for a header line that never ends.
        self.head = request_line + 16 + fields * (field_size + 2) + 2


def _feed(parser, request, data):
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        # Upgrade and CONNECT: llhttp stops at the head; we never switch protocols.
        request.complete = True
    except httptools.HttpParserCallbackError as exc:
        if isinstance(exc.__context__, HTTPError):
            raise exc.__context__ from None
        raise
    except httptools.HttpParserError as exc:
        message = str(exc)
        if "HTTP version" in message:
            raise HTTPError(505, "HTTP Version Not Supported") from None
        raise HTTPError(400, message) from None


def read_request(sock, limits, client_timeout):
    """Read one request head from `sock`; return (request, parser).

    `sock` is blocking with kernel timeouts (SO_RCVTIMEO: see sockets.py).
    The whole head must arrive within `client_timeout` of its first bytes: a
    client trickling one header a second cannot hold a worker longer than that.
    """
    request = Request(limits)
    parser = httptools.HttpRequestParser(request)
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
        _feed(parser, request, data)
        if request.headers_complete:
            break
        if received > limits.head:
            raise HTTPError(431, "Request header fields too large")
        # The head came in pieces (rare): bound the next recv by what is left.
        if deadline is None:
            deadline = time.monotonic() + client_timeout
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HTTPError(408, "Request Timeout")
        set_io_timeout(sock, remaining)
    if deadline is not None:
        set_io_timeout(sock, client_timeout)
    request.check_head(parser)
    return request, parser


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


class Body:
    """wsgi.input: the request body, read from the socket only as the app asks.

    `Expect: 100-continue` is answered on the first read, so an app that
    rejects a request early never makes the client send its upload.
    """

    def __init__(self, sock, request, parser):
        self._sock = sock
        self._request = request
        self._parser = parser
        self._continue_pending = request.expect_continue and not request.complete

    def _fill(self):
        """Bring one more recv() worth of body into the buffer; False at the end."""
        request = self._request
        if request.complete or request.error:
            return False
        if self._continue_pending:
            self._continue_pending = False
            self._sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            data = self._sock.recv(RECV_SIZE)
        except BlockingIOError:  # SO_RCVTIMEO: the client stalled mid-body
            request.error = HTTPError(408, "Request Timeout")
            raise TimeoutError("the client sent no body bytes within the client timeout") from None
        if not data:
            request.error = HTTPError(400, "Client closed before the end of the body")
            raise ConnectionAbortedError(request.error.reason)
        try:
            _feed(self._parser, request, data)
        except HTTPError as exc:
            request.error = exc
            raise ConnectionAbortedError(f"Bad request body: {exc.reason}") from None
        return True

    def read(self, size=-1):
        buf = self._request.body
        if size is None or size < 0:
            while self._fill():
                pass
            size = len(buf)
        else:
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
