import pytest

from .helpers import Server


@pytest.fixture
def serve():
    """serve(*args, settings=..., ...) starts runprefork; every one is killed at teardown."""
    started = []

    def start(*args, wait=True, **kwargs):
        server = Server(*args, **kwargs)
        started.append(server)
        return server.start(wait=wait)

    yield start
    for server in started:
        server.close()


@pytest.fixture(scope="module")
def server():
    """One worker serving tests/fixtureapp/rawapps.py, shared by a test module.

    Without keep-alive: every response closes its connection, so the tests
    here read a response to its end by reading to the close, and whatever
    follows a message is never answered. Persistent connections have their
    own module, test_keepalive.py.
    """
    srv = Server(settings={
        "PREFORK_WORKERS": 1,
        "PREFORK_KEEPALIVE": 0,
        "PREFORK_CLIENT_TIMEOUT": 2,
        "PREFORK_ACCESS_LOG": True,
        "WSGI_APPLICATION": "tests.fixtureapp.rawapps.application",
    })
    srv.start()
    srv.first_workers = srv.wait_workers(1)
    yield srv
    srv.close()
