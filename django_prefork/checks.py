"""System checks: a bad PREFORK_* setting stops `check` and `runprefork` with an id.

They see what the server would run with (conf.resolve(): the environment
over settings.py), so a bad environment variable fails like a bad setting,
its hint naming the variable.
"""

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
