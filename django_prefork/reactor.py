"""A worker's event loop: a request reaches the app only once it is complete.

We trust the app not to starve its worker; we never trust a client. So the
app slot (one request at a time, wsgi.py) is only ever handed a request whose
head and body have both arrived, and it hands back a response the client has
not taken yet instead of waiting for it. Everything a client can be slow at
(connecting and saying nothing, trickling a head, uploading slowly, reading
slowly, keeping an idle connection) waits here, in one epoll, costing a
file descriptor and a few bytes of bookkeeping instead of the worker.

A connection's states, and what moves it (`TRANSITIONS` holds them all)::

    accept ──▶ READING ──request complete──▶ WAITING ──the app slot──▶ answered
                 ▲  │                                                     │
       bytes come│  └─bad request: answered──▶ LINGERING ──▶ closed       │
                 │                                     ▲                  │
               IDLE ◀──keep-alive────────────┬─────────┴─ close ──────────┤
                                             │                            │
                                        WRITING ◀──the client is slow─────┘

Each state has one bound, checked by `sweep()` a few times a second
(`DEADLINES`): a connection that never says anything is closed after the
client timeout; a head must be whole within the client timeout of its first
byte (else 408); a body may not go silent for the client timeout nor, after
its first client timeout, average less than PREFORK_CLIENT_MIN_RATE over a
window (408); an idle keep-alive connection is closed after
PREFORK_KEEPALIVE; a response the client reads nothing of for the client
timeout, or is still unsent at the request's deadline, is dropped; lingering
lasts LINGER_SECONDS.

The common request costs nothing extra: the listener delivers a connection
only once its first bytes are there (TCP_DEFER_ACCEPT), so the recv right
after accept() usually holds the whole request and it goes straight to the
app with no epoll call; a worker that accepted last time tries accept()
again before it polls.

No head-of-line wait. A keep-alive connection belongs to the worker that
accepted it, and a worker's app slot runs one request at a time: a request
arriving on one of its idle connections while the app runs a long request
would wait for it, though a sibling is idle. So while the app slot has been
busy for HANDOFF_AFTER, a thread of the worker (`_watch_app_slot`, started
with its first idle connection; it touches nothing else) looks for idle
connections that have a request waiting and passes them (SCM_RIGHTS) to
the generation's hand-off socket (`handoff_lot`), which every worker of the
generation polls like a second listener: an idle sibling takes them, as it
would take a new connection from the listen queue. Only connections with a
request waiting move, so a steady load never ping-pongs idle ones.

Bounds a worker keeps whatever clients do: PREFORK_MAX_CONNECTIONS held at
once (when full, the oldest idle keep-alive connection is closed, or the
worker stops accepting); request heads in memory (`HEAD_MEMORY`, 503 past
it); bodies in memory (http.BodyBuffer: past PREFORK_BUFFER_BODY a body
spools to a temporary file); unsent responses in memory (`QUEUE_LIMIT`,
past it the app waits for its client as a sync worker does).
"""

import _socket
import array
import logging
import os
import resource
import select
import socket
import threading
import time
from collections import deque
from socket import AF_UNIX, SOCK_STREAM
from types import MappingProxyType

from .http import HTTPError, Reader
from .lifecycle import HANDOFF_AFTER, HANDOFF_LOOK, LINGER_SECONDS, SILENT_AT_STOP, SWEEP_EVERY
from .sockets import set_io_timeout
from .transport import QUEUE, SPOOL, ClientDisconnected, Connection

log = logging.getLogger("django_prefork")

READING, WAITING, WRITING, IDLE, LINGERING = "reading", "waiting", "writing", "idle", "lingering"
STATES = (READING, WAITING, WRITING, IDLE, LINGERING)

TRANSITIONS = MappingProxyType({
    (READING, "request complete"): WAITING,
    (READING, "bad request"): LINGERING,
    (WAITING, "answered, keep-alive"): IDLE,
    (WAITING, "answered, bytes of the next request"): READING,
    (WAITING, "answered, the client is slow"): WRITING,
    (WAITING, "answered, close"): LINGERING,
    (WRITING, "sent, keep-alive"): IDLE,
    (WRITING, "sent, close"): LINGERING,
    (IDLE, "bytes come"): READING,
})

DEADLINES = MappingProxyType({
    READING: "client timeout: from accept (nothing sent), the first byte (head), the last byte (body); "
             "and the min rate over windows of a client timeout",
    WAITING: "none: its request is whole, the app slot takes it next",
    WRITING: "client timeout of reading nothing, and the request's deadline",
    IDLE: "PREFORK_KEEPALIVE",
    LINGERING: "LINGER_SECONDS",
})

ACCEPT_AT_LEAST_EVERY = 4  # requests taken from kept connections before the listen queue gets a turn
HEAD_MEMORY = 32 * 1024 * 1024  # bytes of unfinished request heads a worker holds; past it: 503
QUEUE_LIMIT = 16 * 1024 * 1024  # bytes of unsent responses a worker holds in memory; past it they spool
SPOOL_LIMIT = 1024 * 1024 * 1024  # bytes of unsent responses a worker spools to files; past it the app waits

_IN, _OUT = select.EPOLLIN | select.EPOLLRDHUP, select.EPOLLOUT
# What epoll watches in each state. WAITING: nothing new (its request is whole; one that came
# whole with its connection is never registered at all: the common request costs no epoll_ctl).
_WATCH = {READING: _IN, WAITING: None, IDLE: _IN, LINGERING: _IN, WRITING: _OUT}


def raise_fd_limit():
    """The soft limit on open files up to the hard one: a worker holds a descriptor a
    connection (PREFORK_MAX_CONNECTIONS), and 1024, a common soft default, is soon reached."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass  # a limit we may not raise: the worker stops accepting when it runs out (EMFILE)


def handoff_lot():
    """The hand-off sockets of one generation, made by its arbiter before it forks: a
    datagram socketpair every worker holds both ends of. A datagram sent on the first end
    (a connection's descriptor, and where it came from) reaches exactly one worker reading
    the second, as a queued connection reaches one accept()."""
    send_end, receive_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for end in (send_end, receive_end):
        end.setblocking(False)
    return send_end, receive_end


class Reactor:
    """The connections one worker holds, and the loop that moves them."""

    def __init__(self, listeners, config, wakeup_fd, answer_error, end_request, lot=None):
        self.config = config
        raise_fd_limit()
        self.limits = None  # http.Limits, set by the worker with its context
        self.answer_error = answer_error  # (conn, HTTPError) -> (status, sent): the server's own answer
        self.end_request = end_request  # (status, sent): the scoreboard's count of a refused request
        self.epoll = select.epoll()
        self.wakeup_fd = wakeup_fd
        self.epoll.register(wakeup_fd, select.EPOLLIN)
        self.listeners = {}  # fd -> [accept, family, hot, listener]
        for listener in listeners:
            if listener.sock.family != AF_UNIX:
                # Accepted TCP sockets inherit it (unix ones do not): the kernel's bound on a
                # body streamed to the app (PREFORK_BUFFER_BODY = None).
                set_io_timeout(listener.sock, config.client_timeout)
            self.listeners[listener.fileno()] = [listener.sock._accept, listener.sock.family.value, True, listener]
        self.listening = False
        self.conns = {}  # fd -> Connection
        self.watched = {}  # fd -> the events epoll watches for it
        self.ready = deque()  # WAITING connections, in the order their requests completed
        self.accepting = True
        self.taken_since_accept = 0  # requests taken from `ready` since the listeners' last turn
        self.room = True  # an app slot is free to take what is accepted (the worker says, with threads)
        self.quota = None  # after a graceful stop: connections still to take from the listen queue
        self.stopping = False
        self.head_bytes = 0  # held in unfinished heads
        self.queued = 0  # bytes of responses left to the loop in memory
        self.spooled = 0  # ... and in temporary files
        self.swept = 0.0
        self.held_at_sweep = 0  # connections held at the last sweep
        self.lot = lot  # (send end, receive end) of the generation's hand-off sockets, or None
        if lot is not None:
            self.epoll.register(lot[1].fileno(), select.EPOLLIN)
        self.lock = threading.Lock()  # the hand-off thread works only while the app slot holds it out
        self.app_since = 0.0  # monotonic: when the app slot took its request; 0 while it is free
        self.watcher = None  # the hand-off thread, started with the first idle connection
        self.watcher_ends = False  # end_watcher(): the hand-off thread leaves at its next look

    # -- the worker's calls ------------------------------------------------------------

    def next_request(self):
        """A connection whose request is complete, or None: nothing is ready now."""
        now = time.monotonic()
        if now - self.swept >= SWEEP_EVERY and self.conns:
            # A load that keeps the listener hot never lets the loop wait: the deadlines
            # hold all the same, and a None makes the worker poll what it holds.
            self.sweep(now)
            if not self.ready:
                return None
        if self.accepting and not self.ready:
            self._accept_while_hot()
        elif self.accepting and self.taken_since_accept >= ACCEPT_AT_LEAST_EVERY:
            # Kept connections bring requests as fast as they are served: without a turn of
            # its own, a connection in the listen queue would wait for a lull that never comes.
            # The listeners may not have been polled meanwhile (no free thread): one accept()
            # each says whether anyone waits.
            self.taken_since_accept = 0
            for entry in self.listeners.values():
                entry[2] = True
            self._accept_while_hot(self.ready[-1])
        if not self.ready:
            return None
        self.taken_since_accept += 1
        return self.ready.popleft()

    def wait(self, seconds):
        """Wait for readiness (at most `seconds`) and move every connection it concerns."""
        self._listen(self.accepting and self.room and (len(self.conns) < self.config.max_connections or self._idle()))
        if self.conns or self.held_at_sweep:
            seconds = min(seconds, SWEEP_EVERY)  # and one sweep more once none is left: the counts say 0
        try:
            events = self.epoll.poll(seconds)
        except InterruptedError:
            events = ()
        woken = False
        now = time.monotonic()
        for fd, mask in events:
            if fd in self.listeners:
                self.listeners[fd][2] = True
            elif fd == self.wakeup_fd:
                woken = True
            elif self.lot is not None and fd == self.lot[1].fileno():
                self._receive_handed_off()
            else:
                conn = self.conns.get(fd)
                if conn is not None:
                    self._on_ready(conn, now)
        if now - self.swept >= SWEEP_EVERY:
            self.sweep(now)
        return woken

    def answered(self, conn):
        """The app slot is done with `conn`: finish its response here, keep it, or close it."""
        if conn.fd not in self.conns:  # forgotten (a thread that timed out): nothing of it is ours
            return conn.close()
        conn.reader = None
        if conn.spool_file is not None:
            conn.seal_spool()
        if conn.out or conn.out_file is not None:
            self._count_queued(conn.out_bytes)
            self._enter(conn, WRITING)
            conn.heard = time.monotonic()
            return
        self._after_response(conn)

    def app_started(self):
        self.app_since = time.monotonic()

    def app_done(self):
        with self.lock:  # a hand-off under way ends before the loop takes its connections back
            self.app_since = 0.0

    def may_queue(self, size):
        """Where `size` more unsent bytes of a response may wait for the loop (0: a file):
        QUEUE (memory), SPOOL (a temporary file) or None (nowhere: the app waits)."""
        with self.lock:  # app threads ask at once (PREFORK_THREADS)
            if self.queued + size <= QUEUE_LIMIT:
                return QUEUE
            if self.spooled + size <= SPOOL_LIMIT:
                self.spooled += size
                return SPOOL
            return None

    def stop(self, queued):
        """A graceful stop: take `queued` more connections (None: none), finish what is held.

        Idle keep-alive connections close now. One that has said nothing yet may be a
        queued request still on its way (a unix socket is accepted before its bytes come):
        it gets SILENT_AT_STOP to say it.
        """
        self.stopping = True
        self.quota = queued
        if not queued:
            self.accepting = False
        now = time.monotonic()
        for conn in list(self.conns.values()):
            if conn.state == IDLE:
                self._drop(conn)
            elif conn.state == READING and (conn.reader is None or not conn.reader.received):
                conn.since = min(conn.since, now - self.config.client_timeout + SILENT_AT_STOP)

    def forget(self, conn):
        """No longer hold `conn` (a timed-out app thread still owns it): a stop waits not for it."""
        if self.conns.pop(conn.fd, None) is not None and self.watched.pop(conn.fd, None) is not None:
            self.epoll.unregister(conn.fd)

    def drained(self):
        return not self.conns and not self.ready

    def counts(self):
        """Connections held by state, for the scoreboard."""
        counts = dict.fromkeys(STATES, 0)
        for conn in self.conns.values():
            counts[conn.state] += 1
        return counts

    # -- accepting ----------------------------------------------------------------------

    def _accept_while_hot(self, last_ready=None):
        """Accept until a new complete request is ready (behind `last_ready`, the last one
        already waiting), the listeners run dry, or the worker is full."""
        most = self.config.max_connections
        for listener_fd, entry in self.listeners.items():
            accept, family, hot, listener = entry
            while hot and self.accepting and (not self.ready or self.ready[-1] is last_ready):
                if len(self.conns) >= most and not self._idle():
                    return  # full, and nothing idle to make room with: the listen queue keeps it
                try:
                    fd, client = accept()
                except BlockingIOError:
                    entry[2] = hot = False
                    break
                except OSError as exc:  # EMFILE, ECONNABORTED: the listener is still fine
                    log.warning("accept failed: %s", exc)
                    entry[2] = False
                    break
                if len(self.conns) >= most:
                    self._close_oldest_idle()  # room for a client that is here, not for one that may come
                conn = Connection(_socket.socket(family, SOCK_STREAM, 0, fd), client, family == AF_UNIX, listener_fd)
                self._take(conn)
                if self.quota is not None:
                    self.quota -= 1
                    if self.quota <= 0:
                        self.accepting = False
                if conn.state == READING:
                    # Its request is not here yet (a unix socket has no TCP_DEFER_ACCEPT): poll
                    # before taking more, so a worker never gathers requests it will serve one
                    # by one while a sibling is idle.
                    return

    def _take(self, conn):
        self.conns[conn.fd] = conn
        conn.state, conn.since = READING, time.monotonic()
        data = conn.recv()  # TCP_DEFER_ACCEPT: usually the whole request is there already
        if data is not None and not data:
            return self._drop(conn)
        if data:
            self._parse(conn, data, conn.since)
        if conn.state == READING and conn.fd in self.conns:
            self._watch(conn, _IN)  # the rest of it is to come

    def _listen(self, want):
        if want == self.listening:
            return
        for fd in self.listeners:
            if want:
                self.epoll.register(fd, select.EPOLLIN)
            else:
                self.epoll.unregister(fd)
        self.listening = want

    def _idle(self):
        return any(c.state == IDLE for c in self.conns.values())

    def _close_oldest_idle(self):
        idle = [c for c in self.conns.values() if c.state == IDLE]
        if not idle:
            return False
        self._drop(min(idle, key=lambda c: c.since))
        return True

    # -- reading -------------------------------------------------------------------------

    def _on_ready(self, conn, now):
        state = conn.state
        if state == WRITING:
            self._write(conn)
        elif state == LINGERING:
            if conn.linger_step():
                self._drop(conn)
        elif state in (READING, IDLE):
            data = conn.recv()
            if data is None:
                return
            if not data:
                return self._client_closed(conn)
            if state == IDLE:
                self._enter(conn, READING, now)
            self._parse(conn, data, now)

    def _parse(self, conn, data, now=None):
        reader = conn.reader
        if reader is None:
            reader = conn.reader = Reader(self.limits, self.config.buffer_body)
        conn.heard = now = now or time.monotonic()
        conn.got += len(data)
        try:
            used = reader.feed(data)
        except HTTPError as exc:
            return self._refuse(conn, exc)
        request = reader.request
        if not request.headers_complete:  # all of `data` was taken: the head goes on
            self._hold_head(conn, reader.received)
            if self.head_bytes > HEAD_MEMORY:
                return self._refuse(conn, HTTPError(503, "Too many unfinished request heads at once"))
            return
        if conn.head_held:
            self._hold_head(conn, 0)
        if used < len(data):
            conn.inbuf = data[used:]  # the next request's: parsed once this one is answered
        if not conn.body_since:
            conn.body_since = conn.heard
            if request.expect_continue and not request.complete and request.buffer is not None:
                try:
                    conn.send_some(b"HTTP/1.1 100 Continue\r\n\r\n")  # 25 bytes into an empty buffer
                except ClientDisconnected:
                    return self._drop(conn)
        if request.complete or request.buffer is None:
            if request.buffer is None and not request.complete and conn.unix:
                set_io_timeout(conn.sock, self.config.client_timeout)  # the app reads the rest itself
            self._enter(conn, WAITING, now)
            self.ready.append(conn)

    def _client_closed(self, conn):
        reader = conn.reader
        if reader is not None and reader.received and not reader.head_complete:
            return self._refuse(conn, HTTPError(400, "Incomplete request head"))
        if reader is not None and reader.head_complete:
            return self._refuse(conn, HTTPError(400, "Client closed before the end of the body"))
        self._drop(conn)

    def _hold_head(self, conn, size):
        """Count `size` bytes of an unfinished head as held by `conn` (0: none any more)."""
        self.head_bytes += size - conn.head_held
        conn.head_held = size

    def _refuse(self, conn, exc):
        """The server's own answer to a request it will not pass on; then the connection ends."""
        self._hold_head(conn, 0)
        status, sent = self.answer_error(conn, exc)
        self.end_request(status, sent)
        conn.keep_alive = False
        if conn.out:
            return self.answered(conn)  # its answer is finished by the loop, then it closes
        self._close(conn, linger=exc.status != 408)  # a client too slow for us gets no more of our time

    # -- writing --------------------------------------------------------------------------

    def _write(self, conn):
        before = conn.out_bytes
        try:
            done = conn.flush()
        except ClientDisconnected as exc:
            log.debug("client %s: the rest of the response not sent: %s", conn.client, exc)
            return self._drop(conn)
        self._count_queued(conn.out_bytes - before)
        if done:
            self._after_response(conn)

    def _after_response(self, conn):
        if conn.spooled:
            self._count_queued(0, -conn.spooled)
            conn.spooled = 0
        if not conn.keep_alive or self.stopping:
            return self._close(conn, linger=conn.unread_input())
        conn.served += 1
        conn.body_since = 0.0
        conn.got = 0
        data, conn.inbuf = conn.inbuf, b""
        if data:
            self._enter(conn, READING)
            return self._parse(conn, data)
        self._enter(conn, IDLE)
        if self.watcher is None and self.lot is not None and not self.watcher_ends:
            self.watcher = threading.Thread(target=self._watch_app_slot, name="prefork-handoff", daemon=True)
            self.watcher.start()

    # -- ending ---------------------------------------------------------------------------

    def _count_queued(self, memory, files=0):
        with self.lock:  # may_queue reads and adds from app threads
            self.queued += memory
            self.spooled += files

    def _close(self, conn, linger):
        if linger and conn.start_linger():
            self._enter(conn, LINGERING)
        else:
            self._drop(conn)

    def _drop(self, conn, abort=False):
        if self.conns.pop(conn.fd, None) is None:
            return
        if conn.head_held:
            self._hold_head(conn, 0)
        if conn.spooled or (conn.state == WRITING and conn.out_bytes):
            self._count_queued(-conn.out_bytes if conn.state == WRITING else 0, -conn.spooled)
        self.watched.pop(conn.fd, None)  # close() takes it out of the epoll set
        reader = conn.reader
        if reader is not None and reader.request.buffer is not None:
            reader.request.buffer.close()
        conn.close(abort)

    def _enter(self, conn, state, now=None):
        conn.state, conn.since = state, now or time.monotonic()
        events = _WATCH[state]
        if events is not None and self.watched.get(conn.fd) != events:
            self._watch(conn, events)

    def _watch(self, conn, events):
        now = self.watched.get(conn.fd)
        if now == events or events is None:
            return
        if now is None:
            self.epoll.register(conn.fd, events)
        else:
            self.epoll.modify(conn.fd, events)
        self.watched[conn.fd] = events

    # -- hand-off: no request waits behind a long one while a sibling is idle ---------------

    def _watch_app_slot(self):
        """The hand-off thread: a look every HANDOFF_LOOK s, and nothing else."""
        while not self.watcher_ends:
            # Often while a request runs, seldom while the app slot is free (an idle worker's
            # thread should cost nothing): a request is seen busy HANDOFF_AFTER + at most 4 looks.
            time.sleep(HANDOFF_LOOK if self.app_since else 4 * HANDOFF_LOOK)
            since = self.app_since
            if not since or time.monotonic() - since < HANDOFF_AFTER or self.stopping:
                continue
            with self.lock:
                if self.app_since == since:  # the app slot still holds the same request
                    self._hand_off_waiting()

    def _hand_off_waiting(self):
        """Pass on the idle connections that have a request waiting (the app slot is busy)."""
        idle = [c for c in self.conns.values() if c.state == IDLE and not c.inbuf]
        if not idle:
            return
        poller = select.poll()
        for conn in idle:
            poller.register(conn.fd, select.POLLIN)
        send_end = self.lot[0]
        for fd, _ in poller.poll(0):
            conn = self.conns[fd]
            note = f"{conn.listener_fd} {conn.served}".encode()
            try:
                send_end.sendmsg([note], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
            except OSError:  # EAGAIN: the lot is full; the connection waits here as before
                return
            # The descriptor in flight keeps the socket open, and with it its place in our
            # epoll set, which close() would not take away: take it out first.
            self.epoll.unregister(fd)
            self.watched.pop(fd, None)
            del self.conns[fd]
            conn.sock.close()

    def _receive_handed_off(self):
        """Take the connections siblings passed on: each has a request waiting."""
        receive_end = self.lot[1]
        while True:
            try:
                note, ancillary, _, _ = receive_end.recvmsg(64, socket.CMSG_SPACE(array.array("i").itemsize))
            except (BlockingIOError, InterruptedError):
                return
            fds = array.array("i")
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
            for fd in fds:
                self._take_handed_off(fd, note)

    def _take_handed_off(self, fd, note):
        try:
            listener_fd, served = (int(x) for x in note.split())
            family = self.listeners[listener_fd][1]
        except (ValueError, KeyError):
            os.close(fd)  # not from a sibling of this generation: nothing to serve
            return
        sock = _socket.socket(family, SOCK_STREAM, 0, fd)
        try:
            client = sock.getpeername() if family != AF_UNIX else ""
        except OSError:
            client = ("", 0)
        conn = Connection(sock, client, family == AF_UNIX, listener_fd)
        conn.served = served
        self.conns[fd] = conn
        conn.state, conn.since = READING, time.monotonic()
        self._watch(conn, _IN)

    # -- deadlines ------------------------------------------------------------------------

    def sweep(self, now):
        """Every connection past its state's deadline (DEADLINES) is answered or closed."""
        self.swept = now
        self.held_at_sweep = len(self.conns)
        timeout = self.config.client_timeout
        for conn in list(self.conns.values()):
            state = conn.state
            if state == READING:
                self._check_reading(conn, now, timeout)
            elif state == IDLE:
                if now - conn.since >= self.config.keepalive:
                    self._drop(conn)
            elif state == WRITING:
                deadline = conn.deadline() if conn.deadline is not None else None
                if (timeout and now - conn.heard >= timeout) or (deadline is not None and now >= deadline):
                    log.debug("client %s read too slowly; the rest of the response dropped", conn.client)
                    self._drop(conn, abort=True)
            elif state == LINGERING:
                if now - conn.since >= LINGER_SECONDS:
                    self._drop(conn)

    def _check_reading(self, conn, now, timeout):
        reader = conn.reader
        if reader is None or not reader.received:
            if now - conn.since >= timeout:
                self._drop(conn)  # connected (or came back) and said nothing
        elif not reader.head_complete:
            if now - reader.request.started >= timeout:
                self._refuse(conn, HTTPError(408, "Request Timeout"))
        elif now - conn.heard >= timeout:
            self._refuse(conn, HTTPError(408, "Request Timeout: the client sent nothing for the client timeout"))
        elif self.config.client_min_rate and now - conn.body_since > timeout:
            # mod_reqtimeout's MinRate over windows: the first client timeout is free.
            if not conn.window_at:  # the first window starts when the free time ends
                conn.window_at, conn.window_got = conn.body_since + timeout, conn.got
            elif now - conn.window_at >= timeout:
                rate = (conn.got - conn.window_got) / (now - conn.window_at)
                if rate < self.config.client_min_rate:
                    self._refuse(conn, HTTPError(408, f"Request Timeout: the body came at {rate:.0f} bytes/s, "
                                                      f"below PREFORK_CLIENT_MIN_RATE {self.config.client_min_rate}"))
                else:
                    conn.window_at, conn.window_got = now, conn.got

    def end_watcher(self):
        """Stop the hand-off thread and wait for it: a worker about to be the mold runs no thread but its main one."""
        self.watcher_ends = True
        if self.watcher is not None:
            self.watcher.join()
            self.watcher = None

    def close(self):
        for conn in list(self.conns.values()):
            self._drop(conn)
        self.epoll.close()

