"""The access log's formats: one line a request, through the `django.server` logger.

runserver writes `"GET / HTTP/1.1" 200 1234` through `django.server`, whose
formatter adds the time and colours by status: a developer's habit, kept as
the default ("runserver"). In production the line must answer other
questions (who asked, how long it took, which request of the balancer's it
was), so PREFORK_ACCESS_LOG_FORMAT picks one of:

    runserver  "GET /path HTTP/1.1" 200 1234
    combined   203.0.113.9 - - [06/Dec/2026:07:13:15 +0000] "GET /path HTTP/1.1" 200 1234
               "https://referer/" "Mozilla/5.0 ..." 0.012345 4bf92f3577b34da6
    json       {"time": "...", "client": "203.0.113.9", "method": "GET", "path": "/path", ...}

`combined` is Apache's and nginx's combined format, which every log tool
parses, followed by the duration in seconds and the X-Request-ID header
("-" when absent). Quoted fields have `"`, `\\` and control characters
escaped (as nginx does), so a user agent cannot forge a second line or a
field. Every format goes through `django.utils.log.log_message`, as
runserver's does: 4xx at WARNING, 5xx at ERROR, and the record carries
`status_code`; the figures of the production formats are also on the
record (`client_addr`, `duration`, `user_agent`, `request_id`) for a
formatter of the project's own.

The duration runs from the moment the request was complete (the app's
start) to the response's end in the app slot; bytes the event loop still
sends afterwards are not in it.
"""

import json
import re
import time

FORMATS = ("runserver", "combined", "json")
_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]')


def _escape(text):
    return _UNSAFE.sub(lambda m: "\\x%02x" % ord(m.group()), text)


def fields(request_line, status, size, environ, client, started):
    """What the production formats say about one request (absent figures: None)."""
    environ = environ or {}
    address = environ.get("REMOTE_ADDR") if environ else (client[0] if isinstance(client, tuple) else None)
    return {
        "client_addr": address or None,
        "request_line": request_line,
        "status": status,
        "size": size,
        "duration": round(time.monotonic() - started, 6) if started else None,
        "referer": environ.get("HTTP_REFERER"),
        "user_agent": environ.get("HTTP_USER_AGENT"),
        "request_id": environ.get("HTTP_X_REQUEST_ID"),
    }


def combined(f):
    duration = "-" if f["duration"] is None else "%.6f" % f["duration"]
    quoted = ['"%s"' % _escape(f[key]) if f[key] is not None else '"-"' for key in ("referer", "user_agent")]
    return '%s - - [%s] "%s" %d %d %s %s %s %s' % (
        f["client_addr"] or "-", time.strftime("%d/%b/%Y:%H:%M:%S %z"), _escape(f["request_line"]), f["status"],
        f["size"], *quoted, duration, _escape(f["request_id"]) if f["request_id"] else "-",
    )


def as_json(f):
    method, _, rest = f["request_line"].partition(" ")
    path, _, protocol = rest.rpartition(" ") if rest.count(" ") else (rest, "", "")
    return json.dumps({
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "client": f["client_addr"], "method": method,
        "path": path, "protocol": protocol or None, "status": f["status"], "size": f["size"],
        "duration": f["duration"], "referer": f["referer"], "user_agent": f["user_agent"],
        "request_id": f["request_id"],
    }, ensure_ascii=True)  # \\u-escaped: one line, whatever the client sent
