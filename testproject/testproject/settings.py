"""A small real Django site to try runprefork on (SQLite, DEBUG on by default)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "testproject-insecure-key-for-local-use-only")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "django_prefork",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

ROOT_URLCONF = "testproject.urls"
WSGI_APPLICATION = "testproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("TESTPROJECT_DB", BASE_DIR / "db.sqlite3"),
    }
}

STATIC_URL = "static/"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PREFORK_WORKERS = int(os.environ.get("PREFORK_WORKERS", 2))
if os.environ.get("PREFORK_MAX_WORKERS"):  # benchmarks/run.py's burst scenario scales 1→4
    PREFORK_MAX_WORKERS = int(os.environ["PREFORK_MAX_WORKERS"])
if os.environ.get("PREFORK_KEEPALIVE"):  # benchmarks/run.py's keep-alive scenarios
    PREFORK_KEEPALIVE = int(os.environ["PREFORK_KEEPALIVE"])
