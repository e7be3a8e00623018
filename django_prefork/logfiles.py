"""USR1: reopen log files, so logrotate can move them away (as nginx and gunicorn do).

Each process that reopens says so on the `django_prefork` logger, with how
many files: after a rotation, that line at the top of the new file is how
an operator sees that every process took the signal.
"""

import logging

log = logging.getLogger("django_prefork")


def reopen_and_say(who):
    """USR1 in one process: reopen, then log it (into the new files)."""
    count = reopen_log_files()
    log.info("%s reopened %d log file%s (USR1)", who, count, "" if count == 1 else "s")


def reopen_log_files():
    """Reopen every open FileHandler's file; return how many."""
    count = 0
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and handler.stream is not None:
                with handler.lock:
                    old, handler.stream = handler.stream, handler._open()
                    old.close()
                count += 1
    return count
