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
the master wait. A malformed request gets 400 and the channel goes on. Up
to `MAX_CLIENTS` clients are served side by side; past that many, a new
connection takes the place of the oldest one that has not sent its request
yet, so connections that say nothing delay nobody (a liveness probe least
of all), however many there are.
"""

import errno
import json
import logging
import os
import socket
import stat
import struct
import tempfile
import time

import httptools

from . import __version__
from .http import HTTPError, Limits, Request, _feed, reason_phrase
from .sockets import remove_stale_unix_socket

log = logging.getLogger("django_prefork")

CLIENT_DEADLINE = 2.0  # seconds a status client has to send its request head and read the answer
MAX_CLIENTS = 16
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


class Client:
    """One status request in progress."""

    def __init__(self, conn):
        self.conn = conn
        self.accepted = time.monotonic()
        self.deadline = self.accepted + CLIENT_DEADLINE
        self.request = Request(Limits(1024, 32, 1024))
        self.request.parser = httptools.HttpRequestParser(self.request)
        self.received = 0
        self.out = None  # the answer, once known; what is left of it to send


class StatusChannel:
    """The master's listening sockets for status, and the one client being served."""

    def __init__(self, render):
        self.render = render  # (method, path) -> (status, content type, body bytes)
        self.listeners = []
        self.private = set()  # the listeners only this user and root may use: the control socket
        self.clients = []
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
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)
        try:
            sock.bind(sock_path)
        finally:
            os.umask(old_umask)
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
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old_umask = os.umask(0o177)
            try:
                sock.bind(path)
            finally:
                os.umask(old_umask)
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
        waiting = [c.conn for c in self.clients if c.out is None]
        return waiting + (self.listeners if len(self.clients) < MAX_CLIENTS or waiting else [])

    def write_fds(self):
        return [c.conn for c in self.clients if c.out is not None]

    def timeout(self):
        """Seconds until the first client in hand runs out of time; None without one."""
        if not self.clients:
            return None
        return max(0.0, min(c.deadline for c in self.clients) - time.monotonic())

    def serve(self):
        """Do whatever can be done now without waiting; called on every turn of the master's loop."""
        self._accept()
        now = time.monotonic()
        for client in list(self.clients):
            if now > client.deadline:
                self._drop(client)
                continue
            if client.out is None:
                self._read(client)
            if client.out is not None and client in self.clients:
                self._write(client)

    def _accept(self):
        turn = time.monotonic()
        for sock in self.listeners:
            for _ in range(MAX_CLIENTS):  # a flood of connections cannot keep the loop here
                if len(self.clients) >= MAX_CLIENTS and not self._evict_oldest_silent(turn):
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
        silent = next((c for c in self.clients if c.out is None and c.accepted < turn), None)
        if silent is None:
            return False
        self._drop(silent)
        return True

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
            status, content_type, body = self.render(method, path)
        except HTTPError as exc:
            status, content_type, body = exc.status, "text/plain; charset=utf-8", f"{exc.reason}\n".encode()
        except Exception as exc:  # a bug in rendering must not take the master down
            log.exception("status channel: answering %r failed", exc)
            status, content_type, body = 500, "text/plain; charset=utf-8", b"Internal Server Error\n"
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
        client.conn.close()


