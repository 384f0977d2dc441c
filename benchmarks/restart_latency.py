"""Worker crash -> RUNNING again: how long a kill -9 of a worker leaves a hole.

    sudo /opt/guestagent/bin/python benchmarks/restart_latency.py [--rounds 40]
        [--spawner zygote|exec|both]

Starts a real guestagentd (temporary config; Agent.FlapWindow=0.1 so every crash is the
first of its window — a worker that has run well crashes once — which is the case the figure
is about; repeated crashes are slowed by design). Each round SIGKILLs one worker (in turn)
and polls control.status over one connection every 2 ms until the worker is RUNNING with a
new pid, i.e. after its `worker.ready`. Prints median, p90 and max in milliseconds, plus the
supervisor's own spawn -> ready figure from supervisor.log, for each `Agent.Spawner` asked
(both by default: zygote, the default, then exec).
"""

import argparse
import os
import re
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.supervisor_bench import Tree  # noqa: E402


def run(method, rounds):
    samples = []
    # The spawner stays for the whole run (a retired one would make every restart an exec).
    with Tree(Agent__FlapWindow="0.1", Agent__Spawner=method,
              Agent__SpawnerRetireAfter="0") as tree:
        # The resident workers (provisioning has exited, logcollector runs on a timer).
        names = [w["name"] for w in tree.status()["workers"] if w["pid"]]
        time.sleep(1.0)
        for i in range(rounds):
            name = names[i % len(names)]
            old = next(w for w in tree.status()["workers"] if w["name"] == name)["pid"]
            t0 = time.monotonic()
            os.kill(old, signal.SIGKILL)
            while True:
                w = next(w for w in tree.status()["workers"] if w["name"] == name)
                if w["state"] == "RUNNING" and w["pid"] not in (None, old):
                    break
                time.sleep(0.002)
            samples.append((time.monotonic() - t0) * 1000)
            time.sleep(0.3)
        with open(os.path.join(tree.dir, "log", "supervisor.log")) as f:
            ready = [float(x) * 1000 for x in re.findall(r"event=running .* after=([\d.]+)s",
                                                         f.read())]
    samples.sort()
    print("Agent.Spawner=%s: crash -> RUNNING over %d kills: median %.0f ms, p90 %.0f ms, "
          "max %.0f ms" % (method, len(samples), statistics.median(samples),
                           samples[int(len(samples) * 0.9) - 1], samples[-1]))
    print("    of which spawn -> worker.ready (supervisor.log): median %.0f ms"
          % statistics.median(ready))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--spawner", choices=("zygote", "exec", "both"), default="both")
    args = p.parse_args()
    for method in (("zygote", "exec") if args.spawner == "both" else (args.spawner,)):
        run(method, args.rounds)


if __name__ == "__main__":
    main()
