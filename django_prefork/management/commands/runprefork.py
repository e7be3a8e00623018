"""`manage.py runprefork`: runserver's front door, a prefork server behind it.

runserver's `inner_run()` does everything a Django user expects before
serving (system checks, the unapplied-migrations notice, closing the
connections they opened, runserver's messages for bind errors) and then
calls `django.core.servers.basehttp.run()`, which binds by constructing
`self.server_cls`, announces the port through `on_bind()`, and calls
`set_app()` and `serve_forever()`. `PreforkServer` fills that role, so the
whole front door is runserver's own code and only the serving is ours.
"""

import functools
import logging
import os
import sys
from datetime import datetime

from django.apps import apps
from django.conf import settings
from django.contrib.staticfiles.management.commands.runserver import Command as StaticfilesRunserver
from django.core.management.base import CommandError
from django.core.management.commands.runserver import Command as RunserverCommand

from django_prefork import conf, pidfile, sockets
from django_prefork.arbiter import GenerationSpec, run_generation
from django_prefork.master import Master
from django_prefork.status import project_id
from django_prefork.supervisor import HaltServer

# Command-line options and the settings they override.
OVERRIDES = {
    "workers": "PREFORK_WORKERS",
    "timeout": "PREFORK_TIMEOUT",
    "graceful_timeout": "PREFORK_GRACEFUL_TIMEOUT",
    "max_requests": "PREFORK_MAX_REQUESTS",
    "max_requests_jitter": "PREFORK_MAX_REQUESTS_JITTER",
    "preload": "PREFORK_PRELOAD_APP",
    "use_reloader": "PREFORK_RELOAD",
}


class PreforkServer:
    """The server_cls protocol of basehttp.run(): bind now, serve on serve_forever()."""

    def __init__(self, command, server_address, request_handler_cls, ipv6=False):
        self.command = command  # request_handler_cls is runserver's; workers use their own
        self.listeners = command.bind(server_address, ipv6)  # OSError: runserver's message
        self.server_port = self.listeners[0].port
        self.load_app = None

    def set_app(self, load_app):
        self.load_app = load_app

    def serve_forever(self):
        self.command.run_master(self.listeners, self.load_app)


def _remove_option(parser, option):
    # argparse has no public way to take back an option a parent class added.
    action = parser._option_string_actions.pop(option)
    parser._remove_action(action)
    for group in parser._action_groups:
        if action in group._group_actions:
            group._group_actions.remove(action)


class Command(StaticfilesRunserver):
    help = (
        "Starts a prefork server: this process, the master, binds the socket, and an arbiter "
        "forks sync worker processes that serve the project's WSGI application. HUP reloads."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        _remove_option(parser, "--nothreading")  # one thread a worker, always: it would mean nothing
        parser.add_argument("-w", "--workers", type=int, help="Worker processes (PREFORK_WORKERS).")
        parser.add_argument(
            "--timeout", type=float,
            help="Seconds a request may run (a worker stay silent) before it is killed; 0 = never (PREFORK_TIMEOUT).",
        )
        parser.add_argument(
            "--graceful-timeout", type=float,
            help="Seconds workers get to finish on TERM (PREFORK_GRACEFUL_TIMEOUT).",
        )
        parser.add_argument("--max-requests", type=int, help="Recycle a worker after N requests.")
        parser.add_argument("--max-requests-jitter", type=int, help="Add randint(0, N) to --max-requests.")
        parser.add_argument(
            "--preload", action="store_true", default=None, help="Load the app before forking workers."
        )
        parser.add_argument(
            "--reload", action="store_true", dest="use_reloader",
            help="Reload on code changes (default: on when DEBUG).",
        )
        parser.add_argument("--pidfile", help="Write the master's pid (the one to signal) to this file.")
        # runserver's --noreload stores False; absent, let PREFORK_RELOAD decide.
        parser.set_defaults(use_reloader=None)

    def execute(self, *args, **options):
        if not hasattr(os, "fork"):
            raise CommandError(
                "runprefork forks worker processes, and this platform has no os.fork(). "
                "Use runserver here, or run on Linux, macOS or another POSIX system."
            )
        return super().execute(*args, **options)

    def handle(self, *args, **options):
        self.overrides = {
            setting: options[option] for option, setting in OVERRIDES.items() if options.get(option) is not None
        }
        spec = GenerationSpec.pop_from_environ()
        if spec:
            return self.run_reloaded_generation(spec, options)
        for setting, value in conf.problems(self.overrides):
            if setting.name in self.overrides:
                option = next(o for o, s in OVERRIDES.items() if s == setting.name)
                raise CommandError(f"--{option.replace('_', '-')} {value}: it must be {setting.valid.wants}.")
        self.pidfile = options.get("pidfile")
        if self.pidfile and (pid := pidfile.live_pid(self.pidfile)):
            raise CommandError(f"{self.pidfile} names pid {pid}, which is running. Is the server already up?")
        self.unix_path = None
        addrport = options.get("addrport") or ""
        if addrport.startswith("unix:"):
            self.unix_path = addrport[len("unix:"):]
            if not self.unix_path:
                raise CommandError('"unix:" needs a path, as in unix:/run/app.sock')
            options["addrport"] = None
        super().handle(*args, **options)

    def run(self, **options):
        # No reloader thread: a thread in a process that forks can deadlock it.
        options["use_threading"] = False  # basehttp.run() then calls server_cls as is
        self.server_cls = functools.partial(PreforkServer, self)
        self.inner_run(None, **options)

    def get_handler(self, *args, **options):
        """What the workers call to load the app (the arbiter, only to preload)."""
        base = StaticfilesRunserver if apps.is_installed("django.contrib.staticfiles") else RunserverCommand
        return functools.partial(base.get_handler, self, *args, **options)

    # -- called back by runserver's inner_run through PreforkServer -------------

    def bind(self, server_address, ipv6):
        self.config = load_config(self.overrides)
        self.listeners = sockets.systemd_listeners()
        if not self.listeners:
            if self.unix_path:
                self.listeners = [sockets.bind_unix(self.unix_path, self.config.backlog, self.config.unix_socket_mode)]
            else:
                host, port = server_address
                self.listeners = [
                    sockets.bind_tcp(host, port, ipv6, self.config.backlog, self.config.client_timeout)
                ]
        return self.listeners

    def on_bind(self, server_port):
        if self.unix_path or any(listener.inherited for listener in self.listeners):
            where = ", ".join(listener.url() for listener in self.listeners)
        else:
            host = f"[{self.addr}]" if self._raw_ipv6 else ("0.0.0.0" if self.addr == "0" else self.addr)
            where = f"{self.protocol}://{host}:{server_port}/"
        n = self.config.workers
        workers = f"{n} sync worker{'s' if n != 1 else ''}"
        quit_command = "CONTROL-C"
        self.stdout.write(
            f"{datetime.now().strftime('%B %d, %Y - %X')}\n"
            f"Django version {self.get_version()}, using settings {settings.SETTINGS_MODULE!r}\n"
            f"Starting prefork server at {where}\n"
            f"Master pid {os.getpid()}: {workers}, 1 thread each, blocking I/O; "
            f"at most {n} request{'s' if n != 1 else ''} at once, the rest queue (backlog {self.config.backlog})\n"
            f"Generation 1; reload with kill -HUP {os.getpid()}"
            f"{' or by saving a file (autoreload on)' if self.config.reload else ''}\n"
            f"Quit the server with {quit_command}."
        )

    def run_master(self, listeners, load_app):
        configure_logging()
        if self.pidfile:
            pidfile.write(self.pidfile)
        watcher = None
        if self.config.reload:
            from django_prefork.reloader import CodeWatcher

            watcher = CodeWatcher(getattr(settings, "BASE_DIR", None) or os.getcwd())
        master = Master(listeners, self.config, load_app, project_name(), watcher)
        master.project = project_id()  # how preforkstatus finds this server
        try:
            status = master.run()
        except HaltServer as exc:
            raise CommandError(str(exc)) from None
        finally:
            if self.pidfile:
                pidfile.remove(self.pidfile)
        if status:
            sys.exit(status)

    def run_reloaded_generation(self, spec, options):
        """Be generation N of a reload: exec'd by the master, with fresh code."""
        configure_logging()
        if not options["skip_checks"]:
            self.check()  # errors: SystemCheckError, exit 1; the master keeps the old code
        config = load_config(dict(self.overrides, PREFORK_WORKERS=spec.worker_count))
        load_app = self.get_handler(**options)
        try:
            status = run_generation(spec, spec.inherit_listeners(), config, load_app, project_name())
        except HaltServer as exc:
            raise CommandError(str(exc)) from None
        if status:
            sys.exit(status)


def load_config(overrides):
    """The run's Config; bad values (reachable past --skip-checks) are a CommandError."""
    problems = [conf.describe(s, v) for s, v in conf.problems(overrides)]
    if problems:
        raise CommandError(" ".join(problems))
    return conf.Config.load(overrides)


def project_name():
    return (settings.SETTINGS_MODULE or "django").split(".")[0]


def configure_logging():
    """Give the `django_prefork` logger a console handler unless LOGGING gave it one.

    Worker deaths and timeouts must be seen even in a project that configured
    no logging at all (Python's last-resort handler would drop INFO lines).
    """
    logger = logging.getLogger("django_prefork")
    configured = "django_prefork" in (getattr(settings, "LOGGING", {}) or {}).get("loggers", {})
    if configured or logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%d/%b/%Y %H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
