"""Hooks: Django signals sent in the process where each event happens.

gunicorn has `when_ready`, `post_fork`, `worker_exit`, `on_reload` in a
Python config file; a Django project already has a place for such code, an
AppConfig's `ready()`, and a mechanism, signals. So the hooks are signals of
this app, and a receiver runs in the process the event concerns:

    server_ready     the master   a generation serves for the first time (the server is up)
    worker_started   a worker     after the fork and after loading the app, before accepting
    worker_exiting   a worker     as it exits, whatever the reason (TERM, recycle, Ctrl-C, timeout)
    reloading        the master   a reload is starting a new generation

`worker_started` is where a per-process client belongs: an APM or
OpenTelemetry exporter runs a thread, and a thread does not survive fork(),
so one started in the master or the arbiter is dead in every worker.

Every receiver is called even if one before it fails (`send_robust`); a
failure is logged with its traceback and does not stop the server: a
broken exporter must not take the site down. The keyword arguments each
signal sends are documented in docs/hooks.md.
"""

import logging

from django.dispatch import Signal

log = logging.getLogger("django_prefork")

server_ready = Signal()  # pid, generation, workers
worker_started = Signal()  # pid, worker (its number), generation
worker_exiting = Signal()  # pid, worker, generation, code
reloading = Signal()  # pid, reason, generation (the number of the one it starts)


def send(signal, sender, **kwargs):
    """Send `signal`; a receiver that raises is logged, never raised into the server's loop."""
    for receiver, result in signal.send_robust(sender, **kwargs):
        if isinstance(result, Exception):
            log.error("%s receiver %s failed", _name(signal), getattr(receiver, "__name__", receiver),
                      exc_info=(type(result), result, result.__traceback__))


def _name(signal):
    return next((name for name, value in globals().items() if value is signal), "hook")
