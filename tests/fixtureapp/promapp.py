"""An app using prometheus_client's multiprocess mode, as django-prometheus does.

WSGI_APPLICATION = "tests.fixtureapp.promapp.application"; PROMETHEUS_MULTIPROC_DIR must be set.
"""

import os

from prometheus_client import Counter, Gauge

HITS = Counter("app_hits", "Requests this app counted itself.")
LIVE = Gauge("app_live_workers", "Workers that have served a request and live.", multiprocess_mode="livesum")


def application(environ, start_response):
    HITS.inc()
    LIVE.set(1)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
