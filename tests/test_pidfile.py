"""--pidfile: never written through a symlink or over a planted file (a root-run server would overwrite its target)."""

import os

import pytest

from django_prefork import pidfile


def test_a_planted_symlink_at_the_old_temp_name_is_not_followed(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("root's own file\n")
    path = tmp_path / "prefork.pid"
    monkeypatch.setattr(os, "getpid", lambda: 4242)
    os.symlink(victim, tmp_path / "prefork.pid.4242.tmp")  # guessable from the pid: a writer that opened it would follow the link
    pidfile.write(str(path))
    assert victim.read_text() == "root's own file\n"
    assert path.read_text() == "4242\n" and not path.is_symlink()
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prefork.pid", "prefork.pid.4242.tmp", "victim"]


def test_the_server_replaces_a_symlink_at_the_pidfile_path(serve, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    path = tmp_path / "server.pid"
    os.symlink(victim, path)
    server = serve("--pidfile", str(path))
    assert victim.read_text() == "keep me\n"
    assert not path.is_symlink() and int(path.read_text()) == server.pid


# -- reading and removing, no server -------------------------------------------------------------

DEAD_PID = 2 ** 22 + 1  # above pid_max's ceiling: never a live process


@pytest.mark.parametrize("content, alive", [
    (None, False),  # no file
    ("", False),
    ("garbage\n", False),
    ("-1\n", False),  # kill(-1, 0) would ask about every process
    ("0\n", False),  # and kill(0, 0) about our own group
    (f"{DEAD_PID}\n", False),
    ("self", False),  # our own pid: a pidfile left by a previous life of this pid
    ("parent", True),
    ("1\n", True),  # someone else's process (EPERM) is alive all the same
])
def test_live_pid(tmp_path, content, alive):
    path = tmp_path / "server.pid"
    if content is not None:
        text = {"self": f"{os.getpid()}\n", "parent": f"{os.getppid()}\n"}.get(content, content)
        path.write_text(text)
    assert (pidfile.live_pid(str(path)) is not None) is alive


def test_remove_leaves_another_servers_pidfile(tmp_path):
    path = tmp_path / "server.pid"
    path.write_text(f"{os.getppid()}\n")
    pidfile.remove(str(path))
    assert path.exists()
    pidfile.write(str(path))
    pidfile.remove(str(path))
    assert not path.exists()
