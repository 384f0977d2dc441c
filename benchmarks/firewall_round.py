"""What one WireServer firewall round costs the broker (issue 14): the handler of
firewall.apply run as the broker runs it, as root inside a network namespace this script
creates (never the host's rules), with the address 10.214.0.16 standing in for the WireServer.

  install: the table missing (deleted before each round): list, install in one transaction,
           list again, plus the look for waagent's leftovers;
  check:   nothing to change: one listing compared with the last install, plus the look for
           waagent's leftovers (nft list tables, iptables -S of the security table).

Usage: python benchmarks/firewall_round.py [--rounds 20]   (root; nft installed)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

INNER = r"""
import json, subprocess, sys, threading, time
from config import defaults
from supervisor import broker
from supervisor.privileged import firewall
rounds = int(sys.argv[1])
conf = defaults().with_overrides(OS__EnableFirewall=True, Protocol__Endpoint="10.214.0.16:80")
ctx = broker.Context("monitoring", conf, threading.Event())
out = {"install": [], "check": []}
for kind in ("install", "check"):
    for _ in range(rounds):
        if kind == "install":
            subprocess.run(["nft", "delete", "table", "inet", "guestagent"], capture_output=True)
        firewall.STATE.last = None
        t0 = time.perf_counter()
        r = firewall.apply(ctx, {})
        out[kind].append((time.perf_counter() - t0) * 1000)
        assert bool(r["changed"]) == (kind == "install"), r
print(json.dumps(out))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    ns = "gafwbench%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", INNER,
                            str(a.rounds)], capture_output=True, text=True, cwd=ROOT,
                           check=True)
        data = json.loads(r.stdout)
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    for kind, ms in data.items():
        print("%-8s rounds=%d median=%.1f ms p90=%.1f ms" % (
            kind, len(ms), statistics.median(ms), sorted(ms)[int(len(ms) * 0.9) - 1]))


if __name__ == "__main__":
    main()
