"""What a forked child's private pages are, against its parent's page at the same address.

    sudo python benchmarks/cow_pages.py CHILD PARENT     # e.g. a worker and its mold, or its arbiter

CHILD is a worker; PARENT the process it was forked from: its mold (`ps` titles it
"runprefork mold"), or its arbiter for a worker the arbiter forked. The last mold
retires once every worker is its child: to compare against it, run the server with
PREFORK_MAX_REQUESTS (any large value) so that it stays.

For each page of the child's readable [anon] and [heap] mappings that only the child
maps (/proc/kpagecount 1), its content against the parent's page at the same address:
"same" (copied on write, then written back as it was: a reference count raised and
lowered), "diff<=N w" (at most N 8-byte words differ), "parent-zero" (the parent's
page is all zeros), "parent-absent" (the parent has no page there: new since the
fork), "unreadable" (the page went away while read). Needs root: the page frame
numbers of /proc/PID/pagemap, /proc/kpagecount and /proc/PID/mem. It only reads,
and prints only counts: no memory content.
"""
import os
import struct
import sys
from collections import Counter

PAGE = os.sysconf("SC_PAGE_SIZE")


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


def count(kpc, pfn):
    kpc.seek(pfn * 8)
    return struct.unpack("<Q", kpc.read(8))[0]


def read(mem, addr):
    """The page at `addr`, or None where it cannot be read whole."""
    try:
        mem.seek(addr)
        page = mem.read(PAGE)
    except OSError:
        return None
    return page if len(page) == PAGE else None


def classify(a, b):
    if a is None or b is None:
        return "unreadable"
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
    if len(sys.argv) != 3 or not all(arg.isdigit() for arg in sys.argv[1:]):
        sys.exit(f"usage: sudo {sys.executable} {sys.argv[0]} CHILD_PID PARENT_PID")
    if os.geteuid() != 0:
        sys.exit("cow_pages.py needs root: without it the kernel hides page frame numbers and /proc/kpagecount")
    child, parent = int(sys.argv[1]), int(sys.argv[2])
    totals = Counter()
    kinds = Counter()
    with (open("/proc/kpagecount", "rb", buffering=0) as kpc,
          open(f"/proc/{child}/mem", "rb", buffering=0) as child_mem,
          open(f"/proc/{parent}/mem", "rb", buffering=0) as parent_mem):
        for lo, hi, perms, path in maps(child):
            kind = "*.so" if ".so" in path else path if not path.startswith("/") else "file"
            if kind not in ("[anon]", "[heap]") or perms[0] != "r":  # a PROT_NONE reservation has no page
                continue
            cp = pfns(child, lo, hi)
            pp = pfns(parent, lo, hi)  # where the parent maps nothing, its entries say "not present"
            for i, pfn in enumerate(cp):
                if pfn is None or pfn == 0:
                    continue
                if count(kpc, pfn) != 1:
                    continue
                addr = lo + i * PAGE
                if pp[i] is None:
                    c = "parent-absent"
                else:
                    c = classify(read(child_mem, addr), read(parent_mem, addr))
                totals[(kind, c)] += 1
                kinds[kind] += 1
    for k, v in sorted(totals.items()):
        print(f"{k[0]:8} {k[1]:14} {v * PAGE / 1048576:7.1f} MiB")
    for k, v in kinds.items():
        print(f"{k:8} total private {v * PAGE / 1048576:7.1f} MiB")


if __name__ == "__main__":
    main()
