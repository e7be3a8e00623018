"""manage.py preforkstatus: what a running runprefork server is doing, from its master."""

import json
import os
import socket
import time

from django.core.management.base import BaseCommand, CommandError

from django_prefork import pidfile
from django_prefork.status import control_paths, project_id, runtime_dir


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
        pid = self.find_master(options["pid"], options["pidfile"])
        try:
            while True:
                doc = fetch_status(pid)  # once the server is gone: CommandError, one line, exit 1
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
        if path:
            with_pid = pidfile.live_pid(path)
            if with_pid is None:
                raise CommandError(f"{path} names no running process: is the server up?")
            return with_pid
        if pid:
            return pid
        directory = runtime_dir()
        mine = project_id()
        found = []
        for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(directory, name)) as f:
                    info = json.load(f)
                os.kill(info["pid"], 0)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if info.get("project") == mine:
                found.append(info["pid"])
        if not found:
            raise CommandError(
                f"No runprefork server of this project is running (none registered in {directory} "
                f"for {mine}). Start one with manage.py runprefork, or name it with --pid or --pidfile."
            )
        if len(found) > 1:
            raise CommandError(f"Several runprefork servers of this project run (pids {', '.join(map(str, found))}): "
                               "choose one with --pid.")
        return found[0]


def fetch_status(pid):
    path, _ = control_paths(pid)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(path)
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


def render(doc):
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
