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
import time
import traceback
from datetime import datetime

from django.apps import apps
from django.conf import settings
from django.contrib.staticfiles.management.commands.runserver import Command as StaticfilesRunserver
from django.core.management.base import CommandError
from django.core.management.commands.runserver import Command as RunserverCommand
from django.utils import autoreload

from django_prefork import conf, cpus, pidfile, sockets
from django_prefork.arbiter import GenerationSpec, run_generation
from django_prefork.master import Master
from django_prefork.status import project_id
from django_prefork.supervisor import HaltServer


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


def add_setting_options(parser):
    """The options that override a setting, made from conf.SETTINGS: its flags, type and help."""
    for setting in conf.SETTINGS:
        if not setting.flags:
            continue
        help_text = f"{setting.help.rstrip('.')} ({setting.name})."
        if setting.valid.option is bool:
            parser.add_argument(*setting.flags, action="store_true", default=None, dest=_dest(setting),
                                help=help_text)
        else:
            metavar = "S" if setting.valid.option is float else "N"
            parser.add_argument(*setting.flags, type=setting.valid.option, dest=_dest(setting), metavar=metavar,
                                help=help_text)


def _dest(setting):
    return setting.dest or setting.flags[-1].lstrip("-").replace("-", "_")


def command_line_overrides(options):
    """{setting name: value} for the options given; conf.resolve() drops the ones left None."""
    return {setting.name: options.get(_dest(setting)) for setting in conf.SETTINGS if setting.flags}


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
        addrport = next(action for action in parser._actions if action.dest == "addrport")
        addrport.help = "Optional port number, ipaddr:port, or unix:/path/to/app.sock (a unix socket)."
        add_setting_options(parser)
        parser.add_argument("--pidfile", help="Write the master's pid (the one to signal) to this file.")
        parser.add_argument(
            "--print-config", action="store_true",
            help="Print every PREFORK_* setting's value and where it came from (default, settings, "
            "environment, command line), then exit.",
        )
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
        spec = GenerationSpec.pop_from_environ()
        if spec:
            return self.run_reloaded_generation(spec, options)
        self.overrides = command_line_overrides(options)
        for setting, value, source in conf.problems(self.overrides):
            if source == conf.COMMAND_LINE:
                raise CommandError(f"{setting.flags[-1]} {value}: it must be {setting.valid.wants}.")
        if options["print_config"]:
            config = load_config(self.overrides)  # a bad setting: its CommandError, not a listing
            self.stdout.write(conf.render(config, conf.resolve(self.overrides)))
            return
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
        self.serving = False
        if conf.resolve(self.overrides)["PREFORK_RELOAD"].value is not True:
            self.inner_run(None, **options)
            return
        try:
            # check_errors: Django's autoreloader then watches the file a SyntaxError names.
            autoreload.check_errors(self.inner_run)(None, **options)
        except Exception as exc:
            if self.serving:
                raise  # the master's own failure, after it started: not the project's code
            self.wait_for_a_fix(exc)

    def wait_for_a_fix(self, exc):
        """Broken code at start with autoreload on: as runserver does, say why and wait for a change.

        Nothing is bound yet; once a watched file changes the command execs
        itself, in the same pid, to import the code afresh.
        """
        from django_prefork.reloader import CodeWatcher

        # Its first look before we say so: a fix saved right after the message is a change.
        watcher = CodeWatcher(getattr(settings, "BASE_DIR", None) or os.getcwd())
        if isinstance(exc, CommandError):
            self.stderr.write(str(exc))  # system checks: their own report, as Django prints it
        else:
            traceback.print_exc()
        self.stderr.write("The project could not start; fix the error and save a file to retry "
                          "(autoreload on). Quit with CONTROL-C.")
        try:
            while not watcher.changed():
                time.sleep(1)
        except KeyboardInterrupt:
            sys.exit(0)
        self.stderr.write("A file changed; starting again.")
        sys.stdout.flush()
        sys.stderr.flush()
        args = autoreload.get_child_arguments()
        os.execv(args[0], args)

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
        if self.pidfile:
            pidfile.write(self.pidfile)  # before the banner: whoever waits for it may read the pidfile
        if self.unix_path or any(listener.inherited for listener in self.listeners):
            where = ", ".join(listener.url() for listener in self.listeners)
        else:
            host = f"[{self.addr}]" if self._raw_ipv6 else ("0.0.0.0" if self.addr == "0" else self.addr)
            where = f"{self.protocol}://{host}:{server_port}/"
        threads = self.config.threads
        shape = ", 1 thread each" if threads == 1 else f" × {threads} threads"
        quit_command = "CONTROL-C"
        self.stdout.write(
            f"{datetime.now().strftime('%B %d, %Y - %X')}\n"
            f"Django version {self.get_version()}, using settings {settings.SETTINGS_MODULE!r}\n"
            f"Starting prefork server at {where}\n"
            f"Master pid {os.getpid()}: {workers_said(self.config.workers, self.overrides)}{shape}, "
            f"slow clients held by an event loop; at most {requests_at_once(self.config)} at once, the rest queue "
            f"(backlog {real_backlog(self.listeners, self.config.backlog)})\n"
            f"Generation 1; reload with kill -HUP {os.getpid()}"
            f"{' or by saving a file (autoreload on)' if self.config.reload else ''}\n"
            f"Quit the server with {quit_command}."
        )

    def run_master(self, listeners, load_app):
        self.serving = True
        configure_logging()
        watcher = None
        if self.config.reload:
            from django_prefork.reloader import CodeWatcher

            watcher = CodeWatcher(getattr(settings, "BASE_DIR", None) or os.getcwd())
        master = Master(listeners, self.config, load_app, project_name(), watcher)
        master.project = project_id()  # how preforkstatus finds this server
        # What every generation resolves its settings from, besides its own settings.py.
        master.overrides = {name: value for name, value in self.overrides.items() if value is not None}
        master.environment = conf.environment()
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
        """Be generation N of a reload: exec'd by the master, with fresh code.

        settings.py is read afresh (a reload is for that); the command line
        and the environment are the master's, from the spec, so a server
        started with --workers 3 keeps them, however this process was started.
        """
        configure_logging()
        if not options["skip_checks"]:
            self.check()  # errors: SystemCheckError, exit 1; the master keeps the old code
        config = load_config(dict(spec.overrides, PREFORK_WORKERS=spec.worker_count), spec.environment)
        load_app = self.get_handler(**options)
        try:
            status = run_generation(spec, spec.inherit_listeners(), config, load_app, project_name())
        except HaltServer as exc:
            raise CommandError(str(exc)) from None
        if status:
            sys.exit(status)


def workers_said(count, overrides):
    """"4 sync workers", and where a default count came from: the CPUs, or the CPU quota."""
    said = f"{count} sync worker{'s' if count != 1 else ''}"
    if conf.resolve(overrides)["PREFORK_WORKERS"].source == conf.DEFAULT:
        said += f" ({cpus.default_workers().source})"
    return said


def requests_at_once(config):
    """"4 requests", or with scaling the range the arbiter moves in: "2 to 4 requests"
    (app threads count: 2 workers × 8 threads are 16 requests)."""
    low, high = config.workers * config.threads, max(config.max_workers, config.workers) * config.threads
    count = f"{low} to {high}" if high > low else f"{low}"
    return f"{count} request{'s' if high != 1 else ''}"


def real_backlog(listeners, configured):
    """The listen queues' length as the kernel has it, else PREFORK_BACKLOG.

    A socket systemd (or anyone) handed over was made with its own backlog
    (systemd's Backlog=, SOMAXCONN by default), and the kernel caps ours at
    net.core.somaxconn: the setting alone may not be the truth.
    """
    found = set()
    for listener in listeners:
        queue = sockets.listen_queue(listener.sock)
        found.add(queue[1] if queue is not None else configured)
    return " and ".join(str(b) for b in sorted(found)) or str(configured)


def load_config(overrides, environ=None):
    """The run's Config; bad values (reachable past --skip-checks) are a CommandError."""
    problems = [conf.describe(*problem) for problem in conf.problems(overrides, environ)]
    if problems:
        raise CommandError(" ".join(problems))
    return conf.Config.load(overrides, environ)


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
