"""snapshot.py: one look at the server, taken from a master's generations, listeners and scoreboard.

The master here is a stand-in holding what `take()` reads; the scoreboard
is a real one over a temp file, written as arbiters and workers write it.
"""

import socket
from types import SimpleNamespace

import pytest

from django_prefork.master import Generation
from django_prefork.scoreboard import Scoreboard
from django_prefork.snapshot import GenerationInfo, Lifetime, take
from django_prefork.sockets import Listener


@pytest.fixture
def board(tmp_path):
    board = Scoreboard.create(str(tmp_path), slots=4)
    yield board
    board.mm.close()


def master_with(board, *generations, listeners=(), worker_count=2):
    serving = next((g for g in generations if g.state == "serving"), None)
    return SimpleNamespace(
        scoreboard=board, lifetime=Lifetime(board), generations=list(generations), listeners=list(listeners),
        name="testproject", worker_count=worker_count,
        serving=lambda: serving, healthy=lambda: serving is not None,
    )


def generation(board, number, state="serving"):
    gen = Generation(number, pid=1000 + number, ready_fd=None, worker_count=2, block=board.claim_block(number))
    gen.state = state
    return gen


def serve_requests(board, block, slot, number, statuses):
    board.assign(block, slot, number)
    board.set_pid(block, slot, 2000 + number)
    writer = board.writer(block, slot, clear_request=lambda: None)
    writer.booted()
    for status in statuses:
        writer.end_request(status, 100)


def test_a_server_with_one_generation_and_its_workers(board):
    gen = generation(board, 1)
    serve_requests(board, gen.block, 0, 1, [200, 200, 404])
    serve_requests(board, gen.block, 2, 2, [500])
    board.set_memory(gen.block, 0, 50_000_000, 20_000_000)
    snap = take(master_with(board, gen))
    assert snap.healthy and snap.generation == 1 and snap.master.name == "testproject"
    assert snap.generations == (GenerationInfo(1, "serving", 1001, 2),)
    assert [(w.generation, w.number, w.pid, w.state, w.requests) for w in snap.workers] == \
        [(1, 1, 2001, "idle", 3), (1, 2, 2002, "idle", 1)]
    assert (snap.workers[0].rss, snap.workers[0].uss, snap.workers[1].rss) == (50_000_000, 20_000_000, None)
    assert snap.totals.requests == 4 and snap.totals.statuses == [0, 2, 0, 1, 1]
    assert snap.busy == 0


def test_a_booting_worker_is_shown_before_its_first_request(board):
    gen = generation(board, 1, state="booting")
    board.assign(gen.block, 0, 1)
    snap = take(master_with(board, gen))
    assert [w.state for w in snap.workers] == ["booting"]
    assert not snap.healthy and snap.generation is None


def test_no_counter_goes_down_when_a_worker_dies_or_a_generation_ends(board):
    old, new = generation(board, 1, state="stopping"), generation(board, 2)
    master = master_with(board, old, new)
    serve_requests(board, old.block, 0, 1, [200] * 3)
    serve_requests(board, new.block, 0, 1, [200] * 2)
    assert take(master).totals.requests == 5
    board.retire(new.block, 0, "max_requests")  # its arbiter folds the dead worker into the block record
    snap = take(master)
    assert snap.totals.requests == 5 and snap.restarts["max_requests"] == 1
    assert [w.generation for w in snap.workers] == [1]
    master.generations.remove(old)  # the master reaped generation 1 and folds its block
    master.lifetime.generation_ended(old.block)
    assert take(master).totals.requests == 5
    assert board.claim_block(3) == old.block  # and the block is free for the next generation


def test_reloads_and_ended_generations_restarts_are_kept_by_the_lifetime(board):
    gen = generation(board, 1)
    master = master_with(board, gen)
    serve_requests(board, gen.block, 0, 1, [200])
    board.retire(gen.block, 0, "timeout")
    board.set_capacity(gen.block, 3, 2, 4, scaled=+1)
    master.lifetime.generation_ended(gen.block)
    master.lifetime.reloads["failed"] += 1
    master.generations.clear()
    snap = take(master)
    assert (snap.totals.requests, snap.restarts["timeout"], snap.scaling, snap.reloads) == \
        (1, 1, {"up": 1, "down": 0}, {"ok": 0, "failed": 1})


@pytest.mark.parametrize("capacity, target, bounds", [
    (None, 2, None),  # the arbiter has not said yet: the master's own count
    ((3, 2, 4), 3, (2, 4)),  # scaling between PREFORK_WORKERS and PREFORK_MAX_WORKERS
])
def test_the_worker_target_is_the_serving_arbiters(board, capacity, target, bounds):
    gen = generation(board, 1)
    if capacity:
        board.set_capacity(gen.block, *capacity)
    snap = take(master_with(board, gen, worker_count=2))
    assert (snap.worker_target, snap.worker_bounds) == (target, bounds)


def test_a_generation_without_a_block_shows_no_workers(board):
    gen = Generation(1, pid=1001, ready_fd=None, worker_count=2, block=None)  # every block was taken
    gen.state = "serving"
    snap = take(master_with(board, gen))
    assert snap.generations == (GenerationInfo(1, "serving", 1001, 0),) and snap.workers == ()


def test_listeners_carry_the_kernels_queue_length(board):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(7)
    listener = Listener(sock)
    clients = [socket.create_connection(sock.getsockname()) for _ in range(2)]
    try:
        snap = take(master_with(board, listeners=[listener]))
    finally:
        for client in clients:
            client.close()
        sock.close()
    (info,) = snap.listeners
    assert info.address == listener.url()
    assert (info.queued, info.backlog) == (2, 7)
