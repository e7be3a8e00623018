"""apps.py: installing the app registers its system checks."""

from django.apps import apps
from django.core import checks as django_checks

from django_prefork.checks import check_settings


def test_the_app_is_installed_under_its_label():
    config = apps.get_app_config("django_prefork")
    assert config.name == "django_prefork" and config.verbose_name == "Prefork server"


def test_ready_registered_the_settings_checks():
    assert check_settings in django_checks.registry.registry.get_checks()


def test_the_app_registers_its_settings_check():
    from django.apps import apps
    from django.core import checks

    from django_prefork.apps import PreforkConfig
    from django_prefork.checks import check_settings

    assert isinstance(apps.get_app_config("django_prefork"), PreforkConfig)
    assert check_settings in checks.registry.registry.get_checks()
