"""Refork (PREFORK_REFORK_AFTER): new workers forked from a warmed one.

What a worker builds while serving (modules imported on first use, URL
resolvers, template caches, and since Python 3.11 the code objects the
specializing interpreter quickens in place) is its own memory, copied page by
page from what the fork shared. With PREFORK_REFORK_AFTER = [50, 100, 1000],
once a worker has served 50 requests it is promoted to the *mold*: it stops
accepting, finishes what it holds, closes what must not be shared (database
connections, cache clients, its connections; the arbiter frees its scoreboard
slot) and from then on only forks. The arbiter replaces the workers one at a
time with children of the mold, successor first. A worker forked from that mold
that has served 100 requests becomes the next mold, and so on.

Past the list's end the last mold stays while the arbiter expects to fork
again with no worker dying: PREFORK_MAX_REQUESTS recycles every worker,
PREFORK_MAX_WORKERS scales up, and their workers come warm from the mold.
Otherwise, once every worker is its child, the mold retires (it exits): what it
keeps private is the original of every page all its children copied, freed.
A worker the arbiter forks after that (a death, a timeout, a
PREFORK_MAX_WORKER_MEMORY recycle, TTIN) is cold, and the last count promotes
it to a new mold, which replaces only the workers the arbiter forked (the warm
children of an earlier mold serve on) and retires in turn; so each death costs
a promotion and one fork more, never a refork of every worker.

Who supervises the children: the arbiter, always. It is a child subreaper
(prctl PR_SET_CHILD_SUBREAPER), and the mold double-forks: the mold's child
forks the worker and exits at once, so the worker is reparented to the
arbiter, which reaps it, watches its heartbeat and kills it on a timeout
exactly like a worker it forked itself. The worker waits until its parent is
the arbiter before it sets PR_SET_PDEATHSIG and starts serving.

The channel: each worker gets a SOCK_SEQPACKET socket pair from the arbiter.
Worker to arbiter: b"C" (served its count), b"R..." (refused to be the mold,
and why; it serves on), b"X..." (refused once it had stopped accepting; it
exits, replaced), b"M" (the mold is ready). Arbiter to mold: a JSON fork request with
two fds (SCM_RIGHTS): the new worker's heartbeat file, made by the arbiter as
always, and its end of its own socket pair. Mold to arbiter: b"P<pid>", or
b"F" when the fork failed; an arbiter that gets no good answer in REPLY_WAIT
drops the mold (SIGKILL: a hung mold may never act on TERM) and forks from
itself again: a mold is replaced by the next promotion, never by a half-made
child.

Fork safety: a worker with a thread besides its main one is never used (the
hand-off thread of reactor.py is stopped first; with PREFORK_THREADS > 1
refork is off); each child reseeds `random`.
"""

import ctypes
import gc
import json
import logging
import os
import random
import select
import signal
import socket
import threading
import time

from . import proctitle

log = logging.getLogger("django_prefork")

PROMOTE = signal.SIGRTMIN  # the arbiter to a worker: become the mold
PR_SET_CHILD_SUBREAPER = 36
REPLY_WAIT = 5.0  # seconds the arbiter waits for the mold's answer to a fork request
REPARENT_WAIT = 5.0  # seconds a new worker waits to be the arbiter's child


def become_subreaper():
    """Orphaned descendants (the mold's grandchildren) become our children; False where Linux cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def channel():
    """(the arbiter's end, the worker's end) of a worker's control channel."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    return ours, theirs


def messages(sock):
    """What a worker said since the last look, without waiting."""
    said = []
    while True:
        try:
            data = sock.recv(256)
        except (BlockingIOError, InterruptedError):
            return said
        except OSError:
            return said
        if not data:
            return said
        said.append(data)


def threshold(counts, promotions, mold_alive):
    """The request count at which a worker forked now asks to be the mold; 0: never."""
    if not counts:
        return 0
    if promotions < len(counts):
        return counts[promotions]
    return 0 if mold_alive else counts[-1]  # a dead or retired last mold is replaced at the last count


def other_threads():
    main = threading.main_thread()
    return [t.name for t in threading.enumerate() if t is not main]


def close_shared_clients():
    """What a fork must not share: database connections and cache clients."""
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        conn.close()
    try:
        from django.core.cache import caches

        caches.close_all()
    except Exception:
        log.exception("closing the cache clients before the refork failed")


def ask_fork(mold_sock, request, fds):
    """The arbiter's side: one fork request; the new worker's pid, or None (the mold is broken)."""
    try:
        socket.send_fds(mold_sock, [json.dumps(request).encode()], fds)
        readable, _, _ = select.select([mold_sock], [], [], REPLY_WAIT)
        reply = mold_sock.recv(256) if readable else b""
    except OSError:
        return None
    if reply.startswith(b"P") and reply[1:].isdigit() and int(reply[1:]) > 0:
        return int(reply[1:])
    return None


class Mold:
    """The promoted worker, from the moment its event loop drained."""

    def __init__(self, worker, arbiter, app):
        self.worker = worker
        self.arbiter = arbiter  # the arbiter object as it was at our fork: its scoreboard, listeners, names
        self.app = app
        self.control = worker.control

    def run(self):
        """Refuse (return) or be the mold until the arbiter is gone (never returns)."""
        names = other_threads()
        if names:
            log.warning("worker %d (pid %d) cannot be the mold: threads besides its main one run (%s); "
                        "it exits, and the arbiter keeps forking", self.worker.number, os.getpid(), ", ".join(names))
            self.worker.tell(b"X" + ", ".join(names).encode()[:200])
            return
        close_shared_clients()
        # The listeners stay open, never accepted on: the children inherit them.
        gc.collect()
        gc.freeze()  # the children's collections leave the mold's heap (and its pages) alone
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR2):
            signal.signal(sig, lambda *_: os._exit(0))
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        proctitle.set_title(f"runprefork mold [{self.arbiter.name}] generation {self.arbiter.generation}")
        self.control.setblocking(True)
        self.control.settimeout(1.0)
        self.worker.tell(b"M")
        while True:
            if os.getppid() != self.worker.ppid:
                os._exit(0)
            try:
                data, fds, _, _ = socket.recv_fds(self.control, 4096, 2)
            except socket.timeout:
                continue
            except OSError:
                os._exit(0)
            if not data:
                os._exit(0)  # the arbiter closed its end
            pid = 0
            try:
                if len(fds) == 2:
                    pid = self.fork_worker(json.loads(data), fds)
            except Exception:
                log.exception("the mold (pid %d) could not fork a worker", os.getpid())
            finally:
                for fd in fds:
                    os.close(fd)
            self.worker.tell(b"P%d" % pid if pid else b"F")

    def fork_worker(self, request, fds):
        """Double fork: the worker is reparented to the arbiter (a subreaper); its pid, or 0."""
        r, w = os.pipe()
        middle = os.fork()
        if middle == 0:
            try:
                os.close(r)
                pid = os.fork()
                if pid == 0:
                    try:
                        os.close(w)
                        self.be_worker(request, fds)
                    finally:
                        os._exit(1)
                os.write(w, str(pid).encode())
            finally:
                os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 64):
            data += chunk
        os.close(r)
        os.waitpid(middle, 0)
        return int(data) if data.isdigit() else 0

    def be_worker(self, request, fds):
        from .heartbeat import Heartbeat

        arbiter, mold = self.arbiter, self.worker
        heartbeat_fd, control_fd = fds
        self.control.close()
        mold.heartbeat.close()
        signal.set_wakeup_fd(-1)
        for fd in (mold.wakeup_r, mold.wakeup_w):
            os.close(fd)
        deadline = time.monotonic() + REPARENT_WAIT
        while os.getppid() != mold.ppid and time.monotonic() < deadline:
            time.sleep(0.001)  # our parent, the mold's child, is exiting
        if os.getppid() != mold.ppid:
            os._exit(1)  # not the arbiter's: never a half-made worker
        random.seed()  # what the fork copied would repeat in every sibling
        slot = request["slot"]
        record = arbiter.scoreboard.heartbeat_record(arbiter.block, slot) if slot is not None else None
        beat = Heartbeat(None, record, (), fd=heartbeat_fd)
        fds.clear()  # the worker owns them now
        arbiter.become_worker(request["number"], mold.ppid, beat, request["max_requests"], slot,
                              control=socket.socket(fileno=control_fd), refork_at=request["refork_at"],
                              mold_generation=request["mold_generation"], app=self.app)
