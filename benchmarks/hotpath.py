"""runprefork's own per-request path, timed in a hot loop, without sockets.

    python benchmarks/hotpath.py              # the bare app: the server's own path alone
    python benchmarks/hotpath.py --django     # testproject's /hello through the same path
    python benchmarks/hotpath.py --profile    # then cProfile's top 25 functions by own time
    python benchmarks/hotpath.py --keepalive  # one kept connection, no Connection: close
    python benchmarks/hotpath.py --loop       # and the event loop's share: accept, recv, close

What benchmarks/run.py cannot show: the CPU of the Python that runs for every
request (reading the head, the environ, the response, the scoreboard), without
the kernel's share and without the noise of a loaded machine, so a change of a
few hundred nanoseconds is seen. A fake socket hands wrk's request to an http.Reader
(as the event loop does once it has read it) and `serve_connection` answers it
into the void; the transport's Connection, the heartbeat and the scoreboard slot
are real. The event loop's own share (epoll, accept, recv, close) is not in it. The figure is a hot one: in the server, with Django and the kernel
running between two requests, the same path costs twice as much or more
(docs/performance.md).
"""

import argparse
import gc
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
REQUEST = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nConnection: close\r\n\r\n"


class FakeSocket:
    """A connected socket as the transport uses it: the answer dropped."""

    family = socket.AF_INET

    def __init__(self):
        self._pair = socket.socketpair()  # a real fd, for the unread-input check (FIONREAD)

    def send(self, data, flags=0):
        return len(data)

    def fileno(self):
        return self._pair[0].fileno()


class FakeListener:
    class sock:  # noqa: N801: stands in for a listening socket.socket
        family = socket.AF_INET

        @staticmethod
        def setsockopt(*args):
            pass

    host, port = "127.0.0.1", "8000"


class PairListener:
    """A listener whose accept() hands out one end of a socketpair the request is already in."""

    host, port = "127.0.0.1", "8000"

    def __init__(self):
        self.waiting = []
        this = self

        class sock:  # noqa: N801: stands in for a listening socket.socket
            family = socket.AF_INET

            @staticmethod
            def _accept():
                if not this.waiting:
                    raise BlockingIOError
                return this.waiting.pop(), ("127.0.0.1", 50000)

            @staticmethod
            def setsockopt(*args):
                pass

        self.sock = sock
        self._fd, _ = os.pipe()  # epoll watches it while the worker waits: nothing comes

    def fileno(self):
        return self._fd


def loop_once(context, config, slot, request, keepalive):
    """one() through a real Reactor: the syscalls of a socketpair are in the figure."""
    from django_prefork import wsgi
    from django_prefork.reactor import Reactor

    listener = PairListener()
    wake_r, _ = os.pipe()
    reactor = Reactor([listener], config, wake_r, lambda conn, exc: (400, 0), slot.end_request)
    reactor.limits = context.limits
    kept = []

    def one():
        if keepalive and kept:
            kept[0].send(request)
            reactor.wait(0)
        else:
            ours, theirs = socket.socketpair()
            theirs.send(request)
            listener.waiting.append(ours.detach())
            kept[:] = [theirs]
        conn = reactor.next_request()
        status, sent = wsgi.serve_connection(conn, context)
        slot.end_request(status, sent)
        reactor.answered(conn)
        kept[0].recv(65536)
        if not keepalive:
            kept[0].close()

    return one


def socket_cost(keepalive):
    """µs of CPU the client's side of loop_once costs alone: to be subtracted."""
    runs = []
    kept = socket.socketpair()
    for _ in range(7):
        started = time.process_time()
        for _ in range(5000):
            if keepalive:
                kept[1].send(REQUEST)
                kept[0].recv(65536)
            else:
                ours, theirs = socket.socketpair()
                theirs.send(REQUEST)
                ours.close()
                theirs.close()
        runs.append((time.process_time() - started) / 5000 * 1e6)
    return min(runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--django", action="store_true", help="serve testproject's /hello, not the bare app")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top 25 by own time")
    parser.add_argument("--requests", type=int, default=20000, help="requests per timed run (7 runs)")
    parser.add_argument("--keepalive", action="store_true", help="one kept connection, as wrk's keep-alive load")
    parser.add_argument("--loop", action="store_true",
                        help="through the worker's event loop too: each request on a fresh socketpair "
                             "accepted, read, answered and closed by a real Reactor")
    args = parser.parse_args()

    sys.path[:0] = [REPO, os.path.join(REPO, "testproject"), HERE]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    os.environ["DJANGO_DEBUG"] = "0"
    tmp = tempfile.mkdtemp(prefix="prefork-hotpath-")
    os.environ.setdefault("TESTPROJECT_DB", os.path.join(tmp, "db.sqlite3"))
    import django

    django.setup()
    from django_prefork import conf, heartbeat, wsgi
    from django_prefork.http import Reader
    from django_prefork.scoreboard import Scoreboard
    from django_prefork.transport import Connection

    if args.django:
        from django.core.management import call_command
        from django.core.wsgi import get_wsgi_application

        call_command("migrate", verbosity=0)
        app = get_wsgi_application()
    else:
        from bare_app import application as app

    board = Scoreboard.create(tmp, 4)
    block = board.claim_block(1)
    beat = heartbeat.Heartbeat(tmp, board.heartbeat_record(block, 0))
    slot = board.writer(block, 0, beat.end_request)
    config = conf.Config.load()
    context = wsgi.WorkerContext(app, FakeListener(), config, beat.records[0])
    request = REQUEST.replace(b"Connection: close\r\n", b"") if args.keepalive else REQUEST
    kept = Connection(FakeSocket(), ("127.0.0.1", 50000))

    def one():  # what the worker does for a request, minus the event loop's syscalls
        beat.notify()
        conn = kept if args.keepalive else Connection(kept.sock, ("127.0.0.1", 50000))
        conn.reader = Reader(context.limits, config.buffer_body)
        conn.reader.feed(request)
        status, sent = wsgi.serve_connection(conn, context)
        slot.end_request(status, sent)

    if args.loop:
        one = loop_once(context, config, slot, request, args.keepalive)
    for _ in range(2000):
        one()
    if context.response.status_code != 200:
        sys.exit(f"the app answered {context.response.status_code}")
    gc.collect()
    gc.freeze()  # as the worker does after loading the app
    runs = []
    for _ in range(7):
        started = time.process_time()
        for _ in range(args.requests):
            one()
        runs.append((time.process_time() - started) / args.requests * 1e6)
    what = ("testproject /hello" if args.django else "the bare app") + (", keep-alive" if args.keepalive else "")
    if args.loop:
        what += f", event loop included ({socket_cost(args.keepalive):.2f} µs of it the client's socketpair)"
    print(f"{what}: {min(runs):.2f} µs of CPU a request (min of 7 runs; median {statistics.median(runs):.2f})")
    if args.profile:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.runcall(lambda: [one() for _ in range(args.requests)])
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
