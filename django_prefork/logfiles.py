"""USR1: reopen log files, so logrotate can move them away (as nginx and gunicorn do)."""

import logging


def reopen_log_files():
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and handler.stream is not None:
                with handler.lock:
                    old, handler.stream = handler.stream, handler._open()
                    old.close()
