"""wsgi.py against a live server: what the environ says about the client and its proxy.

PREFORK_FORWARDED_ALLOW_IPS (docs/deploy.md): a trusted peer's `X-Forwarded-Proto:
https` makes `wsgi.url_scheme` https, so a site moved from gunicorn behind
nginx keeps working with SECURE_SSL_REDIRECT and no SECURE_PROXY_SSL_HEADER.
"""

import json
import socket

import pytest

from .helpers import head, receive_all, split

RAW_APPS = "tests.fixtureapp.rawapps.application"


def scheme_seen(server, proto, source="127.0.0.1"):
    """wsgi.url_scheme the app sees for a request from `source` saying X-Forwarded-Proto: `proto`."""
    if server.url.startswith("unix:"):
        sock = server.connect()
    else:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10, source_address=(source, 0))
    try:
        sock.sendall(head(b"GET /echo HTTP/1.1", b"Host: x", b"X-Forwarded-Proto: " + proto))
        sock.shutdown(socket.SHUT_WR)
        return json.loads(split(receive_all(sock))[1])["wsgi.url_scheme"]
    finally:
        sock.close()


@pytest.mark.parametrize("allowed, source, expected", [
    (None, "127.0.0.1", "https"),  # the default trusts the loopback proxy, as gunicorn does
    (None, "127.0.0.2", "http"),  # another peer, even on this machine, is not the proxy
    (["10.0.0.1"], "127.0.0.1", "http"),
    (["127.0.0.0/8"], "127.0.0.2", "https"),
    (["*"], "127.0.0.2", "https"),
    ([], "127.0.0.1", "http"),
], ids=["default-loopback", "default-other-peer", "other-proxy-only", "network", "star", "none"])
def test_forwarded_proto_is_trusted_from_allowed_peers_only(serve, allowed, source, expected):
    settings = {"PREFORK_WORKERS": 1, "WSGI_APPLICATION": RAW_APPS}
    if allowed is not None:
        settings["PREFORK_FORWARDED_ALLOW_IPS"] = allowed
    server = serve(settings=settings)
    assert scheme_seen(server, b"https", source) == expected
    assert scheme_seen(server, b"http", source) == "http"


def test_forwarded_proto_takes_the_first_value_as_django_does(serve):
    server = serve(settings={"PREFORK_WORKERS": 1, "WSGI_APPLICATION": RAW_APPS})
    assert scheme_seen(server, b"HTTPS, http") == "https"
    assert scheme_seen(server, b"http, https") == "http"


def test_a_unix_socket_peer_is_always_trusted(serve, tmp_path):
    server = serve(addr=f"unix:{tmp_path}/app.sock", settings={
        "PREFORK_WORKERS": 1, "WSGI_APPLICATION": RAW_APPS, "PREFORK_FORWARDED_ALLOW_IPS": [],
    })
    assert scheme_seen(server, b"https") == "https"
