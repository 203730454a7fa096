#!/usr/bin/env python3
"""Processor time of one booking storm, by process: the servers (their pids, comma-separated
in argv[1]), the PostgreSQL backends and the storm client. Waits for the storm client to
write "started" into the file argv[2] (STORM_STARTED_FILE), reads every process's user +
system time from /proc, waits for "ended", reads again, removes the file (which lets the
client go on to its check) and prints the differences in milliseconds. Every process named
postgres counts (a second cluster on the machine would too)."""
import os
import sys
import time

TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def times(servers):
    """User + system clock ticks of every process of interest, by group."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])
        group = "server" if pid in servers else "postgres" if name == "postgres" else "client" if name == "booking_storm" else None
        if group:
            found[(group, pid)] = ticks
    return found


def wait_for(path, word):
    until = time.monotonic() + 600
    while time.monotonic() < until:
        try:
            with open(path) as f:
                if f.read() == word:
                    return
        except OSError:
            pass
        time.sleep(0.005)
    sys.exit(f"the storm never wrote {word!r} into {path}")


def main():
    servers, signal = set(sys.argv[1].split(",")), sys.argv[2]
    wait_for(signal, "started")
    before = times(servers)
    wait_for(signal, "ended")
    after = times(servers)
    os.remove(signal)
    spent = {"server": 0, "postgres": 0, "client": 0}
    for (group, pid), ticks in after.items():
        spent[group] += ticks - before.get((group, pid), 0)
    print("cpu_ms " + "  ".join(f"{g} {round(t * TICK_MS)}" for g, t in spent.items()))


main()
