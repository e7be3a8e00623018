import json
import os

from django.apps import AppConfig


def record(name):
    def receiver(sender, **kwargs):
        kwargs.pop("signal")
        line = json.dumps({"hook": name, "in_pid": os.getpid(), "sender": sender.__name__, **kwargs})
        # O_APPEND: the master and every worker write to the one file, a line at a time.
        fd = os.open(os.environ["PREFORK_TEST_HOOKS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
        if name == "worker_started" and os.environ.get("PREFORK_TEST_HOOKS_FAIL"):
            raise RuntimeError("a broken exporter")

    receiver.__name__ = f"record_{name}"
    return receiver


class HooksAppConfig(AppConfig):
    name = "tests.fixtureapp.hooksapp"

    def ready(self):
        from django_prefork import hooks

        for name in ("server_ready", "worker_started", "worker_exiting", "reloading"):
            getattr(hooks, name).connect(record(name), weak=False)
