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
    return errors or _warnings()  # a warning about an invalid value would only add noise


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
