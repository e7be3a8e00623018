"""manage.py preforkstatus: what a running runprefork server is doing, from its master.

It trusts nothing it did not check. The control directory and socket must
belong to the user the server runs as and be private (status.check_private),
the process answering must be that user (SO_PEERCRED), and every string of
the document it prints is stripped of terminal controls (`printable`): run
as root against an app user's server, it must not let whoever made
/tmp/django-prefork-UID first write escape sequences (clear the screen, set
the window title, fill the clipboard with OSC 52) to root's terminal.

Which server: --pid/--pidfile name one, and its directory is that of the
uid the process runs as. Without either, the servers of this project in
this user's directory; run as root, in every user's /tmp/django-prefork-UID
as well, those that pass the checks (a directory that does not is someone's
trap, skipped).
"""

import json
import os
import re
import socket
import tempfile
import time

from django.core.management.base import BaseCommand, CommandError

from django_prefork import pidfile
from django_prefork.status import Untrusted, check_private, control_paths, peer_uid, project_id, runtime_dir


class Command(BaseCommand):
    help = (
        "Shows a running runprefork server: its workers and what each serves, the listen queue, "
        "reloads and restarts. Finds this project's server by itself, or is told --pid/--pidfile."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--pid", type=int, help="The master's pid (the one runprefork's banner names).")
        which.add_argument("--pidfile", help="A file runprefork --pidfile wrote.")
        parser.add_argument("--json", action="store_true", help="Print the status document as JSON.")
        parser.add_argument("--watch", action="store_true", help="Refresh every --interval seconds until Ctrl-C.")
        parser.add_argument("--interval", type=float, default=1.0, help="Seconds between refreshes (--watch).")

    def handle(self, *args, **options):
        pid, directory, uid = self.find_master(options["pid"], options["pidfile"])
        try:
            while True:
                doc = fetch_status(pid, directory, uid)  # once the server is gone: CommandError, one line, exit 1
                text = json.dumps(doc, indent=2) if options["json"] else render(doc)
                if not options["watch"]:
                    self.stdout.write(text)
                    return
                self.stdout.write("\x1b[H\x1b[2J" + text)
                self.stdout.flush()
                time.sleep(options["interval"])
        except KeyboardInterrupt:
            return  # Ctrl-C ends --watch, wherever it lands: no traceback

    def find_master(self, pid, path):
        """(pid, its control directory, the uid it runs as) of the server to ask."""
        if path:
            with_pid = pidfile.live_pid(path)
            if with_pid is None:
                raise CommandError(f"{path} names no running process: is the server up?")
            pid = with_pid
        if pid:
            uid = owner_of(pid)
            return pid, runtime_dir(uid), uid
        mine = project_id()
        found = []
        for directory, uid in candidate_dirs():
            for name in sorted(os.listdir(directory)):
                if not name.endswith(".json"):
                    continue
                try:
                    with open(os.path.join(directory, name)) as f:
                        info = json.load(f)
                    os.kill(info["pid"], 0)
                except (OSError, ValueError, KeyError, TypeError):
                    continue
                if info.get("project") == mine:
                    found.append((info["pid"], directory, uid))
        if not found:
            raise CommandError(
                f"No runprefork server of this project is running (none registered in {runtime_dir()} "
                f"for {mine}). Start one with manage.py runprefork, or name it with --pid or --pidfile."
            )
        if len(found) > 1:
            raise CommandError(f"Several runprefork servers of this project run "
                               f"(pids {', '.join(str(pid) for pid, _, _ in found)}): choose one with --pid.")
        return found[0]


def owner_of(pid):
    """The uid `pid` runs as (its /proc entry's owner); ours where there is no /proc to say."""
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            raise CommandError(f"No process {pid} is running: is the server up?") from None
        return os.getuid()


def candidate_dirs():
    """(directory, uid) to look for servers in: ours, and as root every user's in the temp dir.

    Ours must pass the checks (else a CommandError saying what is wrong);
    another user's that does not is skipped: anyone can make
    /tmp/django-prefork-1000 before user 1000 does.
    """
    own = runtime_dir()
    dirs = [(own, os.getuid())]
    if os.getuid() == 0:
        base = tempfile.gettempdir()
        for name in sorted(os.listdir(base)):
            match = re.fullmatch(r"django-prefork-(\d+)", name)
            if match and os.path.join(base, name) != own:
                dirs.append((os.path.join(base, name), int(match.group(1))))
    usable = []
    for directory, uid in dirs:
        try:
            check_private(directory, uid, "directory")
        except FileNotFoundError:
            continue
        except Untrusted as exc:
            if directory == own:
                raise CommandError(f"{exc}: someone else could have put a server there. Remove it (as root: "
                                   f"rm -r {directory}); the server makes it itself.") from None
            continue
        usable.append((directory, uid))
    return usable


def fetch_status(pid, directory=None, uid=None):
    """The status document of the master `pid`, whose control socket is in `directory`, run by `uid`.

    The directory and socket are checked before connecting and the peer's
    uid after: whatever fails is refused with a CommandError, the document unread.
    """
    directory = directory or runtime_dir()
    uid = os.getuid() if uid is None else uid
    path, _ = control_paths(pid, directory)
    try:
        check_private(directory, uid, "directory")
        check_private(path, uid, "socket")
    except Untrusted as exc:
        raise CommandError(f"Refusing {exc}: whoever made it could answer in the server's place. Remove it "
                           f"(as root) and restart the server.") from None
    except FileNotFoundError:
        raise CommandError(f"No runprefork master answers at {path} (no such socket): "
                           f"is pid {pid} a runprefork master?") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(path)
        peer = peer_uid(sock)
        if peer not in (None, uid):
            raise CommandError(f"The process answering at {path} runs as uid {peer}, not {uid} as the server "
                               f"would: refusing its answer.")
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: preforkstatus\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    except OSError as exc:
        raise CommandError(f"No runprefork master answers at {path} ({exc.strerror or exc}): "
                           f"is pid {pid} a runprefork master of this user?") from None
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise CommandError(f"The master at {path} answered {head.splitlines()[0:1]}")
    return json.loads(body)


def _size(n):
    return "-" if not n else f"{n / 1048576:.0f}M"


def _seconds(s):
    if s is None:
        return ""
    if s < 60:
        return f"{s:.1f}s"
    return f"{s / 60:.0f}m" if s < 3600 else f"{s / 3600:.1f}h"


def _connections(held):
    """A worker's connections as reading/waiting/writing (out)/idle, or '-' before it said."""
    if not held:
        return "-"
    return "/".join(str(held.get(state, 0)) for state in ("reading", "waiting", "writing", "idle"))


_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: what a terminal acts on rather than shows


def printable(value):
    """`value` (a document, or any part) with each control character of its strings shown as \\xNN.

    The master's name and each worker's request come from the project and
    its clients, and a forged socket could say anything: escaped, they are
    read, never obeyed (ESC starts CSI and OSC sequences, 0x9b is CSI alone,
    CR overwrites the line). Keys too, and whatever the nesting.
    """
    if isinstance(value, str):
        return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable(v) for v in value]
    return value


def render(doc):
    doc = printable(doc)
    lines = []
    master = doc["master"]
    lines.append(f"runprefork master pid {master['pid']} [{master['name']}], up {_seconds(master['uptime'])}, "
                 f"{'healthy' if doc['healthy'] else 'NOT SERVING'}; generation {doc['generation']}")
    for listener in doc["listeners"]:
        if "queued" in listener:
            lines.append(f"  {listener['address']}: {listener['queued']} waiting in the listen queue "
                         f"(backlog {listener['backlog']})")
        else:
            lines.append(f"  {listener['address']}: listen queue not known on this platform")
    workers = f"  workers: {doc['busy']} busy of {doc['workers']} (target {doc['worker_target']}"
    if doc.get("worker_bounds") and doc["worker_bounds"][0] != doc["worker_bounds"][1]:
        low, high = doc["worker_bounds"]
        workers += f", scaling {low}-{high}: {doc['scaling']['up']} up, {doc['scaling']['down']} down"
    lines.append(workers + ")")
    held = doc.get("connections") or {}
    lines.append("  connections: " + (", ".join(f"{n} {state}" for state, n in held.items() if n) or "none held"))
    totals = doc["totals"]
    responses = ", ".join(f"{k} {v}" for k, v in totals["responses"].items() if v)
    lines.append(f"  requests: {totals['requests']} ({responses or 'none yet'})")
    restarts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in doc["restarts"].items() if v)
    lines.append(f"  reloads: {doc['reloads']['ok']} ok, {doc['reloads']['failed']} failed; "
                 f"worker restarts: {restarts or 'none'}")
    reforks = doc.get("reforks", 0)
    if reforks:  # PREFORK_REFORK_AFTER: MOLD is the refork whose mold forked each worker (0: its arbiter)
        lines.append(f"  reforks: {reforks}")
    lines.append("")
    header = ("WORKER", "PID", "GEN", *(("MOLD",) if reforks else ()), "STATE", "FOR", "REQUESTS", "CONNS(r/w/o/i)",
              "RSS", "USS", "AGE", "REQUEST")
    rows = [header]
    for w in sorted(doc["worker_list"], key=lambda w: (w["generation"], w["number"])):
        rows.append((str(w["number"]), str(w["pid"]), str(w["generation"]),
                     *((str(w.get("mold_generation", 0)),) if reforks else ()), w["state"],
                     _seconds(w["request_age"]), str(w["requests"]), _connections(w.get("connections")),
                     _size(w["rss"]), _size(w["uss"]),
                     _seconds(w["age"]), w["request"] or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return "\n".join(lines) + "\n"
