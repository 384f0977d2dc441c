"""Memory of the idle process tree: PSS and USS per process and in total.

    sudo /opt/guestagent/bin/python benchmarks/idle_tree.py

1. fork+exec (what guestagentd does): a real guestagentd with its four skeleton workers, each
   importing what its real job will import (requests, cryptography, defusedxml).
2. a preloaded spawner (zygote), for comparison: one root process imports the same modules
   and the worker base before handling any data, then forks four children that drop to the
   worker users exactly as supervisor/spawn.py does (minus the exec) and idle. Pages the
   zygote loaded stay shared copy-on-write, so PSS splits them between the processes.

PSS (proportional set size) divides each shared page among its sharers, so the PSS column
adds up to what the tree really costs; USS is what a process alone would free on exit.
Measured after a 3 s settle, from /proc/PID/smaps_rollup through psutil.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.supervisor_bench import PYTHON, Tree  # noqa: E402

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


ZYGOTE = textwrap.dedent("""
    import os, pwd, grp, signal, sys, time
    import cryptography.hazmat.primitives.asymmetric.rsa, cryptography.hazmat.primitives.ciphers
    import cryptography.x509, defusedxml.ElementTree, requests
    import setproctitle, workers.base, ipc.channel
    from supervisor import spawn
    users = {"provisioning": "guestagent-prov", "monitoring": "guestagent-mon",
             "extensions": "guestagent-ext", "logcollector": "guestagent-logs"}
    wire = grp.getgrnam("guestagent-wire").gr_gid
    children = []
    for name, user in users.items():
        pid = os.fork()
        if pid == 0:
            for cap in range(spawn.CAP_LAST_CAP + 1):
                spawn.prctl(spawn.PR_CAPBSET_DROP, cap)
            os.setgroups([]); os.setresgid(wire, wire, wire)
            uid = pwd.getpwnam(user).pw_uid
            os.setresuid(uid, uid, uid)
            spawn.prctl(spawn.PR_SET_PDEATHSIG, signal.SIGKILL)
            spawn.prctl(spawn.PR_SET_NO_NEW_PRIVS, 1)
            setproctitle.setproctitle("zygote child: %s" % name)
            while True:
                time.sleep(3600)
        children.append(pid)
    print(" ".join(map(str, children)), flush=True)
    signal.sigwait([signal.SIGTERM])
    for pid in children:
        os.kill(pid, signal.SIGKILL)
""")


def main():
    with Tree() as tree:
        time.sleep(3)
        st = tree.status()
        pids = [("supervisor", st["supervisor"]["pid"])]
        pids += [(w["name"], w["pid"]) for w in st["workers"]]
        fork_exec = show("fork+exec (guestagentd and its workers, idle)", measure(pids))

    zyg = subprocess.Popen([PYTHON, "-c", ZYGOTE], stdout=subprocess.PIPE, text=True,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        children = [int(p) for p in zyg.stdout.readline().split()]
        time.sleep(3)
        rows = measure([("zygote (preloaded)", zyg.pid)] +
                       [("zygote child %d" % i, p) for i, p in enumerate(children)])
        zygote = show("preloaded spawner (zygote) + 4 forked children, idle "
                      "(no supervisor loop in it)", rows)
    finally:
        zyg.send_signal(signal.SIGTERM)
        zyg.wait(10)
    print("\nfork+exec tree PSS %.1f MiB; zygote + children PSS %.1f MiB; difference %.1f MiB"
          % (fork_exec / MiB, zygote / MiB, (fork_exec - zygote) / MiB))
    print("(the zygote line has no supervisor loop and its children idle in sleep(): add the "
          "supervisor's PSS from the first table for a like-for-like total)")

if __name__ == "__main__":
    main()
