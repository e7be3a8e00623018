"""A process's memory as Linux counts it, for the scoreboard and the recycler.

USS (unique set size: the pages only this process maps, Private_Clean +
Private_Dirty) is what a worker really costs and what recycling it would
free; RSS counts the pages it shares with the arbiter and the other workers
too. Both come from /proc/PID/smaps_rollup (Linux ≥ 4.14), one read of a
few hundred bytes. Where it cannot be read, the figure is None: absent,
never a made-up 0.
"""


def read_memory(pid):
    """(RSS, USS) of `pid` in bytes, or None."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rss = uss = 0
    for line in data.splitlines():
        name, _, rest = line.partition(b":")
        if name == b"Rss":
            rss = int(rest.split()[0]) * 1024
        elif name in (b"Private_Clean", b"Private_Dirty"):
            uss += int(rest.split()[0]) * 1024
    return rss, uss
