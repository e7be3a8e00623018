"""The slow-client attack: what a server still answers while slow and idle clients hold it.

attack(port, ...) opens at once, all on 127.0.0.1:

- idle connections: connect, send nothing;
- slowloris connections: a request head sent one byte a second, never finished;
- slow uploads: a POST to /upload declaring a 1 MB body (Content-Length), sent at 4 KB/s;
- slow readers: GET /file (testproject's largest answer, 1 MiB) with a 4 KiB SO_RCVBUF, read
  at 4 KiB/s. On loopback the server's send buffer grows to MiBs on its own (tcp_wmem), so
  most of the answer lands in the kernel and a sync worker is held about a second, not for
  the 4 minutes the reading takes: a test of a server's send path wants an answer of many
  MiB, which testproject does not have (the result gives the bytes the readers got);

then, one second later so that every attacker has connected and started, a probe: a plain
GET /hello every 50 ms for `seconds`, each on a connection of its own in a thread of its own,
open loop (a probe does not wait for the one before, as real visitors do not). A probe is
answered when a 200 has come in full before the attack ends (`seconds` plus a `grace` of 2 s
after the last probe went out); it failed otherwise, by kind: refused or reset, another
status, or no answer in time. Then every socket is closed.

One thread drives all the attackers on a timetable over non-blocking sockets (a send that
would block waits for the next tick; a reader reads what its pace allows). Bounded: the
attackers are the counts asked for, the probes at most seconds / 0.05 threads, each with a
deadline, and nothing outlives the call.
"""

import socket
import threading
import time

SLOWLORIS_HEAD = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\nX-Slow: " + b"a" * 200
UPLOAD_SIZE = 1_000_000
UPLOAD_HEAD = (b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
               b"Content-Length: %d\r\n\r\n" % UPLOAD_SIZE)
READER_HEAD = b"GET /file HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
PROBE = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
TICK = 0.25  # the attackers' timetable: 4 KB/s is 1,000 bytes a tick, 4 KiB/s 1,024
UPLOAD_RATE, READ_RATE = 1000, 1024
PROBE_EVERY = 0.05


class Attacker:
    """One attacking connection: `kind` says what it does each tick."""

    def __init__(self, kind, port, phase):
        self.kind, self.sent, self.read, self.dropped = kind, 0, 0, None
        self.next = time.monotonic() + phase  # spread over the first second, not all at once
        self.sock = socket.socket()
        if kind == "reader":  # set before connect: the window it advertises is the small one
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.setblocking(False)
        self.sock.connect_ex(("127.0.0.1", port))
        self.out = {"idle": b"", "slowloris": SLOWLORIS_HEAD, "upload": UPLOAD_HEAD,
                    "reader": READER_HEAD}[kind]

    def step(self, now):
        if self.dropped or now < self.next:
            return
        try:
            if self.kind == "slowloris":
                self.next = now + 1.0
                self._send(self.out[self.sent:self.sent + 1])
                return
            self.next = now + TICK
            if self.kind == "upload":
                if self.sent < len(UPLOAD_HEAD):
                    self._send(UPLOAD_HEAD[self.sent:])
                else:
                    self._send(b"x" * min(UPLOAD_RATE, UPLOAD_SIZE - (self.sent - len(UPLOAD_HEAD))))
            elif self.kind == "reader":
                if self.sent < len(READER_HEAD):
                    self._send(READER_HEAD[self.sent:])
                else:
                    chunk = self.sock.recv(READ_RATE)
                    if not chunk:
                        self.dropped = "closed by the server"
                    self.read += len(chunk)
            elif self.kind == "idle":  # only watch for the server closing it
                if self.sock.recv(1, socket.MSG_PEEK) == b"":
                    self.dropped = "closed by the server"
        except (BlockingIOError, InterruptedError):
            pass  # not connected yet, or the buffers are full: the next tick
        except OSError as exc:
            self.dropped = type(exc).__name__

    def _send(self, data):
        if data:
            self.sent += self.sock.send(data)


def probe(port, deadline, out):
    """One probe: (latency in s, None) when answered 200 by the deadline, else (None, kind)."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=max(0.01, deadline - started)) as s:
            s.sendall(PROBE)
            data = b""
            while True:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except socket.timeout:
        out.append((None, "no answer in time"))
        return
    except OSError as exc:
        out.append((None, type(exc).__name__))
        return
    if data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200"):
        out.append((time.monotonic() - started, None))
    else:
        out.append((None, "no answer in time" if not data else "status " + data[9:12].decode("latin-1")))


def attack(port, idle=200, slowloris=50, uploads=10, readers=10, seconds=8.0, grace=2.0):
    """Run the attack on 127.0.0.1:`port` and the probe beside it; the result as a dict."""
    kinds = ["idle"] * idle + ["slowloris"] * slowloris + ["upload"] * uploads + ["reader"] * readers
    attackers = [Attacker(kind, port, i / max(1, len(kinds))) for i, kind in enumerate(kinds)]
    stop = threading.Event()

    def drive():
        while not stop.wait(0.02):
            now = time.monotonic()
            for a in attackers:
                a.step(now)

    driver = threading.Thread(target=drive)
    driver.start()
    results, probes = [], []
    try:
        time.sleep(1.0)
        start = time.monotonic()
        deadline = start + seconds + grace
        n = 0
        while (due := start + n * PROBE_EVERY) < start + seconds:
            time.sleep(max(0.0, due - time.monotonic()))
            t = threading.Thread(target=probe, args=(port, deadline, results))
            t.start()
            probes.append(t)
            n += 1
        for t in probes:
            t.join()
    finally:
        stop.set()
        driver.join()
        for a in attackers:
            a.sock.close()
    latencies = sorted(lat * 1000 for lat, _ in results if lat is not None)
    failures = {}
    for _, kind in results:
        if kind:
            failures[kind] = failures.get(kind, 0) + 1
    dropped = {}
    for a in attackers:
        if a.dropped:
            dropped[a.kind] = dropped.get(a.kind, 0) + 1
    return {"sent": len(results), "answered": len(latencies), "failed": len(results) - len(latencies),
            "failures": failures, "latencies_ms": latencies, "dropped": dropped,
            "uploaded": sum(a.sent for a in attackers if a.kind == "upload"),
            "read": sum(a.read for a in attackers if a.kind == "reader"),
            "attackers": {"idle": idle, "slowloris": slowloris, "uploads": uploads, "readers": readers}}
