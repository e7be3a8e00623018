"""PREFORK_ACCESS_LOG_FORMAT: runserver's line by default, "combined" and "json" for production,
all through the `django.server` logger with runserver's levels."""

import json
import logging
import re
import time

import pytest

from django_prefork import accesslog, conf
from django_prefork.wsgi import log_request

from .helpers import Server

ENVIRON = {
    "REMOTE_ADDR": "203.0.113.9", "HTTP_USER_AGENT": "curl/8.5", "HTTP_REFERER": "https://example.com/",
    "HTTP_X_REQUEST_ID": "4bf92f3577b34da6",
}


def logged(caplog, *args, **kwargs):
    with caplog.at_level(logging.INFO, logger="django.server"):
        log_request(*args, **kwargs)
    (record,) = [r for r in caplog.records if r.name == "django.server"]
    return record


@pytest.mark.parametrize("status, level, why", [
    (200, logging.INFO, "runserver's level for a success"),
    (404, logging.WARNING, "4xx: the client's mistake, runserver warns"),
    (502, logging.ERROR, "5xx: ours, runserver errors"),
])
def test_every_format_keeps_runservers_levels(caplog, status, level, why):
    for fmt in accesslog.FORMATS:
        caplog.clear()
        record = logged(caplog, "GET / HTTP/1.1", status, 10, fmt, dict(ENVIRON), started=time.monotonic())
        assert (record.levelno, record.status_code) == (level, status), (fmt, why)


def test_runserver_is_the_default_and_unchanged(caplog):
    record = logged(caplog, "GET /x HTTP/1.1", 200, 5)
    assert record.getMessage() == '"GET /x HTTP/1.1" 200 5'
    assert conf.BY_NAME["PREFORK_ACCESS_LOG_FORMAT"].default == "runserver"


def test_combined_has_client_duration_user_agent_and_request_id(caplog):
    record = logged(caplog, "GET /x?a=1 HTTP/1.1", 201, 12, "combined", dict(ENVIRON),
                    started=time.monotonic() - 0.25)
    line = record.getMessage()
    match = re.fullmatch(r'203\.0\.113\.9 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /x\?a=1 HTTP/1\.1" '
                         r'201 12 "https://example\.com/" "curl/8\.5" (\d+\.\d{6}) 4bf92f3577b34da6', line)
    assert match, line
    assert 0.25 <= float(match.group(1)) < 5
    assert (record.client_addr, record.request_id) == ("203.0.113.9", "4bf92f3577b34da6")


@pytest.mark.parametrize("header, value, why", [
    ("HTTP_USER_AGENT", 'x" 200 0 "forged', "a quote would end the field and forge the ones after it"),
    ("HTTP_REFERER", "a\x1b[31mred", "an escape sequence would reach the terminal of whoever tails the log"),
    ("HTTP_X_REQUEST_ID", "id\\x22", "a backslash would make an escape of its own"),
])
def test_combined_escapes_what_a_client_sends(caplog, header, value, why):
    line = logged(caplog, "GET / HTTP/1.1", 200, 0, "combined", {**ENVIRON, header: value}).getMessage()
    assert value not in line, why
    assert line.count('"') == 6 and "\x1b" not in line, why


def test_combined_without_the_optional_figures_says_dash(caplog):
    """A 400 to a head too broken for an environ: the client's address from the connection, the rest "-"."""
    line = logged(caplog, "-", 400, 16, "combined", client=("198.51.100.7", 4242)).getMessage()
    assert re.fullmatch(r'198\.51\.100\.7 - - \[.*\] "-" 400 16 "-" "-" - -', line), line


def test_json_is_one_object_a_line(caplog):
    record = logged(caplog, "POST /api HTTP/1.1", 500, 3, "json", {**ENVIRON, "HTTP_USER_AGENT": "a\nb"},
                    started=time.monotonic())
    line = record.getMessage()
    assert "\n" not in line
    doc = json.loads(line)
    assert {k: doc[k] for k in ("client", "method", "path", "protocol", "status", "size", "user_agent",
                                "request_id")} == {
        "client": "203.0.113.9", "method": "POST", "path": "/api", "protocol": "HTTP/1.1", "status": 500,
        "size": 3, "user_agent": "a\nb", "request_id": "4bf92f3577b34da6"}
    assert isinstance(doc["duration"], float) and doc["time"]


@pytest.mark.parametrize("value, ok", [("runserver", True), ("combined", True), ("json", True),
                                       ("apache", False), (None, False)])
def test_the_setting_accepts_the_three_formats(value, ok):
    assert conf.BY_NAME["PREFORK_ACCESS_LOG_FORMAT"].valid(value) is ok


def test_a_real_server_logs_combined_from_the_environment():
    """The environment variable comes from the settings table, as for every setting."""
    with Server(settings={"PREFORK_ACCESS_LOG": True, "PREFORK_WORKERS": 1},
                env={"PREFORK_ACCESS_LOG_FORMAT": "combined"}) as server:
        status, _, _ = server.request("GET", "/pid?q=1", headers={"User-Agent": "probe/1", "X-Request-ID": "r-77"})
        assert status == 200
        server.wait_for(r'127\.0\.0\.1 - - \[[^]]+\] "GET /pid\?q=1 HTTP/1\.1" 200 \d+ "-" "probe/1" '
                        r'\d+\.\d{6} r-77')
        server.raw(b"BAD\r\n\r\n")  # the server's own 400 is logged in the same format
        server.wait_for(r'127\.0\.0\.1 - - \[[^]]+\] "-" 400 \d+ "-" "-" - -')


def test_a_real_server_logs_json():
    with Server(settings={"PREFORK_ACCESS_LOG": True, "PREFORK_WORKERS": 1,
                          "PREFORK_ACCESS_LOG_FORMAT": "json"}) as server:
        server.request("GET", "/pid", headers={"X-Request-ID": "abc"})
        line = server.wait_for(r'\{"time".*"request_id": "abc"\}').group(0)
        assert json.loads(line)["path"] == "/pid"
