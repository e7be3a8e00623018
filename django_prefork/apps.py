from django.apps import AppConfig
from django.core import checks


class PreforkConfig(AppConfig):
    name = "django_prefork"
    verbose_name = "Prefork server"

    def ready(self):
        from .checks import check_settings

        checks.register(check_settings)
