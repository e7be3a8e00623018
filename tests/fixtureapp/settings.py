"""Settings for the functional tests' server; a test adds its own through
the PREFORK_TEST_SETTINGS environment variable (a JSON object)."""

import json
import os

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.staticfiles", "django_prefork"]
MIDDLEWARE = []
ROOT_URLCONF = "tests.fixtureapp.urls"
WSGI_APPLICATION = "tests.fixtureapp.wsgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
STATIC_URL = "static/"
USE_TZ = True
PREFORK_WORKERS = 2
LOGGING_CONFIG = "logging.config.dictConfig"

globals().update(json.loads(os.environ.get("PREFORK_TEST_SETTINGS", "{}")))
