"""What a forked child's private pages are, against its parent's page at the same address.

    sudo python benchmarks/cow_pages.py CHILD PARENT     # e.g. a worker and its mold, or its arbiter

For each page of the child's [anon] and [heap] mappings that only the child maps
(/proc/kpagecount 1), its content against the parent's: "same" (copied on write,
then written back as it was: a reference count raised and lowered), "diff<=N w"
(N 8-byte words differ), "parent-absent" (new since the fork). Needs root: the
page frame numbers of /proc/PID/pagemap, /proc/kpagecount and /proc/PID/mem.
"""
import struct
import sys
from collections import Counter

PAGE = 4096


def maps(pid):
    out = []
    for line in open(f"/proc/{pid}/maps"):
        p = line.split()
        lo, hi = (int(x, 16) for x in p[0].split("-"))
        path = p[5] if len(p) > 5 else "[anon]"
        out.append((lo, hi, p[1], path))
    return out


def pfns(pid, lo, hi):
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(lo // PAGE * 8)
        data = f.read((hi - lo) // PAGE * 8)
    res = []
    for i in range(len(data) // 8):
        (e,) = struct.unpack_from("<Q", data, i * 8)
        present = e >> 63 & 1
        res.append((e & ((1 << 55) - 1)) if present else None)
    return res


kpc = open("/proc/kpagecount", "rb")


def count(pfn):
    kpc.seek(pfn * 8)
    return struct.unpack("<Q", kpc.read(8))[0]


def read(pid, addr, n=PAGE):
    try:
        with open(f"/proc/{pid}/mem", "rb") as f:
            f.seek(addr)
            return f.read(n)
    except OSError:
        return None


def classify(a, b):
    if b is None:
        return "parent-none"
    if a == b:
        return "same"
    wa = struct.unpack(f"<{PAGE // 8}Q", a)
    wb = struct.unpack(f"<{PAGE // 8}Q", b)
    d = sum(1 for x, y in zip(wa, wb) if x != y)
    if b.count(0) == PAGE:
        return "parent-zero"
    if d <= 4:
        return "diff<=4w"
    if d <= 32:
        return "diff<=32w"
    if d <= 128:
        return "diff<=128w"
    return "diff>128w"


def main():
    child, parent = int(sys.argv[1]), int(sys.argv[2])
    pmaps = maps(parent)
    totals = Counter()
    kinds = Counter()
    for lo, hi, perms, path in maps(child):
        kind = "*.so" if ".so" in path else path if not path.startswith("/") else "file"
        if kind not in ("[anon]", "[heap]"):
            continue
        cp = pfns(child, lo, hi)
        inparent = any(plo <= lo < phi for plo, phi, _, _ in pmaps)
        pp = pfns(parent, lo, hi) if inparent else [None] * len(cp)
        for i, pfn in enumerate(cp):
            if pfn is None or pfn == 0:
                continue
            if count(pfn) != 1:
                continue
            addr = lo + i * PAGE
            if pp[i] is None:
                c = "parent-absent"
            else:
                c = classify(read(child, addr), read(parent, addr))
            totals[(kind, c)] += 1
            kinds[kind] += 1
    for k, v in sorted(totals.items()):
        print(f"{k[0]:8} {k[1]:14} {v * 4 / 1024:7.1f} MiB")
    for k, v in kinds.items():
        print(f"{k:8} total private {v * 4 / 1024:7.1f} MiB")


main()
