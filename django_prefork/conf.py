"""Every PREFORK_* setting: its default, its validation, its system check id.

One table owns them all (waitress keeps its adjustments the same way), so
the checks, the command-line overrides and the docs cannot drift apart.
"""

import ipaddress
import os
import tempfile
from dataclasses import dataclass, fields

from django.conf import settings as django_settings


def usable_cpus():
    """CPUs this process may run on (its affinity mask), not the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS has no sched_getaffinity
        return os.cpu_count() or 1


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
    return valid


def _seconds(minimum, allow_zero=False):
    def valid(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return value > minimum or (allow_zero and value == 0)

    valid.wants = "a number of seconds ≥ 0 (0 = never)" if allow_zero else f"a number of seconds > {minimum}"
    return valid


def _optional(valid):
    def optional(value):
        return value is None or valid(value)

    optional.wants = f"None or {valid.wants}"
    return optional


def _bool(value):
    return isinstance(value, bool)


_bool.wants = "True or False"


def _writable_dir(value):
    return isinstance(value, str) and os.path.isdir(value) and os.access(value, os.W_OK | os.X_OK)


_writable_dir.wants = "a path to an existing directory this process can write to"


def _socket_mode(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777


_socket_mode.wants = "a file mode from 0o000 to 0o777, such as 0o660 or 0o666"


def _peer_addresses(value):
    if not isinstance(value, (list, tuple)):
        return False
    try:
        forwarded_trust(value)
    except (TypeError, ValueError):
        return False
    return True


_peer_addresses.wants = 'a list of IP addresses or networks ("10.0.0.0/8"), or ["*"] to trust every peer'


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
    valid: object

    def default_value(self):
        return self.default() if callable(self.default) else self.default


SETTINGS = (
    Setting("PREFORK_WORKERS", "prefork.E001", usable_cpus, _int(1)),
    Setting("PREFORK_TIMEOUT", "prefork.E002", 30, _seconds(0, allow_zero=True)),
    Setting("PREFORK_GRACEFUL_TIMEOUT", "prefork.E003", 30, _seconds(0, allow_zero=True)),
    Setting("PREFORK_MAX_REQUESTS", "prefork.E004", 0, _int(0)),
    Setting("PREFORK_MAX_REQUESTS_JITTER", "prefork.E005", 0, _int(0)),
    Setting("PREFORK_PRELOAD_APP", "prefork.E006", False, _bool),
    Setting("PREFORK_GC_FREEZE", "prefork.E007", True, _bool),
    Setting("PREFORK_BACKLOG", "prefork.E008", 2048, _int(1)),
    Setting("PREFORK_CLIENT_TIMEOUT", "prefork.E009", 10, _seconds(0)),
    Setting("PREFORK_LIMIT_REQUEST_LINE", "prefork.E010", 8190, _int(64)),
    Setting("PREFORK_LIMIT_REQUEST_FIELDS", "prefork.E011", 100, _int(1)),
    Setting("PREFORK_LIMIT_REQUEST_FIELD_SIZE", "prefork.E012", 8190, _int(64)),
    Setting("PREFORK_WORKER_TMP_DIR", "prefork.E013", default_tmp_dir, _writable_dir),
    Setting("PREFORK_RELOAD", "prefork.E014", _debug, _bool),
    Setting("PREFORK_ACCESS_LOG", "prefork.E015", _debug, _bool),
    Setting("PREFORK_CLIENT_MIN_RATE", "prefork.E016", 4096, _int(0)),
    Setting("PREFORK_UNIX_SOCKET_MODE", "prefork.E017", 0o666, _socket_mode),
    Setting("PREFORK_FORWARDED_ALLOW_IPS", "prefork.E018", ("127.0.0.1", "::1"), _peer_addresses),
    Setting("PREFORK_METRICS", "prefork.E019", None, _metrics_address),
    Setting("PREFORK_MAX_WORKERS", "prefork.E020", None, _optional(_int(1))),
    Setting("PREFORK_MAX_WORKER_MEMORY", "prefork.E021", 0, _int(0)),
)
BY_NAME = {s.name: s for s in SETTINGS}


def problems(overrides=None):
    """Yield (setting, value) for every setting whose value is not valid."""
    overrides = overrides or {}
    for setting in SETTINGS:
        if setting.name in overrides:
            value = overrides[setting.name]
        elif hasattr(django_settings, setting.name):
            value = getattr(django_settings, setting.name)
        else:
            continue  # defaults are valid by construction
        if not setting.valid(value):
            yield setting, value


def describe(setting, value):
    """The one sentence a check error and a CommandError both print."""
    return f"{setting.name} is {value!r}; it must be {setting.valid.wants}."


@dataclass(frozen=True)
class Config:
    """The settings of one server run, after command-line overrides."""

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

    @classmethod
    def load(cls, overrides=None):
        """Read settings (overrides win); the caller has run problems() first."""
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        values = {}
        for field in fields(cls):
            setting = BY_NAME["PREFORK_" + field.name.upper()]
            if setting.name in overrides:
                values[field.name] = overrides[setting.name]
            else:
                values[field.name] = getattr(django_settings, setting.name, None)
                if values[field.name] is None:
                    values[field.name] = setting.default_value()
        if values["max_workers"] is None:
            values["max_workers"] = values["workers"]  # no scaling unless asked
        return cls(**values)
