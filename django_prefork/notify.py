"""sd_notify(3) without libsystemd: a datagram to $NOTIFY_SOCKET, if systemd set one."""

import os
import socket
import time


def sd_notify(*lines):
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
    except OSError:
        pass  # systemd is not listening: nothing to tell


def ready(status):
    sd_notify("READY=1", f"STATUS={status}")


def reloading():
    # Type=notify-reload wants the monotonic time of the reload's start with it.
    sd_notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")


def stopping():
    sd_notify("STOPPING=1")
