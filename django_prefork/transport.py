"""Every byte that enters or leaves a client socket goes through here.

A `Connection` is one accepted socket and what the server holds of it: the
bytes read but not yet parsed, the bytes the app gave that the client has
not taken yet (memory, or a file to sendfile from), and when each of them
must be done by. It is driven two ways:

* by the app slot, blocking: `send()` writes without ever blocking in the
  kernel (MSG_DONTWAIT) and waits for room in poll(), each wait bounded by
  the client timeout (a client that reads nothing for it is given up) and
  by the request's deadline. A blocking send bounded by SO_SNDTIMEO was not
  enough: on a loaded machine one was seen to block past its 2 s for more
  than 5, until the watchdog killed the worker;
* by the worker's event loop, on readiness: `recv()`, `flush()` and
  `linger_step()` never wait; they do what the socket allows now and say
  whether more is left.

The socket itself stays in blocking mode (accept() does not pass O_NONBLOCK
on, and a bodies streamed to the app reads it with the kernel's SO_RCVTIMEO):
the non-blocking calls say so per call with MSG_DONTWAIT, which costs no
fcntl() per request.
"""

import fcntl
import os
import select
import socket
import struct
import sys
import tempfile
import termios
import time
from collections import deque

from .lifecycle import LINGER_BYTES, LINGER_SECONDS, PROGRESS_LOOK

RECV_SIZE = 65536
SENDFILE_CHUNK = 1 << 30
_DONTWAIT = socket.MSG_DONTWAIT


QUEUE, SPOOL = "queue", "spool"  # where a response's unsent bytes may go (the worker's may_queue says)


class ClientDisconnected(Exception):
    """The client hung up, or stopped reading, while we wrote to it: worth a debug line, not an error."""


class Connection:
    """One client socket: its unparsed input, its unsent output, its deadlines."""

    __slots__ = ("sock", "fd", "client", "unix", "inbuf", "out", "out_bytes", "out_file", "state",
                 "since", "heard", "reader", "keep_alive", "served", "deadline", "io_timeout",
                 "lingered", "got", "body_since", "window_at", "window_got", "head_held",
                 "listener_fd", "spool_file", "spooled", "said_all")

    def __init__(self, sock, client, unix=False, listener_fd=-1):
        self.sock = sock
        self.listener_fd = listener_fd  # the listener it came from (its WSGI context is per listener)
        self.fd = sock.fileno()
        self.client = client
        self.unix = unix
        self.inbuf = b""  # read, not yet parsed: the start of the next request
        self.out = deque()  # bytes the app gave that the client has not taken
        self.out_bytes = 0
        self.out_file = None  # (fd, offset, count or None) sent by sendfile after `out`
        self.state = None  # the event loop's (reactor.py)
        self.since = 0.0  # monotonic: when it entered its state
        self.heard = 0.0  # monotonic: the client's last sign of life (a read, an acknowledgement)
        self.reader = None  # the request being read, or answered (http.Reader)
        self.keep_alive = False  # the response in hand lets the connection stay open
        self.served = 0  # requests answered on it
        self.deadline = None  # callable: when the response in hand must be out (the request's)
        self.io_timeout = 0  # the longest the client may read nothing while we write
        self.lingered = 0  # bytes drained while lingering
        self.got = 0  # bytes received for the request being read
        self.body_since = 0.0  # monotonic: when its head was complete (0: not yet)
        self.window_at = 0.0  # the min-rate window: when it began
        self.window_got = 0  # ... and `got` then
        self.head_held = 0  # bytes of an unfinished head the worker's bound counts for it
        self.spool_file = None  # a temporary file a response goes on in once memory is spent
        self.spooled = 0  # bytes written to spool files for the response in hand
        self.said_all = False  # the client said its bodyless request was its last (Connection: close), read whole

    def fileno(self):
        return self.fd

    # -- reading --------------------------------------------------------------------

    def recv(self):
        """What the client sent since the last call: bytes; b"" at its end (or an error); None: nothing yet."""
        try:
            return self.sock.recv(RECV_SIZE, _DONTWAIT)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def unread_input(self):
        """Has the client sent bytes we did not read (a pipelined request, excess body)?

        Closing over unread input makes the kernel answer with RST, which can
        destroy our response in the client's buffer before it is read. Not asked
        when the client `said_all`: after its last request, bodyless and read whole, a
        client sends nothing, and the common `Connection: close` GET saves an ioctl.
        (After a body it may: an old browser's CRLF, a miscounted length. Asked then.)
        """
        if self.said_all:
            return False
        try:
            fcntl.ioctl(self.fd, termios.FIONREAD, _UNREAD)  # half the cost of a MSG_PEEK's EAGAIN
        except OSError:
            return False
        return _UNREAD != _NONE

    # -- writing from the app slot: never blocks in the kernel, waits in poll() ---------------

    def send(self, data, deadline=None, io_timeout=0):
        """All of `data`, or ClientDisconnected; bytes queued for the event loop go first."""
        if self.out or self.out_file:
            self.wait_flushed(deadline, io_timeout)
        sent = 0
        try:
            while True:
                try:
                    sent += self.sock.send(memoryview(data)[sent:] if sent else data, _DONTWAIT)
                except BlockingIOError:
                    pass  # not a byte of room yet
                if sent >= len(data):
                    return
                self.wait_for_room(deadline, io_timeout)
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc

    def send_some(self, data):
        """Bytes of `data` the kernel takes now (0 when none); ClientDisconnected if it refuses."""
        try:
            return self.sock.send(data, _DONTWAIT)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc

    def sendfile(self, src, offset, count, deadline=None, io_timeout=0):
        """`count` bytes of file descriptor `src` from `offset` (None: to its end); bytes sent.

        Our own loop, not socket.sendfile(): its waits would know neither the
        client timeout nor the deadline.
        """
        if self.out or self.out_file:
            self.wait_flushed(deadline, io_timeout)
        sent = 0
        os.set_blocking(self.fd, False)  # sendfile has no MSG_DONTWAIT
        try:
            while count is None or sent < count:
                check_deadline(deadline)
                chunk = SENDFILE_CHUNK if count is None else min(count - sent, SENDFILE_CHUNK)
                try:
                    n = os.sendfile(self.fd, src, offset + sent, chunk)
                except BlockingIOError:
                    self.wait_for_room(deadline, io_timeout)
                    continue
                except OSError as exc:
                    raise ClientDisconnected(str(exc)) from exc
                if not n:
                    break  # end of file
                sent += n
        finally:
            os.set_blocking(self.fd, True)
        return sent

    def wait_for_room(self, deadline, io_timeout):
        """Until the client has read enough for more to go out. A client that reads,
        however slowly, may take until the deadline; one that reads nothing for
        `io_timeout` is given up."""
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        heard, unacked = time.monotonic(), self.unacked()
        while True:
            left = check_deadline(deadline)
            silent = time.monotonic() - heard
            if io_timeout and silent >= io_timeout:
                raise ClientDisconnected(f"the client read nothing for {io_timeout:g} s")
            # POLLOUT waits for much of the buffer to drain: look for progress meanwhile.
            wait = min(w for w in (left, io_timeout - silent if io_timeout else None, PROGRESS_LOOK)
                       if w is not None)
            if poller.poll(wait * 1000):
                return
            now_unacked = self.unacked()
            if now_unacked is not None and unacked is not None and now_unacked < unacked:
                heard, unacked = time.monotonic(), now_unacked  # it read (and acknowledged) some

    def wait_flushed(self, deadline, io_timeout):
        """Block until what the event loop was given is out (the app needs the connection back)."""
        while not self.flush():
            self.wait_for_room(deadline, io_timeout)

    def unacked(self):
        """Bytes sent the client has not acknowledged yet (Linux SIOCOUTQ); None elsewhere."""
        try:
            fcntl.ioctl(self.fd, termios.TIOCOUTQ, _OUTQ)
        except OSError:
            return None
        return int.from_bytes(_OUTQ, sys.byteorder)

    # -- writing from the event loop: what the socket takes now ----------------------------------

    def queue(self, data):
        """Leave `data` for the event loop to send after what is queued already."""
        self.out.append(data)
        self.out_bytes += len(data)

    def queue_file(self, src, offset, count):
        """Leave a file (a descriptor of our own, closed once sent) to the event loop's sendfile."""
        self.out_file = [src, offset, count]

    def spool(self, data):
        """Write `data` after what is queued, into a temporary file the loop sends from
        (`seal_spool`), as nginx's proxy_temp_file: the client takes its time, not the app's."""
        if self.spool_file is None:
            self.spool_file = tempfile.TemporaryFile(prefix="prefork-response-")
        self.spool_file.write(data)
        self.spooled += len(data)

    def seal_spool(self):
        """What was spooled is complete: it goes out after the queue, by sendfile."""
        spool = self.spool_file
        if spool is None:
            return
        spool.flush()
        size = spool.tell()
        fd = os.dup(spool.fileno())
        spool.close()
        self.spool_file = None
        if self.out_file is not None:  # a file queued before it: send both, in order (rare: the app slot waits)
            raise AssertionError("a spool after a queued file")
        self.out_file = [fd, 0, size]

    def flush(self):
        """Send what is queued as far as the socket takes it now; True once nothing is left."""
        out = self.out
        while out:
            data = out[0]
            n = self.send_some(data)
            if n:
                self.heard = time.monotonic()
                self.out_bytes -= n
            if n < len(data):
                out[0] = memoryview(data)[n:]
                return False
            out.popleft()
        if self.out_file is not None:
            return self._flush_file()
        return True

    def _flush_file(self):
        src, offset, count = self.out_file
        while count is None or count > 0:
            chunk = SENDFILE_CHUNK if count is None else min(count, SENDFILE_CHUNK)
            try:
                n = _sendfile_now(self.fd, src, offset, chunk)
            except OSError as exc:
                self.drop_output()
                raise ClientDisconnected(str(exc)) from exc
            if n is None:
                self.out_file = [src, offset, count]
                return False
            if not n:
                if count is not None:
                    self.drop_output()  # the body cannot be finished: closing tells the client
                    raise ClientDisconnected(f"the file ended {count} bytes short of its Content-Length")
                break
            self.heard = time.monotonic()
            offset += n
            if count is not None:
                count -= n
        self.out_file = None
        os.close(src)
        return True

    def drop_output(self):
        """Forget what was left to send (the client is gone or too slow)."""
        self.out.clear()
        self.out_bytes = 0
        if self.spool_file is not None:
            self.spool_file.close()
            self.spool_file = None
        if self.out_file is not None:
            os.close(self.out_file[0])
            self.out_file = None

    # -- closing ---------------------------------------------------------------------------

    def start_linger(self):
        """Half-close, then read what the client still sends before closing (linger_step).

        Closing a socket with unread input makes the kernel send RST, which can
        destroy the response in the client's receive buffer before it reads it.
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return False
        self.lingered = 0
        return True

    def linger_step(self):
        """Drain what is there now; True when lingering is over (the client's end, or enough)."""
        while self.lingered < LINGER_BYTES:
            data = self.recv()
            if data is None:
                return False
            if not data:
                return True
            self.lingered += len(data)
        return True

    def linger(self):
        """start_linger and linger_step, blocking for at most LINGER_SECONDS (the app slot's way)."""
        if not self.start_linger():
            return
        deadline = time.monotonic() + LINGER_SECONDS
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while not self.linger_step():
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                return

    def close(self, abort=False):
        """Close; `abort`: with RST, discarding what the kernel still holds for a client
        too slow to ever get it (a plain close would leave it trickling out for minutes)."""
        if self.out or self.out_file is not None or self.spool_file is not None:
            self.drop_output()
        if abort:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
            except OSError:
                pass
        self.sock.close()


def check_deadline(deadline):
    """Seconds left before a response must be out (None: no deadline); past it, give up."""
    at = deadline() if deadline is not None else None
    if at is None:
        return None
    left = at - time.monotonic()
    if left <= 0:
        raise ClientDisconnected("the client read the response too slowly for PREFORK_TIMEOUT")
    return left


def _sendfile_now(out, src, offset, count):
    """os.sendfile without blocking: bytes sent, 0 at the file's end, None when the socket is full."""
    os.set_blocking(out, False)
    try:
        return os.sendfile(out, src, offset, count)
    except BlockingIOError:
        return None
    finally:
        os.set_blocking(out, True)


_ABORT = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets
_UNREAD = bytearray(4)
_NONE = bytes(4)
_OUTQ = bytearray(4)
