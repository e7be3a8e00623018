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

import gc
import logging
import os
import signal
import tempfile
import time
import traceback

from . import debugger, heartbeat, hooks, refork
from .lifecycle import idle_wait
from .signals import die_with_parent, drain, flush_std_streams, signal_wakeup_pipe
from .sockets import queued_connections
from .reactor import Reactor
from .threads import AppThreads
from .wsgi import WorkerContext, answer_error, answer_timeout, serve_connection

log = logging.getLogger("django_prefork")

BOOT_ERROR = 3  # exit code: the app could not be loaded


class SyncWorker:
    def __init__(self, number, ppid, listeners, beat, config, load_app, max_requests, slot=None, lot=None):
        self.number = number
        self.ppid = ppid
        self.listeners = listeners
        self.heartbeat = beat
        self.slot = slot  # its scoreboard SlotWriter; None when the scoreboard had no room
        self.config = config
        self.load_app = load_app
        self.alive = True
        self.recycle = False  # SIGUSR2: finish the request in hand, then exit (its successor runs already)
        self.asked_successor = False  # a thread timed out: the arbiter is asked for a successor (threads.py)
        self.served = 0
        self.max_requests = max_requests  # this worker's own, jitter included; 0 = never
        self.contexts = {}  # listener fd -> its WorkerContext
        self.context_of_request = None  # the context of the request in the app slot
        self.reactor = None
        self.lot = lot  # the generation's hand-off sockets (reactor.handoff_lot), or None
        self.published_at = None  # the reactor's sweep whose connection counts the scoreboard has
        self.generation = None  # set by the arbiter: what the hooks tell their receivers
        self.started = False  # worker_started was sent: worker_exiting is owed
        # Refork (refork.py): the channel to the arbiter, the count at which to say so, and the promotion.
        self.control = None
        self.refork_at = 0
        self.mold_generation = 0  # 0: forked by the arbiter; n: by the mold of the n-th refork
        self.promote = None  # None, "asked" (PROMOTE came), "going" (draining to become the mold)
        self.arbiter = None  # the arbiter object as forked: what the mold forks with

    def run(self):
        code = 0
        try:
            debugger.attach(self.heartbeat)
            self.init_signals()
            app = self.boot()
            self.started = True
            hooks.send(hooks.worker_started, SyncWorker, **self.hook_arguments())
            self.serve_forever(app)
            if self.promote == "going" and self.alive and not self.recycle:
                refork.Mold(self, self.arbiter, app).run()  # returns only when it refuses
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d (pid %d) crashed", self.number, os.getpid())
            code = 1
        finally:
            self.exit(code)

    def hook_arguments(self):
        return {"pid": os.getpid(), "worker": self.number, "generation": self.generation}

    def exit(self, code):
        """The one way out: worker_exiting (once, if worker_started was sent), then os._exit."""
        if self.started:
            self.started = False  # a signal arriving inside a receiver must not send it twice
            try:
                hooks.send(hooks.worker_exiting, SyncWorker, code=code, **self.hook_arguments())
            except BaseException:
                pass  # exiting anyway: a receiver cut short by a second signal changes nothing
        flush_std_streams()
        os._exit(code)

    def init_signals(self):
        # Forget the arbiter's handlers and wakeup fd; keep a wakeup pipe of our own
        # so TERM interrupts select() at once instead of after half the timeout.
        self.wakeup_r, self.wakeup_w = signal_wakeup_pipe()
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, self.handle_term)
        signal.signal(signal.SIGINT, self.handle_quit)
        signal.signal(signal.SIGQUIT, self.handle_quit)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.signal(signal.SIGUSR2, self.handle_usr2)
        signal.signal(signal.SIGABRT, self.handle_abort)
        if self.control is not None:
            signal.signal(refork.PROMOTE, self.handle_promote)
        die_with_parent(signal.SIGTERM)

    def handle_term(self, signum, frame):
        self.alive = False  # finish the request in hand and those queued, then leave

    def handle_usr2(self, signum, frame):
        self.recycle = True  # unlike TERM, leave the queued connections to the successor

    def handle_promote(self, signum, frame):
        if self.promote is None:
            self.promote = "asked"

    def start_promotion(self):
        """PROMOTE came: stop accepting and drain, unless a thread of ours (the hand-off thread aside) runs."""
        watcher = self.reactor.watcher
        names = [name for name in refork.other_threads() if watcher is None or name != watcher.name]
        if names:
            log.warning("worker %d (pid %d) cannot be the mold: threads besides its main one run (%s); "
                        "the arbiter keeps forking", self.number, os.getpid(), ", ".join(names))
            self.tell(b"R" + ", ".join(names).encode()[:200])
            self.promote = "refused"
            return
        self.promote = "going"

    def tell(self, data):
        try:
            self.control.send(data)
        except OSError:
            pass

    def handle_quit(self, signum, frame):
        self.exit(0)

    def handle_usr1(self, signum, frame):
        from .logfiles import reopen_and_say

        reopen_and_say(f"worker {self.number} (pid {os.getpid()})")

    def handle_abort(self, signum, frame):
        if debugger.held():
            return  # sent as we entered pdb; the arbiter sees the flag and calls off the SIGKILL
        # The arbiter found us silent past the timeout: say where we were stuck.
        stack = "".join(traceback.format_stack(frame))
        what = self.heartbeat.describe_timeout(time.monotonic(), self.config.timeout)
        log.error("worker %d %s; the request's stack:\n%s", os.getpid(), what, stack)
        flush_std_streams()
        status = sent = 0
        try:
            status, sent = self.answer_timed_out()
        except Exception:
            log.exception("worker %d could not answer the timed-out request", os.getpid())
        # Counted like any other request (requests_total, the duration histogram) before the
        # exit: the arbiter folds a dead worker's slot into its generation's figures.
        self.end_request(status, sent)
        remove_upload_files()
        self.exit(1)

    def answer_timed_out(self):
        """500 to the client of the request in hand, if no response head went out yet.

        Returns (status, body bytes sent) of what the client got, for the
        counters; (0, 0) when the worker held no request.
        """
        current = self.heartbeat.current_request()
        response = self.context_of_request.response if self.context_of_request is not None else None
        if current is None:
            return 0, 0  # idle: there is no request to count
        if response is None or response.conn.sock.fileno() == -1:
            return 500, 0  # its connection is gone: the request failed all the same
        answering = not response.head_sent
        status, sent = answer_timeout(response, current[0], current[1], self.config)
        if answering and sent:
            response.conn.linger()  # let the client read our 500 before the close
        return status, sent

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
        """notify → accept → handle, the sync worker's loop, around an event loop that
        holds every connection until its request is complete (reactor.py)."""
        if self.config.threads > 1:
            return self.serve_threaded(app)
        reactor = self.reactor = Reactor(self.listeners, self.config, self.wakeup_r, self.refuse, self.end_request,
                                         self.lot)
        self.contexts = {fd: WorkerContext(app, listener, self.config, self.heartbeat.records[0], self.last_request,
                                               reactor.may_queue)
                         for fd, listener in ((l.fileno(), l) for l in self.listeners)}
        reactor.limits = next(iter(self.contexts.values())).limits
        notify = self.heartbeat.notify
        wait = idle_wait(self.config.timeout)
        while True:
            notify()
            if self.promote == "asked":
                self.start_promotion()
            if self.leaving() and not reactor.stopping:
                reactor.stop(self.queued_at_stop())  # accept no more (TERM: what is queued), finish what is held
            conn = reactor.next_request()
            if conn is not None:
                self.handle(conn)
                continue
            if reactor.stopping and reactor.drained():
                if self.promote == "going":
                    reactor.end_watcher()
                    reactor.close()
                return
            if not self.wait_for_work(wait):
                return

    def serve_threaded(self, app):
        """The same loop, the app slot N threads (threads.py): the main thread keeps the
        event loop and hands each complete request to a free thread."""
        reactor = self.reactor = Reactor(self.listeners, self.config, self.wakeup_r, self.refuse, self.count_refused)
        pool = AppThreads(self, app, self.config.threads, reactor.may_queue)
        self.contexts = pool.contexts[0]
        reactor.limits = pool.limits
        pool.start()
        notify = self.heartbeat.notify
        wait = idle_wait(self.config.timeout)
        try:
            while True:
                notify()
                self.count_answered(pool)
                pool.watch(time.monotonic(), self.config.timeout)
                if self.leaving() and not reactor.stopping:
                    reactor.stop(self.queued_at_stop())
                while pool.free and (conn := reactor.next_request()) is not None:
                    pool.dispatch(conn)
                reactor.room = pool.free > 0  # with every thread busy, the listen queue keeps new clients
                if reactor.stopping and reactor.drained() and pool.idle() \
                        and (self.recycle or not self.alive or not self.asked_successor):
                    return  # a worker that asked for a successor waits for it (the arbiter's USR2)
                if pool.stuck_since and time.monotonic() - pool.stuck_since > self.config.graceful_timeout:
                    log.warning("worker %d (pid %d): a timed-out thread is still stuck; exiting",
                                self.number, os.getpid())
                    return
                if not self.wait_for_work(wait):
                    return
        finally:
            pool.stop()

    def wait_for_work(self, wait):
        """Nothing to run now: let the event loop wait (at most `wait` s); False when the
        arbiter is gone and the worker must leave."""
        if os.getppid() != self.ppid:
            log.warning("worker %d (pid %d): the arbiter is gone; exiting", self.number, os.getpid())
            return False
        if self.reactor.wait(wait):
            drain(self.wakeup_r)
        if self.reactor.swept != self.published_at:  # a few times a second, not every turn
            self.publish_connections()
        return True

    def count_refused(self, status, sent):
        """A request the loop answered itself: counted, and no thread's record touched."""
        if status and self.slot is not None:
            self.slot.count(status, sent, 0.0)

    def count_answered(self, pool):
        for thread, conn, status, sent, seconds in pool.collect():
            if thread not in pool.timed_out and status and self.slot is not None:
                self.slot.count(status, sent, seconds)
            self.served += 1
            self.reactor.answered(conn)
            if self.max_requests and self.served >= self.max_requests and not self.recycle:
                log.info("worker %d (pid %d) served %d requests; recycling", self.number, os.getpid(), self.served)
                self.recycle = True

    def handle(self, conn):
        """The app slot: one complete request, its response handed back to the event loop."""
        context = self.context_of_request = self.contexts[conn.listener_fd]
        status = sent = 0
        self.reactor.app_started()
        try:
            status, sent = serve_connection(conn, context)
        except Exception:
            # serve_connection answers everything a client or the app can do; this
            # is a bug of ours, and one connection must not cost the worker its life.
            log.exception("worker %d (pid %d): serving a request failed", self.number, os.getpid())
            conn.keep_alive = False
        finally:
            self.reactor.app_done()
            self.end_request(status, sent)
            self.context_of_request = None
        self.served += 1
        self.reactor.answered(conn)
        if self.max_requests and self.served >= self.max_requests and not self.recycle:
            log.info("worker %d (pid %d) served %d requests; recycling", self.number, os.getpid(), self.served)
            self.recycle = True
        if self.served == self.refork_at:
            self.tell(b"C")  # the arbiter decides whether we become the mold

    def refuse(self, conn, exc):
        """The server's own answer to a request the event loop will not pass on (4xx, 503)."""
        # What the client does not take at once is left to the loop: it must never wait here.
        return answer_error(conn, exc, self.contexts[conn.listener_fd], None, self.reactor.may_queue)

    def end_request(self, status, sent):
        if self.slot is not None:
            self.slot.end_request(status, sent)  # counts it, then clears the heartbeat's record
        else:
            self.heartbeat.end_request()

    def leaving(self):
        """TERM, a recycle (USR2, max requests), a successor asked for, a promotion to the
        mold: every connection closes after its response."""
        return not self.alive or self.recycle or self.asked_successor or self.promote == "going"

    def last_request(self):
        """Is the request in hand this worker's last? Its response then says Connection: close."""
        return self.leaving() or bool(self.max_requests and self.served + 1 >= self.max_requests)

    def queued_at_stop(self):
        """After TERM: the connections already queued are served; a recycle leaves them to the successor."""
        if self.recycle or self.asked_successor or self.promote == "going":
            return 0
        return queued_connections(self.listeners, self.config.backlog)

    def publish_connections(self):
        self.published_at = self.reactor.swept
        if self.slot is not None:
            self.slot.set_connections(self.reactor.counts())



def remove_upload_files():
    """Unlink the upload files Django named for the request in hand; the worker is about to os._exit.

    Django spools an upload past FILE_UPLOAD_MAX_MEMORY_SIZE to a named file
    ("tmpXXXX.upload.ext" in FILE_UPLOAD_TEMP_DIR) and deletes it when the
    file is closed, which a timed-out worker never does: its files would pile
    up in /tmp. One request at a time runs here, so a file of that name this
    process holds open is that request's. /proc/self/fd lists them (Linux);
    elsewhere nothing is removed.
    """
    from django.conf import settings

    directory = os.path.realpath(getattr(settings, "FILE_UPLOAD_TEMP_DIR", None) or tempfile.gettempdir())
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return
    for fd in fds:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if os.path.dirname(path) == directory and ".upload" in os.path.basename(path):
                os.unlink(path)
                log.info("worker %d removed the timed-out request's upload file %s", os.getpid(), path)
        except OSError:
            continue  # closed meanwhile, or unlinked already (readlink then ends in " (deleted)")
