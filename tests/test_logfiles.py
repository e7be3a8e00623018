"""logfiles.py: USR1 reopens log files, so a file logrotate moved away is written no more."""

import logging
import os
import signal

import pytest

from django_prefork.logfiles import reopen_log_files

from .helpers import Server


@pytest.fixture
def file_logger(tmp_path):
    logger = logging.getLogger("django_prefork.tests.logfiles")
    handler = logging.FileHandler(tmp_path / "app.log")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, tmp_path / "app.log"
    logger.removeHandler(handler)
    handler.close()


def test_a_rotated_file_is_replaced_by_a_new_one(file_logger):
    logger, path = file_logger
    logger.info("before")
    path.rename(path.with_suffix(".log.1"))  # logrotate's move
    reopen_log_files()
    logger.info("after")
    assert path.with_suffix(".log.1").read_text() == "before\n"
    assert path.read_text() == "after\n"


def test_a_handler_not_yet_opened_stays_closed(tmp_path):
    handler = logging.FileHandler(tmp_path / "lazy.log", delay=True)
    logging.getLogger().addHandler(handler)
    try:
        reopen_log_files()
        assert handler.stream is None and not (tmp_path / "lazy.log").exists()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def test_reopening_counts_the_files(file_logger):
    logger, path = file_logger
    logger.info("opened")
    assert reopen_log_files() >= 1


def test_usr1_is_logged_by_every_process_that_reopened():
    """The master, the arbiter and each worker say they reopened: one line each, after USR1."""
    with Server(settings={"PREFORK_WORKERS": 2}) as server:
        workers = server.wait_workers(2)
        os.kill(server.pid, signal.SIGUSR1)
        server.wait_for(r"master reopened \d+ log files? \(USR1\)")
        server.wait_for(r"generation 1 reopened \d+ log files? \(USR1\)")
        for pid in workers:
            server.wait_for(rf"worker \d \(pid {pid}\) reopened \d+ log files? \(USR1\)")
        assert server.get()[0] == 200
