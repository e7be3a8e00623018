"""testproject's settings serving benchmarks/bare_app.py: how runprefork and runserver, which
serve WSGI_APPLICATION, are pointed at the bare app (`--settings bare_settings`)."""

from testproject.settings import *  # noqa: F403

WSGI_APPLICATION = "bare_app.application"
