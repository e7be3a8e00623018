"""cpus.py: the CPU quota read from cgroup trees made in tmp_path, and the default worker count."""

import pytest

from django_prefork import cpus

# (/proc/self/cgroup, {file under sys/fs/cgroup: its text}, the quota in CPUs, why)
QUOTAS = [
    ("0::/app.slice\n", {"app.slice/cpu.max": "150000 100000\n"}, 1.5, "cgroup v2: quota over period"),
    ("0::/app.slice\n", {"app.slice/cpu.max": "max 100000\n"}, None, "v2 without a quota says max"),
    ("0::/a/b\n", {"a/cpu.max": "200000 100000", "a/b/cpu.max": "400000 100000"}, 2.0,
     "a parent's quota binds its children: the smallest along the path wins"),
    ("0::/a/b\n", {"a/cpu.max": "max 100000", "a/b/cpu.max": "50000 100000"}, 0.5,
     "a parent without a quota leaves the child's"),
    ("0::/kubepods/pod1/ctr\n", {"cpu.max": "250000 100000"}, 2.5,
     "in a container the mount is its own cgroup while /proc names the host's path"),
    ("0::/\n", {}, None, "the root cgroup has no cpu.max"),
    ("0::/app\n", {"app/cpu.max": "lots 100000"}, None, "a malformed file is no quota, never an error"),
    ("0::/app\n", {"app/cpu.max": "0 100000"}, None, "a zero quota is no answer to divide by"),
    ("4:cpu,cpuacct:/docker/x\n0::/\n",
     {"cpu,cpuacct/docker/x/cpu.cfs_quota_us": "150000\n", "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000\n"},
     1.5, "cgroup v1: cfs_quota_us over cfs_period_us"),
    ("4:cpu,cpuacct:/docker/x\n",
     {"cpu,cpuacct/docker/x/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000\n"},
     None, "v1 says -1 for no quota"),
    ("2:cpuacct:/\n1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 3.0,
     "v1 with the cpu controller mounted on its own"),
    ("1:cpu:/x\n0::/x\n", {"cpu/x/cpu.cfs_quota_us": "100000", "cpu/x/cpu.cfs_period_us": "100000",
                           "x/cpu.max": "400000 100000"}, 1.0,
     "hybrid: the cpu controller is v1's, so v1's quota is the enforced one"),
    ("1:memory:/x\n", {}, None, "no cpu controller at all"),
]


def make_tree(root, proc_cgroup, files):
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(proc_cgroup)
    (root / cpus.CGROUP_MOUNT).mkdir(parents=True)
    for name, text in files.items():
        path = root / cpus.CGROUP_MOUNT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("proc_cgroup, files, quota, why", QUOTAS, ids=[row[-1] for row in QUOTAS])
def test_cpu_quota(tmp_path, proc_cgroup, files, quota, why):
    make_tree(tmp_path, proc_cgroup, files)
    assert cpus.cpu_quota(str(tmp_path)) == quota, why


def test_no_proc_self_cgroup_is_no_quota(tmp_path):
    assert cpus.cpu_quota(str(tmp_path)) is None  # not Linux, or /proc not mounted


# (affinity CPUs, quota, workers, the banner's source, why)
COUNTS = [
    (4, None, 4, "the CPUs it may use", "no quota: the affinity mask"),
    (4, 1.5, 2, "the CPU quota: 1.5 CPUs", "1.5 CPUs rounded up"),
    (4, 0.2, 1, "the CPU quota: 0.2 CPUs", "at least one worker"),
    (4, 16.0, 4, "the CPUs it may use", "a quota above the mask: the mask caps it"),
    (1, None, 1, "the CPU it may use", "one CPU, singular"),
    (8, 1.0, 1, "the CPU quota: 1 CPU", "one CPU's worth, singular"),
]


@pytest.mark.parametrize("usable, quota, workers, source, why", COUNTS, ids=[row[-1] for row in COUNTS])
def test_default_workers(monkeypatch, usable, quota, workers, source, why):
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: usable)
    monkeypatch.setattr(cpus, "cpu_quota", lambda root: quota)
    found = cpus.default_workers()
    assert (found.count, found.source) == (workers, source), why


def test_this_machine_gets_at_least_one_worker():
    found = cpus.default_workers()
    assert 1 <= found.count <= found.usable
