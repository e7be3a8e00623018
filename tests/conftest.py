import pytest

from .server import Server


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
