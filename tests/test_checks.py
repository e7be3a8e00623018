"""checks.py: the checks across settings, and which findings hide which (one value's checks are test_conf.py's)."""

import importlib.util

import pytest
from django.core.checks import Error
from django.test import override_settings

from django_prefork import checks


@pytest.mark.parametrize("settings, ids", [
    ({"PREFORK_WORKERS": 4, "PREFORK_MAX_WORKERS": 2}, ["prefork.E051"]),  # a ceiling below the floor
    ({"PREFORK_WORKERS": 4, "PREFORK_MAX_WORKERS": 4}, []),  # a fixed count said twice
    ({"PREFORK_WORKERS": 2, "PREFORK_MAX_WORKERS": 8}, []),
    # An invalid value hides the cross checks and the warnings: they would only add noise to it.
    ({"PREFORK_WORKERS": 0, "PREFORK_MAX_WORKERS": 2, "PREFORK_MAX_REQUESTS_JITTER": 5}, ["prefork.E001"]),
    # An error across settings hides a warning.
    ({"PREFORK_WORKERS": 4, "PREFORK_MAX_WORKERS": 2, "PREFORK_MAX_REQUESTS_JITTER": 5}, ["prefork.E051"]),
    # A worker's timeout budget shorter than the wait on a silent client.
    ({"PREFORK_TIMEOUT": 5, "PREFORK_CLIENT_TIMEOUT": 10}, ["prefork.W003"]),
    ({"PREFORK_TIMEOUT": 10, "PREFORK_CLIENT_TIMEOUT": 10}, []),  # equal: the client timeout still applies
    ({"PREFORK_TIMEOUT": 0, "PREFORK_CLIENT_TIMEOUT": 10}, []),  # 0: no timeout, no budget to outlive
])
def test_findings(settings, ids):
    with override_settings(**settings):
        assert [finding.id for finding in checks.check_settings()] == ids


def test_metrics_without_prometheus_client_is_an_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "prometheus_client" else real(name))
    with override_settings(PREFORK_METRICS="127.0.0.1:9100"):
        (error,) = checks.check_settings()
    assert isinstance(error, Error) and error.id == "prefork.E050" and "pip install" in error.hint


def test_metrics_with_prometheus_client_passes():
    pytest.importorskip("prometheus_client")
    with override_settings(PREFORK_METRICS="127.0.0.1:9100"):
        assert checks.check_settings() == []


@pytest.mark.parametrize("script_name, ids", [
    ("sub", ["prefork.W004"]),  # no path starts with it: every request would be 404
    ("/sub", []),
    ("", []),
])
def test_script_name_must_be_a_path(monkeypatch, script_name, ids):
    monkeypatch.setenv("SCRIPT_NAME", script_name)
    assert [finding.id for finding in checks.check_settings()] == ids
