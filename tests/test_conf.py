"""Settings: defaults, validation, and the system checks that report them."""

import os

import pytest
from django.core.checks import Error, Warning
from django.test import override_settings

from django_prefork import conf
from django_prefork.checks import check_settings


def test_defaults():
    with override_settings(DEBUG=False):
        config = conf.Config.load()
    assert config.workers == len(os.sched_getaffinity(0))
    assert (config.timeout, config.graceful_timeout, config.backlog) == (30, 30, 2048)
    assert (config.max_requests, config.max_requests_jitter) == (0, 0)
    assert (config.limit_request_line, config.limit_request_fields, config.limit_request_field_size) == (8190, 100, 8190)
    assert config.client_timeout == 10
    assert config.preload_app is False and config.gc_freeze is True
    assert config.reload is False and config.access_log is False
    assert os.path.isdir(config.worker_tmp_dir)


def test_reload_and_access_log_follow_debug():
    with override_settings(DEBUG=True):
        config = conf.Config.load()
    assert config.reload is True and config.access_log is True


def test_overrides_win_over_settings():
    with override_settings(PREFORK_WORKERS=5):
        assert conf.Config.load({"PREFORK_WORKERS": 2, "PREFORK_TIMEOUT": None}).workers == 2


def test_every_setting_has_its_own_check_id():
    ids = [s.check_id for s in conf.SETTINGS]
    assert ids == [f"prefork.E{n:03d}" for n in range(1, len(ids) + 1)]  # unique, none skipped
    assert {f.name for f in conf.fields(conf.Config)} == {s.name[len("PREFORK_"):].lower() for s in conf.SETTINGS}


@pytest.mark.parametrize(
    "name, value, check_id",
    [
        ("PREFORK_WORKERS", 0, "prefork.E001"),
        ("PREFORK_WORKERS", "4", "prefork.E001"),
        ("PREFORK_WORKERS", True, "prefork.E001"),
        ("PREFORK_TIMEOUT", -1, "prefork.E002"),
        ("PREFORK_GRACEFUL_TIMEOUT", "30", "prefork.E003"),
        ("PREFORK_MAX_REQUESTS", -5, "prefork.E004"),
        ("PREFORK_MAX_REQUESTS_JITTER", 1.5, "prefork.E005"),
        ("PREFORK_PRELOAD_APP", "yes", "prefork.E006"),
        ("PREFORK_GC_FREEZE", 1, "prefork.E007"),
        ("PREFORK_BACKLOG", 0, "prefork.E008"),
        ("PREFORK_CLIENT_TIMEOUT", 0, "prefork.E009"),
        ("PREFORK_LIMIT_REQUEST_LINE", 10, "prefork.E010"),
        ("PREFORK_LIMIT_REQUEST_FIELDS", 0, "prefork.E011"),
        ("PREFORK_LIMIT_REQUEST_FIELD_SIZE", None, "prefork.E012"),
        ("PREFORK_WORKER_TMP_DIR", "/nonexistent/dir", "prefork.E013"),
        ("PREFORK_RELOAD", "no", "prefork.E014"),
        ("PREFORK_ACCESS_LOG", None, "prefork.E015"),
        ("PREFORK_CLIENT_MIN_RATE", -1, "prefork.E016"),
        ("PREFORK_CLIENT_MIN_RATE", 1024.5, "prefork.E016"),
        ("PREFORK_UNIX_SOCKET_MODE", 0o1777, "prefork.E017"),
        ("PREFORK_UNIX_SOCKET_MODE", "0666", "prefork.E017"),
        ("PREFORK_FORWARDED_ALLOW_IPS", "127.0.0.1", "prefork.E018"),
        ("PREFORK_FORWARDED_ALLOW_IPS", ["127.0.0.1", "nginx.local"], "prefork.E018"),
        ("PREFORK_METRICS", "9108", "prefork.E019"),
        ("PREFORK_METRICS", "unix:relative.sock", "prefork.E019"),
        ("PREFORK_MAX_WORKERS", 0, "prefork.E020"),
        ("PREFORK_MAX_WORKER_MEMORY", -1, "prefork.E021"),
    ],
)
def test_bad_values_fail_their_check_with_a_hint(name, value, check_id):
    with override_settings(**{name: value}):
        errors = check_settings()
    assert [e.id for e in errors] == [check_id]
    (error,) = errors
    assert isinstance(error, Error)
    assert error.msg == f"{name} is {value!r}; it must be {conf.BY_NAME[name].valid.wants}."
    assert error.hint.startswith(f"Set {name} to ")


@pytest.mark.parametrize(
    "name, value",
    [("PREFORK_WORKERS", 1), ("PREFORK_TIMEOUT", 0), ("PREFORK_TIMEOUT", 2.5), ("PREFORK_CLIENT_TIMEOUT", 0.5),
     ("PREFORK_PRELOAD_APP", True), ("PREFORK_WORKER_TMP_DIR", "/tmp")],
)
def test_good_values_pass(name, value):
    with override_settings(**{name: value}):
        assert check_settings() == []


def test_jitter_without_max_requests_warns():
    with override_settings(PREFORK_MAX_REQUESTS_JITTER=10):
        (warning,) = check_settings()
    assert isinstance(warning, Warning) and warning.id == "prefork.W001"


def test_checks_run_through_manage_py_check():
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    with override_settings(PREFORK_BACKLOG=-1), pytest.raises(SystemCheckError, match="prefork.E008"):
        call_command("check")
