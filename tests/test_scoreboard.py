"""scoreboard.py: slots written and read over a real temp file, blocks given out and folded."""

import os

import pytest

from django_prefork import scoreboard
from django_prefork.scoreboard import BLOCKS, BUCKETS, Counters, Scoreboard


@pytest.fixture
def board(tmp_path):
    board = Scoreboard.create(str(tmp_path), slots=3)
    yield board
    board.mm.close()
    os.close(board.fd)


def worker(board, block, slot, number=1, pid=555):
    board.assign(block, slot, number)
    board.set_pid(block, slot, pid)
    writer = board.writer(block, slot, clear_request=lambda: None)
    writer.booted()
    return writer


def test_the_file_is_unlinked_and_reopened_by_fd(tmp_path, board):
    assert os.listdir(tmp_path) == []  # nothing left to clean up after a kill -9
    again = Scoreboard.open(board.fd)  # what an exec'd generation does with the fd it was handed
    block = board.claim_block(1)
    worker(board, block, 0).end_request(200, 10)
    assert again.block_counters(block).requests == 1 and again.master_pid == os.getpid()
    again.mm.close()


def test_a_file_that_is_no_scoreboard_is_refused(tmp_path):
    path = tmp_path / "other"
    path.write_bytes(b"\0" * scoreboard.PAGE)
    fd = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(ValueError):
            Scoreboard.open(fd)
    finally:
        os.close(fd)


def test_blocks_are_given_out_zeroed_until_none_is_left(board):
    blocks = [board.claim_block(n) for n in range(1, BLOCKS + 1)]
    assert sorted(blocks) == list(range(BLOCKS))
    assert board.claim_block(BLOCKS + 1) is None  # the master then runs that generation uncounted
    worker(board, blocks[0], 0).end_request(200, 10)
    board.release_block(blocks[0])
    assert board.claim_block(99) == blocks[0]
    assert board.block_counters(blocks[0]).requests == 0 and board.workers(blocks[0]) == []


def test_a_slot_reads_back_what_its_worker_and_arbiter_wrote(board):
    block = board.claim_block(1)
    board.assign(block, 1, number=7)
    (row,) = board.workers(block)
    assert (row["slot"], row["number"], row["pid"], row["state"]) == (1, 7, 0, "booting")
    writer = worker(board, block, 1, number=7, pid=4321)
    board.set_memory(block, 1, 3 << 20, 1 << 20)
    for status in (200, 201, 302, 404, 503, 101):
        writer.end_request(status, 50)
    writer.end_request(None, 0)  # a connection closed before its request: not counted
    (row,) = board.workers(block)
    assert (row["pid"], row["state"], row["requests"], row["rss"], row["uss"]) == (4321, "idle", 6, 3 << 20, 1 << 20)
    assert row["request"] is None and row["request_age"] is None
    counters = row["counters"]
    assert counters.statuses == [1, 2, 1, 1, 1] and counters.bytes_out == 300
    # A request that named no start took no time: the fastest bucket.
    assert counters.buckets == [6] + [0] * len(BUCKETS) and counters.duration_sum == 0.0


def test_a_worker_that_dies_is_folded_into_the_block_record_once(board):
    block = board.claim_block(1)
    first = worker(board, block, 0, number=1)
    for _ in range(3):
        first.end_request(200, 10)
    worker(board, block, 1, number=2).end_request(500, 10)
    board.retire(block, 0, "timeout")
    assert [r["number"] for r in board.workers(block)] == [2]
    assert board.block_counters(block).requests == 4  # the dead worker's three, not lost, not twice
    assert board.restarts(block)["timeout"] == 1
    board.retire(block, 1)  # a stop, not a restart: no reason counted
    assert board.block_counters(block).requests == 4 and sum(board.restarts(block).values()) == 1
    counters, restarts, scaling = board.release_block(block)
    assert (counters.requests, restarts["timeout"], scaling) == (4, 1, {"up": 0, "down": 0})


def test_a_replacement_in_a_freed_slot_starts_from_zero(board):
    block = board.claim_block(1)
    worker(board, block, 0).end_request(200, 10)
    board.retire(block, 0, "crash")
    worker(board, block, 0, number=1, pid=556).end_request(200, 10)
    assert [r["requests"] for r in board.workers(block)] == [1]
    assert board.block_counters(block).requests == 2


def test_a_reader_waits_out_a_fold_in_progress(board, monkeypatch):
    # The sequence lock: an odd seq means an arbiter is between adding a dead
    # worker's counters to the record and clearing its slot; a read then
    # would count them twice. The reader yields (time.sleep(0)) until it is even.
    block = board.claim_block(1)
    worker(board, block, 0).end_request(200, 10)
    at = board._block_at(block)
    seq, *rest = scoreboard._RECORD.unpack_from(board.mm, at)
    scoreboard._RECORD.pack_into(board.mm, at, seq + 1, *rest)
    waits = []

    def arbiter_finishes(seconds):
        waits.append(seconds)
        scoreboard._RECORD.pack_into(board.mm, at, seq + 2, *rest)

    monkeypatch.setattr(scoreboard.time, "sleep", arbiter_finishes)
    assert board.block_counters(block).requests == 1
    assert waits == [0]


def test_capacity_counts_scaling_events(board):
    block = board.claim_block(1)
    board.set_capacity(block, 2, 2, 4)
    board.set_capacity(block, 3, 2, 4, scaled=+1)
    board.set_capacity(block, 4, 2, 4, scaled=+1)
    board.set_capacity(block, 3, 2, 4, scaled=-1)
    assert board.capacity(block) == {"target": 3, "floor": 2, "ceiling": 4, "up": 2, "down": 1}


def test_counters_add_and_render():
    one = Counters((1, 10, 0, 1, 0, 0, 0, *([0] * len(BUCKETS)), 1, 11.0))
    total = Counters().add(one).add(one)
    assert total.values() == (2, 20, 0, 2, 0, 0, 0, *([0] * len(BUCKETS)), 2, 22.0)
    rendered = total.as_dict()
    assert rendered["responses"]["2xx"] == 2 and rendered["duration_buckets"]["+Inf"] == 2
    assert list(rendered["duration_buckets"]) == [*map(str, BUCKETS), "+Inf"]


def test_complete_requests_held_by_workers_count_as_waiting(tmp_path):
    from django_prefork.scoreboard import Scoreboard

    board = Scoreboard.create(str(tmp_path), 4)
    block = board.claim_block(1)
    for slot, waiting in ((0, 2), (1, 0), (2, 3)):
        board.assign(block, slot, slot + 1)
        writer = board.writer(block, slot, lambda: None)
        writer.set_connections({"reading": 5, "waiting": waiting, "writing": 1, "idle": 7, "lingering": 0})
    # Heads still arriving (reading) and idle keep-alive connections are no demand for a worker.
    assert board.waiting_requests(block) == 5


def test_a_slot_has_a_record_for_each_thread(tmp_path):
    from django_prefork.heartbeat import Record
    from django_prefork.scoreboard import Scoreboard

    board = Scoreboard.create(str(tmp_path), 2, threads=3)
    block = board.claim_block(1)
    board.assign(block, 0, 1)
    records = [Record(board.heartbeat_record(block, 0))] + [Record(p) for p in board.thread_records(block, 0)]
    assert len(records) == 3
    records[2].start_request(b"GET", b"/a")
    records[0].start_request(b"POST", b"/b")
    board.writer(block, 0, lambda: None).booted()
    (row,) = board.workers(block)
    assert row["state"] == "busy" and row["busy_threads"] == 2
    assert [t["request"] for t in row["threads"]] == ["POST /b", None, "GET /a"]
    board.assign(block, 1, 2)  # the next slot starts past every record of the first
    assert board.workers(block)[0]["busy_threads"] == 2
