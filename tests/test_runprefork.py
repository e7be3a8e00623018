"""The runprefork command's own pieces, without starting it (test_command.py starts it)."""

import types

import pytest

from django_prefork import conf
from django_prefork.management.commands import runprefork


def test_the_options_are_generated_from_the_settings_table():
    parser = runprefork.Command().create_parser("manage.py", "runprefork")
    flags = {flag for action in parser._actions for flag in action.option_strings}
    for setting in conf.SETTINGS:
        assert set(setting.flags) <= flags, setting.name


@pytest.mark.parametrize("workers, max_workers, threads, said", [
    (1, 1, 1, "1 request"),
    (4, 4, 1, "4 requests"),
    (2, 4, 1, "2 to 4 requests"),  # scaling: the range the arbiter moves in
    (2, 2, 8, "16 requests"),  # app threads each take one
    (2, 3, 8, "16 to 24 requests"),
])
def test_the_banner_says_how_many_requests_run_at_once(workers, max_workers, threads, said):
    config = types.SimpleNamespace(workers=workers, max_workers=max_workers, threads=threads)
    assert runprefork.requests_at_once(config) == said
