"""How many CPUs this process may really use: PREFORK_WORKERS's default.

Two limits apply, and the smaller one counts:

* the affinity mask (`taskset`, `cpuset`, a container's `--cpuset-cpus`):
  CPUs the process may run on at all;
* the cgroup CPU quota (a container's `--cpus`, Kubernetes' `limits.cpu`,
  systemd's `CPUQuota=`): CPU time per period. The process may run on 64
  CPUs and still get 1.5 CPUs' worth of time; a worker count of 64 would
  then take turns being throttled. The quota is rounded up: 1.5 CPUs get 2
  workers, since a worker waiting on the database does not use its share.

The quota is read from the cgroup the kernel names in /proc/self/cgroup:
cgroup v2's `cpu.max` ("150000 100000", or "max 100000" for none), or
cgroup v1's `cpu.cfs_quota_us` (-1 for none) over `cpu.cfs_period_us`. A
parent cgroup's quota binds its children too, so every level from the
process's cgroup up to the mount point is read and the smallest quota wins.
Inside a container the mount point is often the container's own cgroup
while /proc/self/cgroup still names the host's path; then the mount point
itself is read. Anything unreadable or malformed is no quota: a default
must never stop the server.

Every reader takes `root`, the file system's root, so the tests give it a
tree in a temporary directory.
"""

import math
import os
from dataclasses import dataclass

CGROUP_MOUNT = "sys/fs/cgroup"


@dataclass(frozen=True)
class Cpus:
    """PREFORK_WORKERS's default, and where it came from (the banner says it)."""

    count: int
    usable: int  # CPUs in the affinity mask
    quota: float = None  # CPUs' worth of time the cgroup allows; None: no quota

    @property
    def source(self):
        if self.quota is not None and self.count < self.usable:
            return f"the CPU quota: {self.quota:g} CPU{'s' if self.quota != 1 else ''}"
        return f"the CPU{'s' if self.usable != 1 else ''} it may use"


def default_workers(root="/"):
    """Workers for the CPUs this process may use: the quota rounded up, capped by the affinity mask, ≥ 1."""
    usable = affinity_cpus()
    quota = cpu_quota(root)
    if quota is None:
        return Cpus(usable, usable)
    return Cpus(max(1, min(usable, math.ceil(quota))), usable, quota)


def affinity_cpus():
    """CPUs this process may run on (its affinity mask), not the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS has no sched_getaffinity
        return os.cpu_count() or 1


def cpu_quota(root="/"):
    """CPUs' worth of time the process's cgroups allow (1.5), or None when none is set."""
    v1, v2 = _cgroup_paths(root)
    if v1 is not None:  # a hybrid system puts the cpu controller in v1: its quota is the one enforced
        controllers, path = v1
        mounts = [os.path.join(root, CGROUP_MOUNT, controllers), os.path.join(root, CGROUP_MOUNT, "cpu")]
        return _smallest(_v1_quota, mounts, path)
    if v2 is not None:
        return _smallest(_v2_quota, [os.path.join(root, CGROUP_MOUNT)], v2)
    return None


def _cgroup_paths(root):
    """(v1 (controllers, path) holding the cpu controller, or None; the v2 path, or None)."""
    v1 = v2 = None
    try:
        with open(os.path.join(root, "proc/self/cgroup")) as f:
            lines = f.read().splitlines()
    except OSError:
        return None, None
    for line in lines:
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = controllers, path
    return v1, v2


def _smallest(read_quota, mounts, path):
    """The smallest quota along `path` and its ancestors under the first mount point that exists."""
    for mount in mounts:
        if os.path.isdir(mount):
            break
    else:
        return None
    quotas = [q for d in _levels(mount, path) if (q := read_quota(d)) is not None]
    return min(quotas) if quotas else None


def _levels(mount, path):
    """The cgroup's directory and each parent's up to the mount point; the mount point itself at least."""
    parts = [p for p in path.split("/") if p and p not in (".", "..")]
    levels = [os.path.join(mount, *parts[:n]) for n in range(len(parts), 0, -1)]
    return [d for d in levels if os.path.isdir(d)] + [mount]


def _v2_quota(directory):
    words = _read(os.path.join(directory, "cpu.max")).split()
    if len(words) != 2 or words[0] == "max":
        return None
    return _ratio(words[0], words[1])


def _v1_quota(directory):
    quota = _read(os.path.join(directory, "cpu.cfs_quota_us")).strip()
    period = _read(os.path.join(directory, "cpu.cfs_period_us")).strip()
    return _ratio(quota, period)


def _ratio(quota, period):
    try:
        quota, period = int(quota), int(period)
    except ValueError:
        return None
    if quota <= 0 or period <= 0:  # v1 says -1 for no quota
        return None
    return quota / period


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
