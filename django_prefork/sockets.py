"""Listening sockets: bound once by the master, inherited by every generation and worker.

A listener is a plain socket.socket, non-blocking (workers accept() without
waiting and select() on EAGAIN) and inheritable (so a generation
started with exec takes it over by fd number and the port never closes).
"""

import errno
import os
import socket
import stat
import struct

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): systemd passes sockets from fd 3 on


class Listener:
    """One listening socket and what the banner and environ need to know of it."""

    def __init__(self, sock, unix_path=None, inherited=False):
        self.sock = sock
        self.unix_path = unix_path
        self.inherited = inherited
        sock.setblocking(False)
        sock.set_inheritable(True)
        if sock.family == socket.AF_UNIX:
            self.host, self.port = "localhost", "80"
        else:
            self.host, port = sock.getsockname()[:2]
            self.port = str(port)

    def fileno(self):
        return self.sock.fileno()

    def url(self):
        if self.sock.family == socket.AF_UNIX:
            return f"unix:{self.unix_path or self.sock.getsockname()}"
        host = f"[{self.host}]" if self.sock.family == socket.AF_INET6 else self.host
        return f"http://{host}:{self.port}/"

    def close(self, unlink=True):
        self.sock.close()
        # The socket file outlives its socket; leave an inherited one to its owner.
        if unlink and self.unix_path and not self.inherited:
            try:
                os.unlink(self.unix_path)
            except OSError:
                pass


def set_io_timeout(sock, seconds):
    """Bound each recv (and blocking send) on `sock` by `seconds`, in the kernel.

    Responses do not rely on it: wsgi.Response sends without blocking and
    waits in poll(), since a blocking send can overrun SO_SNDTIMEO.

    A Python-level timeout (settimeout) makes CPython poll() before every
    recv and send; SO_RCVTIMEO/SO_SNDTIMEO cost nothing per call, and TCP
    connections inherit them from the listener (Linux copies the listening
    socket's options to each accepted one; unix sockets do not). A call that
    runs out raises BlockingIOError (EAGAIN).
    """
    whole = int(seconds)
    micro = int((seconds - whole) * 1_000_000)
    if not whole and not micro:
        micro = 1  # a zero timeval means "wait forever"
    tv = struct.pack("ll", whole, micro)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def listen_queue(sock):
    """(connections waiting, backlog) of a listening socket, from the kernel; None where it cannot say.

    Linux's tcp_info for a TCP listener: tcpi_unacked is its accept queue's
    length, tcpi_sacked the backlog. A unix listener has no tcp_info; the
    kernel tells sock_diag instead (_unix_listen_queue). Other systems: None,
    never a made-up 0.
    """
    if sock.family == socket.AF_UNIX:
        return _unix_listen_queue(sock)
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        return struct.unpack_from("II", info, 24)
    except (OSError, struct.error):
        return None


# sock_diag(7) and <linux/unix_diag.h>: what `ss -xl` asks to show a unix
# listener's Recv-Q (connections waiting) and Send-Q (backlog).
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_TCP_LISTEN = 10
_UDIAG_SHOW_RQLEN = 0x10
_UNIX_DIAG_RQLEN = 4
_NO_COOKIE = 0xFFFFFFFF
_NLM_F_REQUEST = 1
_NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_UNIX_DIAG_REQ = struct.Struct("=BBxxIIIII")  # family, protocol, states, inode, show, cookie
_UNIX_DIAG_MSG_SIZE = 16
_RTATTR = struct.Struct("=HH")  # length, type


def _unix_listen_queue(sock):
    """(connections waiting, backlog) of a listening unix socket, asked of sock_diag by its inode."""
    if not hasattr(socket, "AF_NETLINK"):
        return None
    request = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 1 << _TCP_LISTEN, os.fstat(sock.fileno()).st_ino,
                                  _UDIAG_SHOW_RQLEN, _NO_COOKIE, _NO_COOKIE)
    header = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
    try:
        # ENOENT and the like (no unix_diag in this kernel, netlink filtered out) come back as OSError.
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as netlink:
            netlink.settimeout(1)
            netlink.send(header + request)
            reply = netlink.recv(4096)
        length, kind = _NLMSG_HEADER.unpack_from(reply)[:2]
        if kind != _SOCK_DIAG_BY_FAMILY:
            return None  # NLMSG_ERROR: no such socket, or the kernel will not say
        if reply[_NLMSG_HEADER.size + 2] != _TCP_LISTEN:  # unix_diag_msg's state
            return None  # not listening: it has no accept queue
        offset = _NLMSG_HEADER.size + _UNIX_DIAG_MSG_SIZE
        while offset + _RTATTR.size <= min(length, len(reply)):
            size, attribute = _RTATTR.unpack_from(reply, offset)
            if size < _RTATTR.size:
                return None
            if attribute == _UNIX_DIAG_RQLEN:
                return struct.unpack_from("=II", reply, offset + _RTATTR.size)
            offset += (size + 3) & ~3
    except (OSError, struct.error, IndexError):  # IndexError: a reply cut short
        return None
    return None


def waiting_connections(listeners):
    """Connections waiting in all the listen queues, or None if any queue cannot be read."""
    total = 0
    for listener in listeners:
        queue = listen_queue(listener.sock)
        if queue is None:
            return None
        total += queue[0]
    return total


def queued_connections(listeners, fallback):
    """Connections waiting in the listen queues now: what a TERM still serves.

    Where the kernel cannot count them (listen_queue says None), take
    `fallback` and let EAGAIN say when the queue is empty.
    """
    total = waiting_connections(listeners)
    return fallback if total is None else total


def _defer_accept(sock, seconds):
    # Linux hands the connection to accept() only once the client has sent
    # bytes, so a worker never sits blocked on a preconnect that says nothing.
    if hasattr(socket, "TCP_DEFER_ACCEPT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, max(1, int(seconds)))


def bind_tcp(host, port, ipv6, backlog, client_timeout):
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        _defer_accept(sock, client_timeout)
    except BaseException:
        sock.close()
        raise
    return Listener(sock)


def bind_unix(path, backlog, mode=0o666):
    remove_stale_unix_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        # bind() applies the umask: under 022 nginx running as another user
        # could not connect (EACCES, a 502). The directory guards the socket.
        os.chmod(path, mode)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return Listener(sock, unix_path=path)


def remove_stale_unix_socket(path):
    """Unlink a socket file left by a dead server; refuse one a live server answers on."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EADDRINUSE, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except OSError:
        return  # let bind() report it
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))


def systemd_listeners():
    """Sockets passed by systemd socket activation, or [] (sd_listen_fds(3))."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    # Unset so a child exec'd later does not take them for its own.
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    listeners = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        sock = socket.socket(fileno=fd)
        path = sock.getsockname() if sock.family == socket.AF_UNIX else None
        listeners.append(Listener(sock, unix_path=path or None, inherited=True))
    return listeners
