"""--pidfile: written once the socket is bound, removed when the server ends."""

import contextlib
import os
import tempfile


def live_pid(path):
    """The pid `path` names if that process is alive, else None."""
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, but someone else's
    return pid


def write(path):
    """Write our pid to `path`, never through a symlink or over another file.

    The pid goes to a fresh file beside `path` (mkstemp: O_EXCL, so a
    symlink planted under a guessable name cannot redirect the write), then
    is renamed over `path`, which replaces a symlink there rather than
    following it. A reader never sees a half-written pid.
    """
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide it from a monitoring user
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove(path):
    """Remove the pidfile if it still names this process."""
    try:
        with open(path) as f:
            if int(f.read().strip() or 0) != os.getpid():
                return
        os.unlink(path)
    except (OSError, ValueError):
        pass
