"""The sync worker: one process, one thread, one request at a time.

Forked by the arbiter, it never returns: `run()` ends in os._exit, so no
frame of the arbiter's stack (the management command, Django's
`execute_from_command_line`) ever runs twice.

The timeout. The arbiter SIGABRTs a worker silent past PREFORK_TIMEOUT;
`handle_abort` logs the Python stack the request was stuck in and, when no
response head went out yet, answers the client 500 before exiting: a
connection closed without a word makes a browser send the same GET again, to
the next worker, which then times out in turn. The connection is found
through the Response `serve_connection` stores on its WorkerContext (one
attribute store per request; a finished request's socket is closed, so a
stale one is never written to), and the answer is bounded by a short send
timeout, so a client that stopped reading cannot hold the worker until
the SIGKILL 2 s later. A worker held by pdb ignores SIGABRT (debugger.py).
"""

import _socket
import gc
import logging
import os
import select
import signal
import sys
import time
import traceback
from socket import SHUT_WR, SOCK_STREAM

from . import debugger, heartbeat
from .signals import die_with_parent, drain, signal_wakeup_pipe
from .sockets import queued_connections, set_io_timeout
from .wsgi import ClientDisconnected, Response, WorkerContext, log_request, serve_connection

log = logging.getLogger("django_prefork")

BOOT_ERROR = 3  # exit code: the app could not be loaded
ANSWER_TIMEOUT = 0.5  # seconds the timeout's 500 may take to send, then to see the client close


class SyncWorker:
    def __init__(self, number, ppid, listeners, beat, config, load_app, max_requests, slot=None):
        self.number = number
        self.ppid = ppid
        self.listeners = listeners
        self.heartbeat = beat
        self.slot = slot  # its scoreboard SlotWriter; None when the scoreboard had no room
        self.config = config
        self.load_app = load_app
        self.alive = True
        self.recycle = False  # SIGUSR2: finish the request in hand, then exit (its successor runs already)
        self.served = 0
        self.max_requests = max_requests  # this worker's own, jitter included; 0 = never
        self.contexts = []  # one WorkerContext a listener

    def run(self):
        code = 0
        try:
            debugger.attach(self.heartbeat)
            self.init_signals()
            app = self.boot()
            self.serve_forever(app)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d (pid %d) crashed", self.number, os.getpid())
            code = 1
        finally:
            _flush_std_streams()
            os._exit(code)

    def init_signals(self):
        # Forget the arbiter's handlers and wakeup fd; keep a wakeup pipe of our own
        # so TERM interrupts select() at once instead of after half the timeout.
        self.wakeup_r, _ = signal_wakeup_pipe()
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, self.handle_term)
        signal.signal(signal.SIGINT, self.handle_quit)
        signal.signal(signal.SIGQUIT, self.handle_quit)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.signal(signal.SIGUSR2, self.handle_usr2)
        signal.signal(signal.SIGABRT, self.handle_abort)
        die_with_parent(signal.SIGTERM)

    def handle_term(self, signum, frame):
        self.alive = False  # finish the request in hand and those queued, then leave

    def handle_usr2(self, signum, frame):
        self.recycle = True  # unlike TERM, leave the queued connections to the successor

    def handle_quit(self, signum, frame):
        _flush_std_streams()
        os._exit(0)

    def handle_usr1(self, signum, frame):
        from .logfiles import reopen_log_files

        reopen_log_files()

    def handle_abort(self, signum, frame):
        if debugger.held():
            return  # sent as we entered pdb; the arbiter sees the flag and calls off the SIGKILL
        # The arbiter found us silent past the timeout: say where we were stuck.
        stack = "".join(traceback.format_stack(frame))
        what = self.heartbeat.describe_timeout(time.monotonic(), self.config.timeout)
        log.error("worker %d %s; the request's stack:\n%s", os.getpid(), what, stack)
        _flush_std_streams()
        try:
            self.answer_timed_out()
        except Exception:
            log.exception("worker %d could not answer the timed-out request", os.getpid())
        _flush_std_streams()
        os._exit(1)

    def answer_timed_out(self):
        """500 to the client of the request in hand, if no response head went out yet."""
        current = self.heartbeat.current_request()
        response = next((c.response for c in self.contexts
                         if c.response is not None and c.response.conn.fileno() != -1), None)
        if current is None or response is None or response.head_sent:
            return  # idle, or the client already has a status: closing tells it the rest
        conn = response.conn
        set_io_timeout(conn, ANSWER_TIMEOUT)
        age = time.monotonic() - current[1]
        body = f"500 Internal Server Error: the request timed out after {age:.0f} s\n".encode()
        answer = Response(conn, response.head_only, response.http11, io_timeout=ANSWER_TIMEOUT)
        answer.start_response("500 Internal Server Error", [
            ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
        ])
        try:
            answer.write(body)
        except ClientDisconnected:
            return
        if self.config.access_log:
            log_request(current[0], 500, len(body))
        try:
            # Let the client read it before the close: wait (briefly) for its
            # own close, so unread input cannot turn our close into a reset.
            conn.shutdown(SHUT_WR)
            deadline = time.monotonic() + ANSWER_TIMEOUT
            while time.monotonic() < deadline and conn.recv(65536):
                pass
        except OSError:
            pass

    def boot(self):
        self.heartbeat.notify()
        try:
            app = self.load_app()
        except BaseException:
            self.heartbeat.write_status(heartbeat.BOOT_FAILED, traceback.format_exc())
            raise SystemExit(BOOT_ERROR) from None
        if self.config.gc_freeze:
            # What loading the app allocated lives as long as the worker: keep
            # it out of every later full collection (and its pages unwritten).
            gc.collect()
            gc.freeze()
        self.heartbeat.write_status(heartbeat.READY)
        if self.slot is not None:
            self.slot.booted()
        if self.max_requests:
            log.info("worker %d (pid %d) will recycle after %d requests", self.number, os.getpid(), self.max_requests)
        return app

    def serve_forever(self, app):
        # The C-level accept and socket type: socket.socket's Python wrappers
        # (family enums, io refcounts) cost more per request than the syscalls.
        contexts = [(listener.sock._accept, listener.sock.family.value, WorkerContext(app, listener, self.config, self.heartbeat))
                   for listener in self.listeners]
        self.contexts = [context for _, _, context in contexts]
        notify = self.heartbeat.notify
        if self.slot is not None:
            end_request = self.slot.end_request  # counts it, then clears the heartbeat's record
        else:
            def end_request(status, sent, clear=self.heartbeat.end_request):
                clear()
        wait = self.config.timeout / 2 if self.config.timeout else 1.0
        readable = [listener.sock for listener in self.listeners] + [self.wakeup_r]
        queued = None  # after TERM: how many queued connections we may still take
        while True:
            notify()
            accepted = False
            for accept, family, context in contexts:
                if not self.alive:
                    if queued is None:
                        queued = queued_connections(self.listeners, self.config.backlog)
                    if queued <= 0:
                        break
                try:
                    fd, client = accept()
                except BlockingIOError:
                    continue
                conn = _socket.socket(family, SOCK_STREAM, 0, fd)
                accepted = True
                status = sent = 0
                try:
                    status, sent = serve_connection(conn, client, context)
                except Exception:
                    # serve_connection answers everything a client or the app can do; this
                    # is a bug of ours, and one connection must not cost the worker its life.
                    log.exception("worker %d (pid %d): serving a connection failed", self.number, os.getpid())
                finally:
                    conn.close()
                    end_request(status, sent)
                if queued is not None:
                    queued -= 1
                self.served += 1
                if self.max_requests and self.served >= self.max_requests:
                    log.info("worker %d (pid %d) served %d requests; recycling", self.number, os.getpid(), self.served)
                    return
                if self.recycle:
                    return
            if accepted:
                continue  # more may be waiting: no select() after a successful accept
            if not self.alive or self.recycle:
                return  # TERM, and nothing (more) queued for us; or recycled
            if os.getppid() != self.ppid:
                log.warning("worker %d (pid %d): the arbiter is gone; exiting", self.number, os.getpid())
                return
            try:
                ready, _, _ = select.select(readable, [], [], wait)
            except InterruptedError:
                continue
            if self.wakeup_r in ready:
                drain(self.wakeup_r)


def _flush_std_streams():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass

