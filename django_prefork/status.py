"""What the master says about the server: /status, /metrics, /healthz.

Theory of operation
-------------------
The master answers without asking any worker, from the scoreboard (see
scoreboard.py) and what it knows itself (generations, reloads), so it
answers while every worker is busy or stuck. It answers on two kinds of
listening socket:

* the control socket, always: a unix socket only this user can reach, in a
  directory per user, beside a small JSON file naming the project. It is
  how `manage.py preforkstatus` finds a running server (see `runtime_dir`);
* `PREFORK_METRICS` when set: a TCP address or a unix path for Prometheus
  and probes.

The master runs no thread, so the channel is served from its select loop:
every socket is non-blocking, a client gets `CLIENT_DEADLINE` seconds to
send its request head, the answer is written as the socket takes it, and nothing a
client does (connect and say nothing, send garbage, never read) can make
the master wait. A malformed request gets 400 and the channel goes on.
Up to `MAX_CLIENTS` clients are served side by side; past that many, a new
connection takes the place of the oldest one that has not sent its request
yet (read once more first: its request may be waiting in the socket), so
connections that say nothing delay nobody (a liveness probe least of all),
however many there are.

An answer that costs real time, /metrics with the app's multiprocess
registry (thousands of series: 100 ms and more to aggregate), is never
computed in the loop: `render` returns an `Offload`, and the channel forks a
child that produces it and writes it back on a pipe the loop reads as it
comes, so /healthz and signals wait on nothing. One child per kind of answer
at a time: scrapes that arrive while it works wait for its answer and share
it (at most one render old), so a flood of scrapes costs one core at most,
never a fork each. No thread: the master forks generations, and a fork taken
while a thread holds a lock leaves the child a lock nobody releases.
"""

import errno
import json
import logging
import os
import signal
import socket
import stat
import struct
import tempfile
import time

import httptools

from . import __version__
from .http import HTTPError, Limits, Request, _feed, reason_phrase
from .signals import flush_std_streams
from .sockets import remove_stale_unix_socket
from .supervisor import kill_quietly

log = logging.getLogger("django_prefork")

CLIENT_DEADLINE = 2.0  # seconds a status client has to send its request head and read the answer
MAX_CLIENTS = 16  # being read or written; those waiting on an Offload are counted apart
RENDER_DEADLINE = 10.0  # seconds an Offload's child may take (Prometheus' default scrape timeout)
MAX_WAITING = 32  # clients waiting on Offloads; past it a scrape is answered 503 at once
HEAD_LIMIT = 8192


def runtime_dir(uid=None):
    """Where control sockets live: $XDG_RUNTIME_DIR/django-prefork, else a 0700 dir in the temp dir.

    Another user's (`uid`, for root looking for the app user's server) is
    their directory in the temp dir: their XDG_RUNTIME_DIR is not ours to know.
    """
    uid = os.getuid() if uid is None else uid
    base = os.environ.get("XDG_RUNTIME_DIR") if uid == os.getuid() else None
    if base:
        return os.path.join(base, "django-prefork")
    return os.path.join(tempfile.gettempdir(), f"django-prefork-{uid}")


class Untrusted(PermissionError):
    """A control directory or socket that someone other than its user made or can reach."""


def check_private(path, uid, kind):
    """Raise Untrusted unless `path` is a `kind` ("directory" or "socket") of `uid`'s that only it can use.

    Both sides ask this of both the directory and the socket. In a shared
    /tmp, whoever creates django-prefork-UID first owns it: a server that
    used someone else's directory would hand them its socket (they could
    replace it), and a preforkstatus that trusted it would print whatever
    document their socket served. lstat, so that a symlink is refused too,
    rather than followed to wherever it points.
    """
    info = os.lstat(path)
    wrong = []
    if not (stat.S_ISDIR if kind == "directory" else stat.S_ISSOCK)(info.st_mode):
        wrong.append(f"is not a {kind}" + (" but a symlink" if stat.S_ISLNK(info.st_mode) else ""))
    if info.st_uid != uid:
        wrong.append(f"belongs to uid {info.st_uid}, not {uid}")
    if info.st_mode & 0o077 and not stat.S_ISLNK(info.st_mode):
        wrong.append(f"has mode {stat.S_IMODE(info.st_mode):04o}, open to other users (it must be private: "
                     f"{'0700' if kind == 'directory' else '0600 or 0700'})")
    if wrong:
        raise Untrusted(f"{path} {' and '.join(wrong)}")


def peer_uid(conn):
    """The uid of the process at the other end of a connected unix socket; None where the platform cannot say.

    SO_PEERCRED is what the kernel recorded when the peer called connect()
    (for a server, listen()): it cannot be forged by what the peer sends.
    """
    if not hasattr(socket, "SO_PEERCRED"):
        return None  # not Linux: the checks on the files' owner and mode stand alone
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid


def project_id():
    """Which project a server serves: its settings module and the directory it runs from."""
    from django.conf import settings

    base = str(getattr(settings, "BASE_DIR", "") or os.getcwd())
    return f"{os.environ.get('DJANGO_SETTINGS_MODULE', '')}@{os.path.realpath(base)}"


def control_paths(pid, directory=None):
    directory = directory or runtime_dir()
    return os.path.join(directory, f"{pid}.sock"), os.path.join(directory, f"{pid}.json")


def _remove_dead_entries(directory):
    """Control files of masters that died without cleaning up (kill -9): their pid is gone."""
    for name in os.listdir(directory):
        pid, _, ext = name.partition(".")
        if ext not in ("json", "sock") or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass
        except PermissionError:
            pass


class Offload:
    """An answer too costly for the master's loop: `produce()`, run in a forked child, returns its body.

    Requests with the same `key` share the child at work, and its answer.
    """

    def __init__(self, key, content_type, produce):
        self.key = key
        self.content_type = content_type
        self.produce = produce


class Render:
    """An Offload's child at work: its pid, the pipe its answer comes on, the clients waiting for it."""

    def __init__(self, offload, pid, fd):
        self.offload = offload
        self.pid = pid
        self.fd = fd
        self.chunks = []
        self.clients = []
        self.deadline = time.monotonic() + RENDER_DEADLINE


class Client:
    """One status request in progress."""

    def __init__(self, conn):
        self.conn = conn
        self.accepted = time.monotonic()
        self.deadline = self.accepted + CLIENT_DEADLINE
        self.request = Request(Limits(1024, 32, 1024))
        self.request.parser = httptools.HttpRequestParser(self.request)
        self.received = 0
        self.render = None  # the Render whose answer it waits for
        self.out = None  # the answer, once known; what is left of it to send

    @property
    def reading(self):
        return self.out is None and self.render is None


class StatusChannel:
    """The master's listening sockets for status, and the one client being served."""

    def __init__(self, render, reap=True):
        self.render = render  # (method, path) -> (status, content type, body bytes), or an Offload
        # Whether to reap Offloads' children: not in the master, whose loop reaps every child
        # (waitpid(-1)), so that no waitpid here could ever take another child's exit.
        self.reap = reap
        self.listeners = []
        self.private = set()  # the listeners only this user and root may use: the control socket
        self.clients = []
        self.renders = {}  # Offload key -> the Render at work
        self.control_files = ()

    # -- opening -----------------------------------------------------------------

    def open_control_socket(self, project):
        """The socket preforkstatus asks, in this user's private directory; Untrusted when it is not private.

        The server then runs without one (the caller warns): refusing to start
        would let any local user stop it by making the directory first.
        """
        directory = runtime_dir()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        try:
            check_private(directory, os.getuid(), "directory")
        except Untrusted as exc:
            raise Untrusted(f"{exc}: another user could replace the control socket there, so the server opens "
                            f"none and preforkstatus will not find it. Remove the directory (as root: "
                            f"rm -r {directory}) and restart, or set XDG_RUNTIME_DIR to a directory only "
                            f"this user can write.") from None
        _remove_dead_entries(directory)
        sock_path, info_path = control_paths(os.getpid(), directory)
        for stale in (sock_path, info_path):  # a pid reused after a crash
            try:
                os.unlink(stale)
            except FileNotFoundError:
                pass
        sock = _bind_unix(sock_path, 0o077)
        check_private(sock_path, os.getuid(), "socket")  # what preforkstatus will check too
        self._listen(sock, private=True)
        with open(info_path + ".tmp", "w") as f:
            json.dump({"pid": os.getpid(), "project": project, "socket": sock_path}, f)
        os.replace(info_path + ".tmp", info_path)
        self.control_files = (sock_path, info_path)

    def open_metrics(self, address, unix_mode=0o600):
        """PREFORK_METRICS: "host:port" or "unix:/path" (a live server's is refused, as for the app's).

        A unix socket gets `unix_mode` (PREFORK_METRICS_SOCKET_MODE, private by
        default: /status names every request in hand), and is bound under a
        umask that leaves it private until then, so there is no moment when
        it is open wider than asked.
        """
        if address.startswith("unix:"):
            path = address[len("unix:"):]
            remove_stale_unix_socket(path)
            sock = _bind_unix(path, 0o177)
            os.chmod(path, unix_mode)
            self.control_files += (path,)
        else:
            host, _, port = address.rpartition(":")
            host = host.strip("[]") or "127.0.0.1"
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
        self._listen(sock)
        return sock

    def _listen(self, sock, private=False):
        """Listen on `sock`; a `private` one only answers this user and root (see `_trusted`)."""
        sock.listen(64)
        sock.setblocking(False)
        sock.set_inheritable(False)  # generations and workers have no business with it
        self.listeners.append(sock)
        if private:
            self.private.add(sock)

    def _trusted(self, conn):
        """Whether a client of a private socket is this user or root, as the kernel says (SO_PEERCRED).

        The directory's mode already keeps others out; this holds should it
        ever be opened (a chmod by hand, a copied tree), at no cost.
        """
        uid = peer_uid(conn)
        if uid in (None, os.getuid(), 0):
            return True
        log.warning("status channel: refused a client of uid %d on the control socket", uid)
        return False

    def close(self):
        for render in list(self.renders.values()):
            kill_quietly(render.pid, signal.SIGKILL)
            self._finish(render, None)
        for client in list(self.clients):
            self._drop(client)
        for sock in self.listeners:
            sock.close()
        self.listeners = []
        self.private = set()
        for path in self.control_files:
            try:
                os.unlink(path)
            except OSError:
                pass

    # -- the select loop's side ------------------------------------------------------

    def read_fds(self):
        reading = [c.conn for c in self.clients if c.reading]
        room = self._held() < MAX_CLIENTS or reading  # a reading client can be evicted to make room
        return reading + [r.fd for r in self.renders.values()] + (self.listeners if room else [])

    def write_fds(self):
        return [c.conn for c in self.clients if c.out is not None]

    def timeout(self):
        """Seconds until the first client or render in hand runs out of time; None without one."""
        deadlines = [c.deadline for c in self.clients] + [r.deadline for r in self.renders.values()]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def serve(self):
        """Do whatever can be done now without waiting; called on every turn of the master's loop."""
        self._collect()
        self._accept()
        now = time.monotonic()
        for client in list(self.clients):
            if now > client.deadline:
                self._drop(client)
                continue
            if client.reading:
                self._read(client)
            if client.out is not None and client in self.clients:
                self._write(client)

    def _held(self):
        """Clients counted against MAX_CLIENTS: those being read or written."""
        return sum(1 for c in self.clients if c.render is None)

    def _accept(self):
        turn = time.monotonic()
        for sock in self.listeners:
            for _ in range(MAX_CLIENTS):  # a flood of connections cannot keep the loop here
                if self._held() >= MAX_CLIENTS and not self._evict_oldest_silent(turn):
                    return
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED):
                        break
                    raise
                if sock in self.private and not self._trusted(conn):
                    conn.close()
                    continue
                conn.setblocking(False)
                self.clients.append(Client(conn))

    def _evict_oldest_silent(self, turn):
        """Make room for a new client by dropping the oldest that has not sent its request.

        Connections that say nothing then only push each other out, and a
        probe, which sends its request at once and is answered in the same
        turn, gets through however many there are.
        """
        # Not one accepted this turn: it has not had its chance to be read.
        for client in [c for c in self.clients if c.reading and c.accepted < turn]:
            # Read it first: a probe's request may have arrived since its last read.
            self._read(client)
            if client not in self.clients:
                return True  # it hung up: room made
            if client.reading:
                self._drop(client)
                return True
        return False

    def _read(self, client):
        try:
            data = client.conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        if not data:
            self._drop(client)
            return
        client.received += len(data)
        try:
            _feed(client.request.parser, client.request, data)
            if not client.request.headers_complete:
                if client.received > HEAD_LIMIT:
                    raise HTTPError(431, "Request header fields too large")
                return
            path = client.request.target.split(b"?", 1)[0].decode("latin-1")
            method = client.request.method.decode("latin-1")
            answer = self.render(method, path)
            if isinstance(answer, Offload):
                self._wait_for(client, answer)
                return
            status, content_type, body = answer
        except HTTPError as exc:
            status, content_type, body = exc.status, "text/plain; charset=utf-8", f"{exc.reason}\n".encode()
        except Exception as exc:  # a bug in rendering must not take the master down
            log.exception("status channel: answering %r failed", exc)
            status, content_type, body = 500, "text/plain; charset=utf-8", b"Internal Server Error\n"
        self._answer(client, status, content_type, body)

    def _answer(self, client, status, content_type, body):
        head = (f"HTTP/1.1 {status} {reason_phrase(status)}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nServer: django-prefork/{__version__}\r\n"
                f"Cache-Control: no-store\r\nConnection: close\r\n\r\n")
        client.out = memoryview(head.encode("latin-1") + (b"" if client.request.method == b"HEAD" else body))

    def _write(self, client):
        try:
            sent = client.conn.send(client.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        client.out = client.out[sent:]
        if not client.out:
            self._drop(client)

    def _drop(self, client):
        self.clients.remove(client)
        if client.render is not None:
            client.render.clients.remove(client)
        client.conn.close()

    # -- answers made in a child ---------------------------------------------------

    def _wait_for(self, client, offload):
        """Have `client` wait for the child at work on `offload`, starting one if none is."""
        if sum(len(r.clients) for r in self.renders.values()) >= MAX_WAITING:
            self._answer(client, 503, "text/plain; charset=utf-8", b"Too many requests waiting; try again\n")
            return
        render = self.renders.get(offload.key)
        if render is None:
            try:
                render = self.renders[offload.key] = self._start(offload)
            except OSError as exc:  # no fork to be had (EAGAIN, ENOMEM): say so, and go on
                log.error("status channel: cannot start a child to answer %s: %s", offload.key, exc)
                self._answer(client, 503, "text/plain; charset=utf-8", b"Cannot answer now; try again\n")
                return
        client.render = render
        client.deadline = render.deadline + CLIENT_DEADLINE  # and then the time to read the answer
        render.clients.append(client)

    def _start(self, offload):
        read_end, write_end = os.pipe()
        flush_std_streams()  # else the child would write the master's buffered lines again
        pid = os.fork()
        if pid == 0:  # the child: produce, write, exit; nothing of the master's runs here
            code = 1
            try:
                os.close(read_end)
                self._leave_to_the_master()
                body = memoryview(offload.produce())
                while body:
                    body = body[os.write(write_end, body):]
                code = 0
            except BaseException:
                log.exception("status channel: producing %s failed", offload.key)
            finally:
                flush_std_streams()
                os._exit(code)
        os.close(write_end)
        os.set_blocking(read_end, False)
        return Render(offload, pid, read_end)

    def _leave_to_the_master(self):
        """In an Offload's child: drop what is the master's, so the child only produces.

        Its copies of the clients' sockets would hold them open after the
        master closed them; signals go back to their defaults, so that a
        Ctrl-C ends it, and so that nothing it receives wakes the master's loop
        through the inherited wakeup pipe.
        """
        signal.set_wakeup_fd(-1)
        for sig in signal.valid_signals():
            try:
                if callable(signal.getsignal(sig)):
                    signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        for client in self.clients:
            client.conn.close()
        for sock in self.listeners:
            sock.close()

    def _collect(self):
        """Read what the children at work have written; answer the clients of those done or late."""
        for render in list(self.renders.values()):
            while True:
                try:
                    chunk = os.read(render.fd, 1 << 20)
                except (BlockingIOError, InterruptedError):
                    break
                if not chunk:
                    self._finish(render, b"".join(render.chunks))
                    break
                render.chunks.append(chunk)
            if render.offload.key in self.renders and time.monotonic() > render.deadline:
                log.error("status channel: %s took longer than %.0f s; killed", render.offload.key, RENDER_DEADLINE)
                kill_quietly(render.pid, signal.SIGKILL)
                self._finish(render, None)

    def _finish(self, render, body):
        """The child is done (`body`: everything it wrote) or given up (None, killed): answer its clients."""
        del self.renders[render.offload.key]
        os.close(render.fd)
        if self.reap:
            os.waitpid(render.pid, 0)  # exiting: its pipe closes only as it exits, or it was SIGKILLed
        for client in list(render.clients):
            client.render = None
            client.deadline = time.monotonic() + CLIENT_DEADLINE
            if body:  # an answer is never empty: empty is a child that failed (its traceback is logged)
                self._answer(client, 200, render.offload.content_type, body)
            elif body is None:
                self._answer(client, 503, "text/plain; charset=utf-8", b"Took too long; try again\n")
            else:
                self._answer(client, 500, "text/plain; charset=utf-8", b"Internal Server Error\n")
        render.clients.clear()


def _bind_unix(path, umask):
    """A unix socket bound at `path` under `umask`: private from its first moment."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(umask)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    return sock
