"""Debian's nginx in front, for real: over a unix socket and over TCP.

The config written here is the one docs/deploy.md shows (less the TLS lines:
X-Forwarded-Proto is set to https as a TLS-terminating proxy would). As in
production, nginx's workers run as another user (nobody) than runprefork,
which starts under umask 022; the site has SECURE_SSL_REDIRECT on and no
SECURE_PROXY_SSL_HEADER, as a site moved from gunicorn has.
"""

import http.client
import json
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from .helpers import Server, wait_until

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx)")

CONFIG = """
daemon off;
{user}
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 100m;

    upstream over_unix {{ server unix:{sock}; keepalive 8; }}
    upstream over_tcp {{ server 127.0.0.1:{port}; keepalive 8; }}

    server {{
        listen 127.0.0.1:{nginx_port};
        location / {{
            proxy_pass http://$upstream;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        set $upstream over_tcp;
        if ($http_x_via = "unix") {{ set $upstream over_unix; }}
    }}
}}
"""


SERVERS = {}  # the stack's runprefork servers, by how nginx reaches them


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack():
    # A directory nginx's unprivileged workers can reach (pytest's tmp_path is 0700).
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="prefork-nginx-"))
    tmp.chmod(0o755)
    settings = {
        "PREFORK_WORKERS": 1, "SECURE_SSL_REDIRECT": True,
        "MIDDLEWARE": ["django.middleware.security.SecurityMiddleware"],
    }
    old_umask = os.umask(0o022)
    try:
        over_unix = Server(settings=settings, addr=f"unix:{tmp}/app.sock").start()
        over_tcp = Server(settings=settings).start()
    finally:
        os.umask(old_umask)
    nginx_port = free_port()
    config = tmp / "nginx.conf"
    user = "user nobody nogroup;" if os.geteuid() == 0 else ""  # else nginx runs as us anyway
    config.write_text(CONFIG.format(tmp=tmp, sock=f"{tmp}/app.sock", port=over_tcp.port, nginx_port=nginx_port,
                                    user=user))
    proc = subprocess.Popen([NGINX, "-c", str(config), "-p", str(tmp)], stderr=subprocess.PIPE)

    def up():
        try:
            socket.create_connection(("127.0.0.1", nginx_port), timeout=1).close()
            return True
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode()
            return False

    wait_until(up, timeout=10, message="nginx to listen")
    SERVERS.update(unix=over_unix, tcp=over_tcp)
    yield nginx_port
    proc.terminate()
    proc.wait(10)
    proc.stderr.close()
    over_unix.close()
    over_tcp.close()
    errors = (tmp / "error.log").read_text() if (tmp / "error.log").exists() else ""
    shutil.rmtree(tmp, ignore_errors=True)
    assert "Permission denied" not in errors, errors


def through_nginx(port, method, path, via, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={"X-Via": via, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_requests_pass_and_forwarded_proto_makes_django_secure(stack, via):
    # Without PREFORK_FORWARDED_ALLOW_IPS' default, SECURE_SSL_REDIRECT would answer 301 to itself forever.
    status, body = through_nginx(stack, "GET", "/secure", via, headers={"Host": "app.example"})
    assert status == 200, body
    assert json.loads(body) == {"is_secure": True, "host": "app.example"}


@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_a_50_mb_upload_passes(stack, via):
    size = 50 * 1024 * 1024
    status, body = through_nginx(stack, "POST", "/count", via, body=b"u" * size,
                                 headers={"Content-Type": "application/octet-stream"})
    assert status == 200 and json.loads(body) == {"received": size}


@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_a_slow_client_does_not_tie_up_the_only_worker(stack, via):
    """nginx buffers the slow upload; the one worker keeps answering others."""
    slow = socket.create_connection(("127.0.0.1", stack), timeout=30)
    result = {}

    def trickle():
        slow.sendall(b"POST /count HTTP/1.1\r\nHost: x\r\nX-Via: " + via.encode() +
                     b"\r\nContent-Length: 30\r\nConnection: close\r\n\r\n")
        for _ in range(30):
            slow.sendall(b"s")
            time.sleep(0.1)  # the slow client under test: 10 bytes a second
        data = b""
        while chunk := slow.recv(65536):
            data += chunk
        result["response"] = data

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        for _ in range(5):  # while the upload trickles in, for three seconds
            started = time.monotonic()
            status, _ = through_nginx(stack, "GET", "/pid", via)
            assert status == 200 and time.monotonic() - started < 1.0
            time.sleep(0.3)  # spreads the five requests over the upload, which is what is tested
        thread.join(30)
    finally:
        slow.close()
    assert result["response"].startswith(b"HTTP/1.1 200") and b'{"received": 30}' in result["response"]


@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_nginx_keeps_its_upstream_connections_alive(stack, via):
    # `keepalive` in the upstream block, HTTP/1.1 and an empty Connection header: nginx reuses
    # its connections to runprefork, which keeps them idle in the event loop between requests.
    for _ in range(5):
        assert through_nginx(stack, "GET", "/secure", via, headers={"Host": "app.example"})[0] == 200
    from .helpers import held_connections

    held = wait_until(lambda: (h := held_connections(SERVERS[via]))["idle"] >= 1 and h,
                      message="nginx's connection kept idle")
    assert held["idle"] <= 8  # nginx's keepalive 8 bounds what it keeps, not a connection a request
