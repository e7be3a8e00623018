"""Every PREFORK_* setting: its default, validation, check id, flag and help.

One table, SETTINGS, owns them all (waitress keeps its adjustments the same
way), so the checks, runprefork's options and --help cannot drift apart.

A setting's value comes from the first of these that has it:

    the command line  >  the environment  >  settings.py  >  the default

`resolve()` walks that order once and remembers where each value came from,
so the checks, `Config.load()` and `--print-config` agree on it. An
environment variable is text: the setting's validator knows its type and
parses it (`valid.parse`); text that does not parse is kept as it is, so the
validator rejects it like any bad value and the check names the variable.
"""

import difflib
import ipaddress
import json
import os
import tempfile
from dataclasses import dataclass

from django.conf import settings as django_settings

from .cpus import default_workers


def usable_cpus():
    """CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota (cpus.py)."""
    return default_workers().count


def default_tmp_dir():
    """/dev/shm keeps heartbeat fchmods off a real disk (gunicorn #1388)."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()


def _debug():
    return bool(django_settings.DEBUG)


def _int(minimum):
    def valid(value):
        return isinstance(value, int) and not isinstance(value, bool) and value >= minimum

    valid.wants = f"an integer ≥ {minimum}"
    valid.parse, valid.option = int, int
    return valid


def _seconds(minimum, zero=None):
    """Seconds > minimum; with `zero`, also 0, which means what `zero` says."""
    def valid(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return value > minimum or (zero is not None and value == 0)

    valid.wants = f"a number of seconds ≥ 0 (0 = {zero})" if zero else f"a number of seconds > {minimum}"
    valid.parse, valid.option = _number, float
    return valid


def _number(text):
    try:
        return int(text)
    except ValueError:
        return float(text)


def _optional(valid):
    def optional(value):
        return value is None or valid(value)

    optional.wants = f"None or {valid.wants}"
    optional.parse, optional.option = valid.parse, valid.option
    return optional


BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "1": True,
                 "false": False, "no": False, "off": False, "0": False}


def _one_of(*choices):
    def valid(value):
        return value in choices

    valid.wants = "one of " + ", ".join(repr(c) for c in choices)
    valid.parse, valid.option = str, str
    return valid


def _bool(value):
    return isinstance(value, bool)


_bool.wants = "True or False"
_bool.parse = lambda text: BOOLEAN_WORDS[text.lower()]
_bool.option = bool


def _writable_dir(value):
    return isinstance(value, str) and os.path.isdir(value) and os.access(value, os.W_OK | os.X_OK)


_writable_dir.wants = "a path to an existing directory this process can write to"
_writable_dir.parse = str


def _socket_mode(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777


_socket_mode.wants = "a file mode from 0o000 to 0o777, such as 0o660 or 0o666"
_socket_mode.parse = lambda text: int(text, 8)  # "660" and "0o660" alike, as chmod reads them
_socket_mode.show = oct


def _peer_addresses(value):
    if not isinstance(value, (list, tuple)):
        return False
    try:
        forwarded_trust(value)
    except (TypeError, ValueError):
        return False
    return True


_peer_addresses.wants = 'a list of IP addresses or networks ("10.0.0.0/8"), or ["*"] to trust every peer'


def _list(text):
    """A JSON list, or comma-separated words: `10.0.0.0/8, 127.0.0.1`."""
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [word.strip() for word in text.split(",") if word.strip()]


_peer_addresses.parse = _list


def _metrics_address(value):
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    if value.startswith("unix:"):
        return os.path.isabs(value[len("unix:"):])
    host, sep, port = value.rpartition(":")
    return bool(sep and host) and port.isdigit() and 0 <= int(port) <= 65535


_metrics_address.wants = 'None, "host:port" (such as "127.0.0.1:9108") or "unix:/absolute/path"'
_metrics_address.parse = str


def _request_counts(value):
    return isinstance(value, (list, tuple)) and all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value)


_request_counts.wants = "a list of request counts > 0, such as [50, 100, 1000] ([] = never refork)"
_request_counts.parse = lambda text: [int(word) for word in _list(text)]


def forwarded_trust(allowed):
    """A predicate on a TCP peer's address: may it say X-Forwarded-Proto?"""
    if "*" in allowed:
        return lambda host: True
    networks = [ipaddress.ip_network(a, strict=False) for a in allowed]

    def trusts(host):
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        address = getattr(address, "ipv4_mapped", None) or address  # ::ffff:127.0.0.1 on a dual-stack socket
        return any(address in network for network in networks)

    return trusts


@dataclass(frozen=True)
class Setting:
    name: str
    check_id: str
    default: object  # a value, or a callable returning it
    valid: object  # a predicate; .wants says what it accepts, .parse reads it from text
    help: str  # what the setting does: --help and the docs say it
    flags: tuple = ()  # runprefork's option strings overriding it; () for none
    dest: str = None  # the option's dest, where runserver already named it

    def default_value(self):
        return self.default() if callable(self.default) else self.default

    @property
    def field(self):
        """Its name in Config: PREFORK_MAX_REQUESTS is max_requests."""
        return self.name[len(PREFIX):].lower()


PREFIX = "PREFORK_"
SETTINGS = (
    Setting("PREFORK_WORKERS", "prefork.E001", usable_cpus, _int(1),
            "Worker processes (default: the CPUs it may use, capped by the cgroup's CPU quota).",
            ("-w", "--workers")),
    Setting("PREFORK_TIMEOUT", "prefork.E002", 30, _seconds(0, zero="never"),
            "Seconds a request may run (a worker stay silent) before it is killed; 0 = never.", ("--timeout",)),
    Setting("PREFORK_GRACEFUL_TIMEOUT", "prefork.E003", 30, _seconds(0, zero="never"),
            "Seconds workers get to finish on TERM or a reload before SIGKILL.", ("--graceful-timeout",)),
    Setting("PREFORK_MAX_REQUESTS", "prefork.E004", 0, _int(0),
            "Recycle a worker after N requests; 0 = never.", ("--max-requests",)),
    Setting("PREFORK_MAX_REQUESTS_JITTER", "prefork.E005", 0, _int(0),
            "Add randint(0, N) to --max-requests per worker, so they do not recycle together.",
            ("--max-requests-jitter",)),
    Setting("PREFORK_PRELOAD_APP", "prefork.E006", False, _bool,
            "Load the app in the arbiter before forking workers.", ("--preload",)),
    Setting("PREFORK_GC_FREEZE", "prefork.E007", True, _bool, "gc.freeze() in the arbiter before each fork."),
    Setting("PREFORK_BACKLOG", "prefork.E008", 2048, _int(1), "Listen queue length."),
    Setting("PREFORK_CLIENT_TIMEOUT", "prefork.E009", 10, _seconds(0),
            "Seconds a worker waits on a silent client; the whole request head must arrive within it."),
    Setting("PREFORK_LIMIT_REQUEST_LINE", "prefork.E010", 8190, _int(64), "Longest request line, bytes (→ 414)."),
    Setting("PREFORK_LIMIT_REQUEST_FIELDS", "prefork.E011", 100, _int(1), "Most header fields (→ 431)."),
    Setting("PREFORK_LIMIT_REQUEST_FIELD_SIZE", "prefork.E012", 8190, _int(64),
            "Longest header line, bytes (→ 431)."),
    Setting("PREFORK_WORKER_TMP_DIR", "prefork.E013", default_tmp_dir, _writable_dir,
            "Where heartbeat files are made."),
    Setting("PREFORK_RELOAD", "prefork.E014", _debug, _bool,
            "Reload on code changes (default: on when DEBUG).", ("--reload",), dest="use_reloader"),
    Setting("PREFORK_ACCESS_LOG", "prefork.E015", _debug, _bool, "Log every request (default: when DEBUG)."),
    Setting("PREFORK_CLIENT_MIN_RATE", "prefork.E016", 4096, _int(0),
            "Bytes/s a request body must average once its first client timeout is spent; 0 = no minimum."),
    Setting("PREFORK_UNIX_SOCKET_MODE", "prefork.E017", 0o666, _socket_mode, "Mode of a unix socket it binds."),
    Setting("PREFORK_FORWARDED_ALLOW_IPS", "prefork.E018", ("127.0.0.1", "::1"), _peer_addresses,
            "Peers whose X-Forwarded-Proto (-Ssl, -Protocol) is trusted."),
    Setting("PREFORK_METRICS", "prefork.E019", None, _metrics_address,
            "Where the master serves /metrics, /healthz and /status."),
    Setting("PREFORK_MAX_WORKERS", "prefork.E020", None, _optional(_int(1)),
            "Ceiling the arbiter scales workers up to (default: PREFORK_WORKERS, no scaling)."),
    Setting("PREFORK_MAX_WORKER_MEMORY", "prefork.E021", 0, _int(0),
            "MiB of a worker's own memory (USS) past which it is recycled; 0 = never."),
    Setting("PREFORK_THREADS", "prefork.E022", 1, _int(1),
            "Threads per worker running complete requests; 1 = the sync worker.", ("--threads",)),
    Setting("PREFORK_KEEPALIVE", "prefork.E023", 75, _seconds(0, zero="close after each response"),
            "Seconds an idle persistent connection is kept; longer than the balancer's idle timeout."),
    Setting("PREFORK_MAX_CONNECTIONS", "prefork.E024", 1000, _int(1),
            "Connections one worker holds at once; full, it stops accepting."),
    Setting("PREFORK_BUFFER_BODY", "prefork.E025", 1 << 20, _optional(_int(0)),
            "Request body bytes kept in memory (larger: a temporary file); None streams bodies."),
    Setting("PREFORK_LIMIT_REQUEST_BODY", "prefork.E026", 1 << 30, _int(0),
            "Largest request body, bytes (→ 413; 0 = no limit): what one upload may spool to disk."),
    Setting("PREFORK_ACCESS_LOG_FORMAT", "prefork.E027", "runserver", _one_of("runserver", "combined", "json"),
            "The access log's line: runserver's, combined (with client, duration, user agent, X-Request-ID), json."),
    Setting("PREFORK_METRICS_SOCKET_MODE", "prefork.E028", 0o600, _socket_mode,
            "Mode of a PREFORK_METRICS unix socket (default: the server's user only)."),
    Setting("PREFORK_REFORK_AFTER", "prefork.E029", (), _request_counts,
            "Request counts after which a warmed worker becomes the mold new workers are forked from; [] = off."),
)
BY_NAME = {s.name: s for s in SETTINGS}

DEFAULT, SETTINGS_PY, ENVIRONMENT, COMMAND_LINE = "default", "settings", "environment", "command line"


@dataclass(frozen=True)
class Found:
    value: object
    source: str  # DEFAULT, SETTINGS_PY, ENVIRONMENT or COMMAND_LINE


def resolve(overrides=None, environ=None):
    """{name: Found} for every setting: command line > environment > settings.py > default.

    `overrides` are the command line's values by setting name (None: not
    given); `environ` defaults to os.environ.
    """
    overrides = {name: value for name, value in (overrides or {}).items() if value is not None}
    environ = os.environ if environ is None else environ
    found = {}
    for setting in SETTINGS:
        if setting.name in overrides:
            found[setting.name] = Found(overrides[setting.name], COMMAND_LINE)
        elif setting.name in environ:
            found[setting.name] = Found(from_text(setting, environ[setting.name]), ENVIRONMENT)
        elif hasattr(django_settings, setting.name):
            found[setting.name] = Found(getattr(django_settings, setting.name), SETTINGS_PY)
        else:
            found[setting.name] = Found(setting.default_value(), DEFAULT)
    return found


def from_text(setting, text):
    """An environment variable's value: "none" is None, the rest as the setting's type reads it."""
    text = text.strip()
    if text.lower() == "none":
        return None
    try:
        return setting.valid.parse(text)
    except (ValueError, KeyError):  # JSONDecodeError is a ValueError
        return text  # not of its type: the validator rejects it, and the check names the variable


def environment(environ=None):
    """The PREFORK_* variables of `environ` (default os.environ), as text."""
    environ = os.environ if environ is None else environ
    return {name: text for name, text in environ.items() if name.startswith(PREFIX)}


def problems(overrides=None, environ=None):
    """Yield (setting, value, source) for every setting whose value is not valid."""
    for name, found in resolve(overrides, environ).items():
        setting = BY_NAME[name]
        if found.source != DEFAULT and not setting.valid(found.value):  # defaults are valid by construction
            yield setting, found.value, found.source


def describe(setting, value, source=SETTINGS_PY):
    """The one sentence a check error and a CommandError both print."""
    where = " in the environment" if source == ENVIRONMENT else ""
    return f"{setting.name} is {value!r}{where}; it must be {setting.valid.wants}."


def unknown_names(environ=None):
    """Yield (name, where, nearest) for each PREFORK_* name that is no setting.

    Every unknown name in settings.py is reported: the project owns that
    namespace. One in the environment only when it is near a setting's name,
    as a typo is: the environment is shared with other programs.
    """
    environ = os.environ if environ is None else environ
    for where, names in (("settings", dir(django_settings)), ("the environment", environ)):
        for name in sorted(n for n in names if n.startswith(PREFIX) and n not in BY_NAME):
            nearest = nearest_setting(name)
            if nearest or where == "settings":
                yield name, where, nearest


def nearest_setting(name):
    """The setting `name` was most likely meant to be, or None (difflib, on the part after PREFORK_)."""
    words = [s.name[len(PREFIX):] for s in SETTINGS]
    match = difflib.get_close_matches(name[len(PREFIX):], words, n=1)
    return PREFIX + match[0] if match else None


def render(config, found):
    """--print-config's text: settings.py lines, each value's source in a comment."""
    lines = []
    for setting in SETTINGS:
        show = getattr(setting.valid, "show", repr)
        lines.append((f"{setting.name} = {show(getattr(config, setting.field))}", found[setting.name].source))
    width = max(len(line) for line, _ in lines)
    return "\n".join(f"{line:<{width}}  # {source}" for line, source in lines)


@dataclass(frozen=True)
class Config:
    """The settings of one server run: every setting's value, wherever it came from."""

    workers: int
    timeout: float
    graceful_timeout: float
    max_requests: int
    max_requests_jitter: int
    preload_app: bool
    gc_freeze: bool
    backlog: int
    client_timeout: float
    limit_request_line: int
    limit_request_fields: int
    limit_request_field_size: int
    worker_tmp_dir: str
    reload: bool
    access_log: bool
    client_min_rate: int
    unix_socket_mode: int
    forwarded_allow_ips: tuple
    metrics: object  # None or an address
    max_workers: int  # None in the settings: the same as workers
    max_worker_memory: int  # MiB; 0 = never
    threads: int  # 1 until the worker runs threads
    keepalive: float  # seconds; 0 = close after each response
    max_connections: int
    buffer_body: object  # bytes kept in memory; None: bodies are streamed
    limit_request_body: int  # bytes; 0 = no limit
    access_log_format: str  # runserver, combined or json (accesslog.py)
    metrics_socket_mode: int  # a PREFORK_METRICS unix socket's; private unless opened
    refork_after: tuple = ()  # request counts (refork.py); () = never

    @classmethod
    def load(cls, overrides=None, environ=None):
        """The values resolve() finds; the caller has run problems() first."""
        found = resolve(overrides, environ)
        values = {setting.field: found[setting.name].value for setting in SETTINGS}
        if values["max_workers"] is None:
            values["max_workers"] = values["workers"]  # no scaling unless asked
        values["refork_after"] = tuple(values["refork_after"])
        return cls(**values)
