"""Settings: the table, defaults, validation, the environment, precedence, and the
system checks that report them."""

import os
from dataclasses import fields

import pytest
from django.core.checks import Error, Warning
from django.test import override_settings

from django_prefork import conf
from django_prefork.arbiter import GenerationSpec
from django_prefork.checks import check_settings
from django_prefork.management.commands.runprefork import Command


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
    assert (config.threads, config.keepalive, config.max_connections, config.buffer_body) == (1, 75, 1000, 1 << 20)


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
    assert {f.name for f in fields(conf.Config)} == {s.name[len("PREFORK_"):].lower() for s in conf.SETTINGS}


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
        ("PREFORK_THREADS", 2.5, "prefork.E022"),
        ("PREFORK_THREADS", 0, "prefork.E022"),
        ("PREFORK_KEEPALIVE", -1, "prefork.E023"),
        ("PREFORK_KEEPALIVE", "75", "prefork.E023"),
        ("PREFORK_MAX_CONNECTIONS", 0, "prefork.E024"),
        ("PREFORK_BUFFER_BODY", -1, "prefork.E025"),
        ("PREFORK_BUFFER_BODY", 1.5, "prefork.E025"),
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
    [("PREFORK_WORKERS", 1), ("PREFORK_TIMEOUT", 0), ("PREFORK_TIMEOUT", 12.5), ("PREFORK_CLIENT_TIMEOUT", 0.5),
     ("PREFORK_PRELOAD_APP", True), ("PREFORK_WORKER_TMP_DIR", "/tmp"), ("PREFORK_THREADS", 1),
     ("PREFORK_KEEPALIVE", 0), ("PREFORK_KEEPALIVE", 620), ("PREFORK_BUFFER_BODY", None), ("PREFORK_BUFFER_BODY", 0)],
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


def test_threads_per_worker_are_any_count_from_one():
    with override_settings(PREFORK_THREADS=8):
        assert not check_settings() and conf.Config.load().threads == 8


def test_none_in_settings_is_kept_where_it_means_something():
    with override_settings(PREFORK_BUFFER_BODY=None):
        assert conf.Config.load().buffer_body is None  # bodies streamed, not the default buffer


# -- the table and the options made from it -------------------------------------

def test_every_setting_has_help_and_the_options_come_from_the_table():
    parser = Command().create_parser("manage.py", "runprefork")
    for setting in conf.SETTINGS:
        assert setting.help and setting.valid.wants and callable(setting.valid.parse)
        for flag in setting.flags:
            assert setting.name in parser._option_string_actions[flag].help
    flags = [flag for setting in conf.SETTINGS for flag in setting.flags]
    assert flags == ["-w", "--workers", "--timeout", "--graceful-timeout", "--max-requests",
                     "--max-requests-jitter", "--preload", "--reload", "--threads"]
    assert "unix:/path" in parser.format_help()


# -- the environment ---------------------------------------------------------------

@pytest.mark.parametrize(
    "name, text, value",
    [
        ("PREFORK_WORKERS", "4", 4),
        ("PREFORK_TIMEOUT", "30", 30),
        ("PREFORK_TIMEOUT", " 12.5 ", 12.5),
        ("PREFORK_PRELOAD_APP", "yes", True),
        ("PREFORK_PRELOAD_APP", "TRUE", True),
        ("PREFORK_GC_FREEZE", "0", False),
        ("PREFORK_RELOAD", "no", False),
        ("PREFORK_FORWARDED_ALLOW_IPS", "10.0.0.0/8, ::1", ["10.0.0.0/8", "::1"]),
        ("PREFORK_FORWARDED_ALLOW_IPS", '["*"]', ["*"]),
        ("PREFORK_METRICS", "none", None),
        ("PREFORK_METRICS", "127.0.0.1:9108", "127.0.0.1:9108"),
        ("PREFORK_BUFFER_BODY", "None", None),
        ("PREFORK_UNIX_SOCKET_MODE", "0o660", 0o660),
        ("PREFORK_UNIX_SOCKET_MODE", "660", 0o660),
        ("PREFORK_KEEPALIVE", "620", 620),
    ],
)
def test_environment_text_is_parsed_as_the_setting_reads_it(monkeypatch, name, text, value):
    monkeypatch.setenv(name, text)
    assert conf.resolve()[name] == conf.Found(value, conf.ENVIRONMENT)
    assert check_settings() == []


@pytest.mark.parametrize(
    "name, text",
    [("PREFORK_WORKERS", "four"), ("PREFORK_WORKERS", "1.5"), ("PREFORK_PRELOAD_APP", "maybe"),
     ("PREFORK_FORWARDED_ALLOW_IPS", '["10.0.0.1"'), ("PREFORK_TIMEOUT", "none")],
)
def test_a_bad_environment_value_fails_its_check_naming_the_variable(monkeypatch, name, text):
    monkeypatch.setenv(name, text)
    (error,) = check_settings()
    assert isinstance(error, Error) and error.id == conf.BY_NAME[name].check_id
    assert error.msg.startswith(f"{name} is ") and " in the environment; it must be " in error.msg
    assert error.hint.startswith(f"Set the environment variable {name} to ")


def test_precedence_command_line_environment_settings_default():
    environ = {"PREFORK_WORKERS": "4", "PREFORK_TIMEOUT": "20"}
    with override_settings(PREFORK_WORKERS=5, PREFORK_TIMEOUT=25, PREFORK_BACKLOG=64):
        found = conf.resolve({"PREFORK_WORKERS": 3, "PREFORK_BACKLOG": None}, environ)
    assert found["PREFORK_WORKERS"] == conf.Found(3, conf.COMMAND_LINE)
    assert found["PREFORK_TIMEOUT"] == conf.Found(20, conf.ENVIRONMENT)
    assert found["PREFORK_BACKLOG"] == conf.Found(64, conf.SETTINGS_PY)  # None: the option was not given
    assert found["PREFORK_MAX_REQUESTS"] == conf.Found(0, conf.DEFAULT)


def test_cross_checks_see_the_environment(monkeypatch):
    monkeypatch.setenv("PREFORK_MAX_WORKERS", "2")
    with override_settings(PREFORK_WORKERS=3):
        assert [e.id for e in check_settings()] == ["prefork.E051"]


def test_a_reloaded_generation_resolves_from_the_masters_flags_and_environment():
    """settings.py is read afresh; what the master was started with stays."""
    spec = GenerationSpec(2, 5, [3], 2, overrides={"PREFORK_TIMEOUT": 7.0},
                          environment={"PREFORK_KEEPALIVE": "5"})
    environ = spec.to_environ({})
    received = GenerationSpec.pop_from_environ(environ)
    with override_settings(PREFORK_TIMEOUT=60, PREFORK_BACKLOG=16):  # the edited settings.py
        config = conf.Config.load(received.overrides, received.environment)
    assert (config.timeout, config.keepalive, config.backlog) == (7.0, 5, 16)


# -- unknown names -----------------------------------------------------------------

def test_an_unknown_setting_warns_with_the_nearest_name():
    with override_settings(PREFORK_TIMOUT=3):
        (warning,) = check_settings()
    assert isinstance(warning, Warning) and warning.id == "prefork.W002"
    assert warning.msg == ("PREFORK_TIMOUT in settings is not a django-prefork setting; "
                           "did you mean PREFORK_TIMEOUT?")


def test_an_unknown_setting_far_from_any_still_warns():
    with override_settings(PREFORK_ZZZ=1):
        (warning,) = check_settings()
    assert warning.id == "prefork.W002" and "is not a django-prefork setting" in warning.msg


def test_the_environment_warns_only_of_likely_typos(monkeypatch):
    monkeypatch.setenv("PREFORK_KEEP_ALIVE", "5")
    monkeypatch.setenv("PREFORK_TEST_SETTINGS", "{}")  # some other program's: not near any setting
    (warning,) = check_settings()
    assert warning.msg == ("PREFORK_KEEP_ALIVE in the environment is not a django-prefork setting; "
                           "did you mean PREFORK_KEEPALIVE?")


# -- --print-config ----------------------------------------------------------------

def test_print_config_lists_every_setting_with_its_value_and_source():
    environ = {"PREFORK_UNIX_SOCKET_MODE": "660", "PREFORK_BUFFER_BODY": "none"}
    overrides = {"PREFORK_WORKERS": 3}
    with override_settings(PREFORK_BACKLOG=64):
        text = conf.render(conf.Config.load(overrides, environ), conf.resolve(overrides, environ))
    lines = {line.split(" = ")[0]: line for line in text.splitlines()}
    assert list(lines) == [s.name for s in conf.SETTINGS]
    assert lines["PREFORK_WORKERS"].split() == ["PREFORK_WORKERS", "=", "3", "#", "command", "line"]
    assert lines["PREFORK_UNIX_SOCKET_MODE"].split()[2:] == ["0o660", "#", "environment"]
    assert lines["PREFORK_BUFFER_BODY"].split()[2:] == ["None", "#", "environment"]
    assert lines["PREFORK_BACKLOG"].split()[2:] == ["64", "#", "settings"]
    assert lines["PREFORK_MAX_WORKERS"].split()[2:] == ["3", "#", "default"]  # effective: = PREFORK_WORKERS
