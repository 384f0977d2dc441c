"""Collection of a 150 MiB log set (issue 15): wall time, CPU time, peak anonymous memory of
the collector, bundle size.

    sudo /opt/guestagent/bin/python benchmarks/logcollector.py [--mib 150] [--cpu-quota 100]

Starts a real guestagentd (temporary config, Logs.CollectRoot and Lib.Dir in a temporary
tree) and writes a log set of --mib MiB under <root>/var/log/azure (extension logs of varied,
log-like lines: timestamps, counters, hex ids, so deflate sees realistic text), then runs
`agentctl collect-logs` once. The collector runs as it does in production — its own uid, its
memory and cpu cgroups (without systemd) at Logs.CollectorCpuQuota (default here 100 %: the
figure is the work; at the shipped 5 % the wall time is ~20x) — and reports its own figures
(last-collection.json: wall and CPU of the collection, peak anonymous memory sampled every
0.2 s); this script samples the worker's RssAnon from outside every 20 ms as well. The upload
goes nowhere (no emulator: one refused connection) and is not in the figures.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import tempfile
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.supervisor_bench import Tree  # noqa: E402

MiB = 1024 * 1024
AGENTCTL = os.path.join(os.path.dirname(sys.executable), "agentctl")


def make_logs(root, total_mib):
    rng = random.Random(15)
    folder = os.path.join(root, "var", "log", "azure")
    files = max(1, total_mib // 25)
    per = total_mib * MiB // files
    levels = ("INFO", "INFO", "INFO", "WARNING", "ERROR")
    for i in range(files):
        path = os.path.join(folder, "Contoso.Bench.Ext%d" % (i % 3), "extension.%d.log" % i)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            written, n = 0, 0
            while written < per:
                n += 1
                line = ("2026-12-04T09:%02d:%02d.%06dZ %s [Ext%d] op=%s seq=%d id=%032x took=%dms "
                        "%s\n" % (n // 60 % 60, n % 60, rng.randrange(10 ** 6),
                                  rng.choice(levels), i, rng.choice(("enable", "install",
                                                                     "update", "status")),
                                  n, rng.getrandbits(128), rng.randrange(5000),
                                  "handler step completed" * rng.randrange(1, 4)))
                f.write(line)
                written += len(line)


def sample(pid_of, peak, stop):
    while not stop.is_set():
        pid = pid_of()
        if pid:
            try:
                with open("/proc/%d/status" % pid) as f:
                    anon = int(f.read().split("RssAnon:")[1].split()[0]) * 1024
                peak[0] = max(peak[0], anon)
            except (OSError, IndexError, ValueError):
                pass
        time.sleep(0.02)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=150)
    parser.add_argument("--cpu-quota", type=int, default=100)
    args = parser.parse_args()
    logs = tempfile.mkdtemp(prefix="guestagent-bench-logs-", dir="/tmp")
    os.chmod(logs, 0o755)
    try:
        make_logs(os.path.join(logs, "sysroot"), args.mib)
        measure(args, logs)
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def measure(args, logs):
    with Tree(Logs__Collect="n", Logs__CollectorCpuQuota=str(args.cpu_quota),
              Logs__CollectRoot=os.path.join(logs, "sysroot"), Lib__Dir=os.path.join(logs, "lib"),
              Provisioning__Agent="disabled", Protocol__Endpoint="127.0.0.1:9",
              Protocol__DetectionAttempts="1", Protocol__HttpAttempts="1",
              Protocol__RetryDelay="0", DVD__Device="/nonexistent",
              Debug__LogCollectorInitialDelay="3600") as tree:
        peak, stop = [0], threading.Event()

        def pid_of():
            return next((w["pid"] for w in tree.status()["workers"]
                         if w["name"] == "logcollector"), None)
        sampler = threading.Thread(target=sample, args=(pid_of, peak, stop), daemon=True)
        sampler.start()
        t0 = time.monotonic()
        r = subprocess.run([AGENTCTL, "--config", tree.conf, "collect-logs"],
                           capture_output=True, text=True, timeout=3600)
        elapsed = time.monotonic() - t0
        stop.set()
        sampler.join()
        if r.returncode != 0:
            sys.exit("collect-logs failed: %s %s" % (r.stdout, r.stderr))
        with open(os.path.join(tree.dir, "state", "logcollector", "last-collection.json")) as f:
            s = json.load(f)
        print("log set: %d MiB in var/log/azure (+ the agent's own logs); CPU quota %d %%"
              % (args.mib, args.cpu_quota))
        print("collection: wall %.1f s, CPU %.1f s (the whole agentctl run: %.1f s, upload "
              "attempt included)" % (s["wall"], s["cpu"], elapsed))
        print("peak anonymous memory: collection %.1f MiB, whole run with the upload %.1f MiB "
              "(the worker's own sampling every 0.2 s), %.1f MiB (sampled from outside every "
              "20 ms); budget %.1f MiB" % (s["peak_anon_collection"] / MiB, s["peak_anon"] / MiB,
                                          peak[0] / MiB, s["budget"] / MiB))
        print("bundle: %.1f MiB from %.1f MiB archived (%d files), %d left out, partial: %s"
              % (s["size"] / MiB, s["bytes"] / MiB, s["files"], len(s["left_out"]),
                 s["partial"] or "no"))


if __name__ == "__main__":
    main()
