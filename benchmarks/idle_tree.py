"""Memory of the idle process tree: PSS and USS per process and in total.

    sudo /opt/guestagent/bin/python benchmarks/idle_tree.py

Runs a real guestagentd with its four skeleton workers (each importing what its real job will
import: requests, cryptography, defusedxml) twice, once per `Agent.Spawner`:
1. zygote (the default): the workers are forked from the preloaded spawner
   (spawner/); the spawner is part of the tree and counted in the total.
2. exec: each worker is fork+exec'd and imports everything itself.

PSS (proportional set size) divides each shared page among its sharers, so the PSS column
adds up to what the tree really costs; USS is what a process alone would free on exit.
Measured after a 3 s settle, from /proc/PID/smaps_rollup through psutil.
"""

import os
import sys
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.supervisor_bench import Tree  # noqa: E402

MiB = 1024 * 1024


def measure(pids):
    rows = []
    for label, pid in pids:
        info = psutil.Process(pid).memory_full_info()
        rows.append((label, pid, info.pss, info.uss, info.rss))
    return rows


def show(title, rows):
    print("\n%s" % title)
    print("  %-28s %8s %9s %9s %9s" % ("process", "pid", "PSS MiB", "USS MiB", "RSS MiB"))
    for label, pid, pss, uss, rss in rows:
        print("  %-28s %8d %9.1f %9.1f %9.1f" % (label, pid, pss / MiB, uss / MiB, rss / MiB))
    print("  %-28s %8s %9.1f %9.1f" % ("total", "", sum(r[2] for r in rows) / MiB,
                                        sum(r[3] for r in rows) / MiB))
    return sum(r[2] for r in rows)


SPAWNER_TITLE = "guestagent: spawner [priv]"
REAPER_TITLE = "guestagent: reaper [priv]"   # supervisor/trees.py: kills worker trees at the end


def tree_pids(tree):
    st = tree.status()
    sup = st["supervisor"]["pid"]
    pids = [("supervisor", sup)]
    pids += [(c.cmdline()[0].split()[1], c.pid) for c in psutil.Process(sup).children()
             if c.cmdline()[:1] in ([SPAWNER_TITLE], [REAPER_TITLE])]
    pids += [(w["name"], w["pid"]) for w in st["workers"] if w["pid"]]   # resident ones
    return pids


def main():
    totals = {}
    for method in ("zygote", "exec"):
        with Tree(Agent__Spawner=method) as tree:
            time.sleep(3)
            totals[method] = show("Agent.Spawner=%s (guestagentd and its workers, idle)"
                                  % method, measure(tree_pids(tree)))
    print("\nzygote tree PSS %.1f MiB; fork+exec tree PSS %.1f MiB; saved %.1f MiB"
          % (totals["zygote"] / MiB, totals["exec"] / MiB,
             (totals["exec"] - totals["zygote"]) / MiB))


if __name__ == "__main__":
    main()
