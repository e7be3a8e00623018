"""Which file changes start a new generation, found by polling without a thread.

Django's autoreloader knows what to watch: every module in sys.modules, the
directories apps register on `autoreload_started` (templates, `.mo` files),
and it announces changes on `file_changed`. Its StatReloader polls from a
thread, and its WatchmanReloader blocks in a client; the master process
forks (the first generation) and must stay single-threaded, so it asks the
StatReloader only for the list of files and stats them itself, once a
second, from its own loop. Every `.py` under the project's base directory is
watched as well: the workers import modules the master never did.
"""

import os
from pathlib import Path

from django.utils import autoreload

SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", "venv", "env"}


class CodeWatcher:
    def __init__(self, base_dir):
        self.base_dir = Path(base_dir) if base_dir else None
        self.reloader = autoreload.StatReloader()
        autoreload.autoreload_started.send(sender=self.reloader)
        self.mtimes = self.snapshot()

    def files(self):
        yield from self.reloader.watched_files()
        if self.base_dir is None:
            return
        for root, dirs, names in os.walk(self.base_dir):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS]
            for name in names:
                if name.endswith(".py"):
                    yield Path(root, name)

    def snapshot(self):
        mtimes = {}
        for path in self.files():
            try:
                mtimes[path] = path.stat().st_mtime_ns
            except OSError:
                continue
        return mtimes

    def changed(self):
        """The files changed, added or removed since the last call, or []."""
        now = self.snapshot()
        changed = [p for p, m in now.items() if self.mtimes.get(p) != m]
        changed += [p for p in self.mtimes if p not in now]
        self.mtimes = now
        for path in changed:
            # Apps that watch files hear of changes as under runserver; their
            # answer does not matter here: the code is in other processes.
            autoreload.file_changed.send(sender=self.reloader, file_path=path)
        return changed
