"""The minimal loop: how fast a pre-fork Python server can serve Django at all, as a reference.

    python benchmarks/minimal_loop.py PORT WORKERS [--keepalive]   # cwd testproject/, as run.py does

The parent binds, loads testproject's WSGI application and forks WORKERS processes; each
blocks in accept(), reads until the blank line, splits the head with str.split, copies an
environ from a base dict, calls the application and writes the answer with one sendall. With
--keepalive a process goes on reading requests on its connection until the client closes it
or asks for `Connection: close` (so a process serves one connection at a time: the rest of
wrk's connections wait in the accept queue); without it, every answer closes the connection.

It checks nothing: no body is read, no header validated, no size or time limited, a client
that sends half a head holds its process for ever, an error drops the connection. That is the
point: it is a ceiling, not a design, and serves nothing but benchmarks/run.py's "minimal
loop" line, which shows how far runprefork is from the floor that Python and Django set.
"""

import io
import os
import socket
import sys


def serve(sock, app, keepalive):
    host, port = sock.getsockname()
    base = {"SCRIPT_NAME": "", "SERVER_NAME": host, "SERVER_PORT": str(port), "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr,
            "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False}
    started = []

    def start_response(status, headers, exc_info=None):
        started[:] = status, headers

    while True:
        conn, addr = sock.accept()
        data = b""
        try:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        raise EOFError
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, protocol = lines[0].split(" ")
                path, _, query = target.partition("?")
                environ = base.copy()
                environ.update(REQUEST_METHOD=method, PATH_INFO=path, QUERY_STRING=query,
                               SERVER_PROTOCOL=protocol, REMOTE_ADDR=addr[0])
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    environ["HTTP_" + name.upper().replace("-", "_")] = value.strip()
                result = app(environ, start_response)
                body = b"".join(result)
                if hasattr(result, "close"):
                    result.close()
                status, headers = started
                again = keepalive and environ.get("HTTP_CONNECTION", "").lower() != "close"
                out = [f"HTTP/1.1 {status}\r\n"] + [f"{k}: {v}\r\n" for k, v in headers]
                if not any(k.lower() == "content-length" for k, _ in headers):
                    out.append(f"Content-Length: {len(body)}\r\n")
                out.append("\r\n" if again else "Connection: close\r\n\r\n")
                conn.sendall("".join(out).encode("latin-1") + body)
                if not again:
                    break
        except (OSError, ValueError, EOFError):
            pass
        finally:
            conn.close()


def main():
    port, workers, keepalive = int(sys.argv[1]), int(sys.argv[2]), "--keepalive" in sys.argv
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    from testproject.wsgi import application  # once, before the fork, as --preload does

    for _ in range(workers):
        if os.fork() == 0:
            serve(sock, application, keepalive)
    while True:  # the parent only waits; run.py ends the whole process group
        os.wait()


if __name__ == "__main__":
    main()
