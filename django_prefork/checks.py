"""System checks: a bad PREFORK_* setting stops `check` and `runprefork` with an id."""

from django.core import checks

from . import conf


def check_settings(app_configs=None, **kwargs):
    errors = []
    for setting, value in conf.problems():
        default = setting.default_value()
        errors.append(
            checks.Error(
                conf.describe(setting, value),
                hint=f"Set {setting.name} to {setting.valid.wants}, or remove it "
                f"to use the default ({default!r}).",
                id=setting.check_id,
            )
        )
    return errors or _cross_checks() or _warnings()  # a warning about an invalid value would only add noise


def _cross_checks():
    from django.conf import settings

    workers = getattr(settings, "PREFORK_WORKERS", None) or conf.usable_cpus()
    ceiling = getattr(settings, "PREFORK_MAX_WORKERS", None)
    if ceiling is not None and ceiling < workers:
        return [checks.Error(
            f"PREFORK_MAX_WORKERS ({ceiling}) is below PREFORK_WORKERS ({workers}).",
            hint="PREFORK_WORKERS is the floor and PREFORK_MAX_WORKERS the ceiling of scaling: raise the "
            "ceiling, lower the floor, or remove PREFORK_MAX_WORKERS for a fixed count.",
            id="prefork.E051",
        )]
    from .metrics import prometheus_available

    if getattr(settings, "PREFORK_METRICS", None) and not prometheus_available():
        return [checks.Error(
            "PREFORK_METRICS is set, and prometheus_client, which writes /metrics, is not installed.",
            hint="pip install 'django-prefork[metrics]' (or prometheus_client), or remove PREFORK_METRICS.",
            id="prefork.E050",
        )]
    return []


def _warnings():
    from django.conf import settings

    found = []
    if getattr(settings, "PREFORK_MAX_REQUESTS_JITTER", 0) and not getattr(
        settings, "PREFORK_MAX_REQUESTS", 0
    ):
        found.append(
            checks.Warning(
                "PREFORK_MAX_REQUESTS_JITTER has no effect while PREFORK_MAX_REQUESTS is 0.",
                hint="Set PREFORK_MAX_REQUESTS to recycle workers, or remove the jitter.",
                id="prefork.W001",
            )
        )
    return found
