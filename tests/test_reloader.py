"""reloader.py: which file changes start a new generation, found by polling a temp project."""

import os

import pytest
from django.utils import autoreload

from django_prefork.reloader import CodeWatcher


@pytest.fixture
def project(tmp_path):
    (tmp_path / "views.py").write_text("a = 1\n")
    for skipped in ("__pycache__", "node_modules", ".git", "venv"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "ignored.py").write_text("")
    return tmp_path


def touch(path, text):
    """Write `text` and move the mtime on by a second: a change within one clock tick still counts."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_nothing_changed_nothing_reported(project):
    assert CodeWatcher(project).changed() == []


def test_a_changed_an_added_and_a_removed_file_are_reported_once(project):
    watcher = CodeWatcher(project)
    touch(project / "views.py", "a = 2\n")
    (project / "models.py").write_text("")
    assert sorted(p.name for p in watcher.changed()) == ["models.py", "views.py"]
    (project / "models.py").unlink()
    assert [p.name for p in watcher.changed()] == ["models.py"]
    assert watcher.changed() == []


def test_caches_vcs_and_virtualenvs_are_not_watched(project):
    watched = {p.parent.name for p in CodeWatcher(project).files() if str(p).startswith(str(project))}
    assert watched == {project.name}


def test_the_modules_django_knows_are_watched_without_a_base_dir():
    files = set(CodeWatcher(None).files())
    assert os.path.realpath(autoreload.__file__) in {os.path.realpath(p) for p in files}


def test_apps_hear_of_changes_as_under_runserver(project):
    heard = []

    def receiver(sender, file_path, **kwargs):
        heard.append(file_path.name)

    autoreload.file_changed.connect(receiver)
    try:
        watcher = CodeWatcher(project)
        touch(project / "views.py", "a = 3\n")
        watcher.changed()
    finally:
        autoreload.file_changed.disconnect(receiver)
    assert heard == ["views.py"]
