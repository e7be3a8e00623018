"""System checks: a bad PREFORK_* setting stops `check` and `runprefork` with an id.

They see what the server would run with (conf.resolve(): the environment
over settings.py), so a bad environment variable fails like a bad setting,
its hint naming the variable.
"""

import os

from django.core import checks

from . import conf


def check_settings(app_configs=None, **kwargs):
    errors = [
        checks.Error(conf.describe(setting, value, source), hint=_hint(setting, source), id=setting.check_id)
        for setting, value, source in conf.problems()
    ]
    if errors:
        return errors  # a warning about an invalid value would only add noise
    values = {name: found.value for name, found in conf.resolve().items()}
    return _cross_checks(values) or _warnings(values) + _unknown_names()


def _hint(setting, source):
    default = setting.default_value()
    if source == conf.ENVIRONMENT:
        return (f"Set the environment variable {setting.name} to {setting.valid.wants} (written as text; "
                f'"none" for None), or unset it to use settings.py\'s value or the default ({default!r}).')
    return f"Set {setting.name} to {setting.valid.wants}, or remove it to use the default ({default!r})."


def _cross_checks(values):
    workers = values["PREFORK_WORKERS"]
    ceiling = values["PREFORK_MAX_WORKERS"]
    if ceiling is not None and ceiling < workers:
        return [checks.Error(
            f"PREFORK_MAX_WORKERS ({ceiling}) is below PREFORK_WORKERS ({workers}).",
            hint="PREFORK_WORKERS is the floor and PREFORK_MAX_WORKERS the ceiling of scaling: raise the "
            "ceiling, lower the floor, or remove PREFORK_MAX_WORKERS for a fixed count.",
            id="prefork.E051",
        )]
    from .metrics import prometheus_available

    if values["PREFORK_METRICS"] and not prometheus_available():
        return [checks.Error(
            "PREFORK_METRICS is set, and prometheus_client, which writes /metrics, is not installed.",
            hint="pip install 'django-prefork[metrics]' (or prometheus_client), or remove PREFORK_METRICS.",
            id="prefork.E050",
        )]
    return []


def _warnings(values):
    found = []
    if values["PREFORK_MAX_REQUESTS_JITTER"] and not values["PREFORK_MAX_REQUESTS"]:
        found.append(
            checks.Warning(
                "PREFORK_MAX_REQUESTS_JITTER has no effect while PREFORK_MAX_REQUESTS is 0.",
                hint="Set PREFORK_MAX_REQUESTS to recycle workers, or remove the jitter.",
                id="prefork.W001",
            )
        )
    timeout, client_timeout = values["PREFORK_TIMEOUT"], values["PREFORK_CLIENT_TIMEOUT"]
    if 0 < timeout < client_timeout:
        found.append(checks.Warning(
            f"PREFORK_TIMEOUT ({timeout:g} s) is shorter than PREFORK_CLIENT_TIMEOUT ({client_timeout:g} s): "
            "a client may stay silent longer than a whole request may run.",
            hint="A connection waited on for PREFORK_CLIENT_TIMEOUT outlives the worker's timeout budget, "
            "so slow clients are cut by the request's deadline, not the client timeout. Make PREFORK_TIMEOUT "
            "the longer (the defaults: 30 and 10), or shorten PREFORK_CLIENT_TIMEOUT.",
            id="prefork.W003",
        ))
    script_name = os.environ.get("SCRIPT_NAME", "")
    if script_name and not script_name.startswith("/"):
        found.append(checks.Warning(
            f"SCRIPT_NAME in the environment is {script_name!r}; a path prefix starts with '/', so no "
            "request's path is under it and every one is answered 404.",
            hint=f"Set SCRIPT_NAME=/{script_name} to mount the app there, or unset it to serve at the root.",
            id="prefork.W004",
        ))
    return found


def _unknown_names():
    """A PREFORK_* name that is no setting: most likely a typo, silently ignored otherwise."""
    found = []
    for name, where, nearest in conf.unknown_names():
        guess = f"did you mean {nearest}?" if nearest else "it is not a setting of django-prefork."
        found.append(checks.Warning(
            f"{name} in {where} is not a django-prefork setting; {guess}",
            hint="Names and meanings of the settings: the Settings section of django-prefork's README.",
            id="prefork.W002",
        ))
    return found
