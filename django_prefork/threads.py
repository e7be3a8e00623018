"""App threads (PREFORK_THREADS > 1): a worker runs N complete requests at once.

The rule: the event loop (reactor.py) stays the main thread's alone. It
accepts, reads, writes what clients do not take at once, sweeps deadlines
and moves the heartbeat, as in a worker without threads; only the app runs
elsewhere. Each of the N app threads takes one complete request from
`tasks`, runs it (wsgi.serve_connection), clears its heartbeat record and
gives the connection back through `done`, waking the loop with a byte on
the worker's wakeup pipe; the main thread counts it and hands the
connection to the reactor again. The loop takes a request from the reactor
only for a free thread, and accepts only while one is free, as the sync
worker accepts only when its app slot is free.

Each thread writes its own heartbeat record (heartbeat.Record: the request
in hand, pdb's flag), so the scoreboard, preforkstatus and /metrics see
busy threads, and `watch()` judges each thread on its own: a thread whose
request is older than PREFORK_TIMEOUT (and not held by pdb) is reported
with its own stack, its client gets the 500 if no head went out, and the
worker asks the arbiter for a successor and stops taking requests; its
other threads finish theirs. The stuck thread cannot be stopped from
Python: the worker exits once the others are done, or after
PREFORK_GRACEFUL_TIMEOUT, and its exit ends the thread.

Django's database connections are per thread (django.db.connections is
thread-local); each thread closes its own as it ends.
"""

import logging
import os
import queue
import socket
import sys
import threading
import time
import traceback
from collections import deque

from .wsgi import WorkerContext, answer_timeout, serve_connection

log = logging.getLogger("django_prefork")


class AppThreads:
    """The app threads of one worker, and the main thread's side of them."""

    def __init__(self, worker, app, count, may_queue):
        self.worker = worker
        self.count = count
        self.records = worker.heartbeat.records[:count]
        self.contexts = [
            {listener.fileno(): WorkerContext(app, listener, worker.config, record, worker.last_request, may_queue)
             for listener in worker.listeners}
            for record in self.records
        ]
        self.limits = next(iter(self.contexts[0].values())).limits
        self.tasks = queue.SimpleQueue()
        self.done = deque()  # (thread, connection, status, bytes sent, seconds): appended by threads, popped by main
        self.free = count
        self.idents = [None] * count
        self.timed_out = set()  # threads the watchdog answered for; their end is not counted again
        self.stuck_since = None  # monotonic: when the first thread timed out
        self.threads = []

    def start(self):
        for index in range(self.count):
            thread = threading.Thread(target=self._run, args=(index,), name=f"prefork-app-{index}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def dispatch(self, conn):
        self.free -= 1
        self.tasks.put(conn)

    def collect(self):
        """What the threads finished since the last call: (thread, conn, status, sent, seconds)."""
        finished = []
        while self.done:
            entry = self.done.popleft()
            self.free += 1
            finished.append(entry)
        return finished

    def idle(self):
        return self.free == self.count - len(self.timed_out)

    def stop(self):
        """No more requests: each thread ends after the one in hand (a stuck one never does)."""
        for _ in self.threads:
            self.tasks.put(None)
        for index, thread in enumerate(self.threads):
            if index not in self.timed_out:
                thread.join(1.0)

    # -- an app thread --------------------------------------------------------------------

    def _run(self, index):
        record, contexts = self.records[index], self.contexts[index]
        self.idents[index] = threading.get_ident()
        self.worker.heartbeat.by_thread[self.idents[index]] = record  # pdb here flags this record only
        try:
            while (conn := self.tasks.get()) is not None:
                status = sent = 0
                try:
                    status, sent = serve_connection(conn, contexts[conn.listener_fd])
                except Exception:
                    log.exception("worker %d (pid %d): serving a request failed", self.worker.number, os.getpid())
                    conn.keep_alive = False
                finally:
                    current = record.current_request()
                    seconds = time.monotonic() - current[1] if current else 0.0
                    if index not in self.timed_out:
                        record.end_request()
                    self.done.append((index, conn, status, sent, seconds))
                    try:
                        os.write(self.worker.wakeup_w, b"\0")  # the loop may be waiting in epoll
                    except BlockingIOError:
                        pass  # full: the loop has wake-ups enough
        finally:
            from django.db import connections

            connections.close_all()  # this thread's own

    # -- the watchdog, in the main thread ---------------------------------------------------

    def watch(self, now, timeout):
        """Each thread judged on its own request's age; True when one timed out just now."""
        if not timeout:
            return False
        fired = False
        for index, record in enumerate(self.records):
            current = record.current_request()
            if current is None or index in self.timed_out or record.debugging():
                continue
            line, started = current
            if now - started > timeout:
                self.time_out(index, line, now - started)
                fired = True
        return fired

    def time_out(self, index, line, age):
        worker = self.worker
        frame = sys._current_frames().get(self.idents[index])
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(its stack is gone)\n"
        log.error("worker %d thread %d timed out after %.0f s serving %s; the request's stack:\n%s",
                  os.getpid(), index, age, line, stack)
        self.timed_out.add(index)
        self.stuck_since = self.stuck_since or time.monotonic()
        self.answer_timed_out(index, line, age)
        self.records[index].end_request()
        if worker.slot is not None:
            worker.slot.count(500, 0, age)
            worker.slot.ask_recycle()  # the arbiter forks the successor, then asks us to finish (USR2)
            worker.asked_successor = True  # take no more requests meanwhile; the others finish theirs
        else:
            worker.recycle = True  # no scoreboard to ask through: leave, and be replaced after

    def answer_timed_out(self, index, line, age):
        """The 500, if no response head went out yet; then the socket shut (never closed: the
        stuck thread still owns its descriptor, and a closed one could be reused under it)."""
        response = next((c.response for c in self.contexts[index].values() if c.response is not None), None)
        if response is None:
            return
        conn = response.conn
        answer_timeout(response, line, time.monotonic() - age, self.worker.config)
        conn.keep_alive = False
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.worker.reactor.forget(conn)
