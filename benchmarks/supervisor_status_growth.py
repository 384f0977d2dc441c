"""Issue 17 §3 figure: the supervisor's PSS growth over N `agentctl status` calls, target
<= 1 MB after 100,000.

    sudo /opt/guestagent/bin/python benchmarks/supervisor_status_growth.py [--calls 100000]

A real guestagentd with its workers (benchmarks/supervisor_bench.py's Tree, temporary config
under /tmp; run `python -m cli.accounts install` once). Each call is what one `agentctl status`
does to the supervisor: a new connection to the control socket, `control.status`, close
(cli.agentctl.call, in this process: starting 100,000 interpreters would measure the host's
fork rate, not the supervisor). PSS and USS of the supervisor (smaps_rollup) after --warmup
calls and again after --calls more. Prints one JSON line.
"""

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.supervisor_bench import Tree  # noqa: E402
from cli import agentctl  # noqa: E402


def rollup(pid):
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return {"pss": out["Pss"], "uss": out["Private_Clean"] + out["Private_Dirty"],
            "rss": out["Rss"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100000)
    ap.add_argument("--warmup", type=int, default=2000)
    args = ap.parse_args()
    with Tree() as tree:
        sock = os.path.join(tree.dir, "run", "control.sock")
        sup = tree.status()["supervisor"]["pid"]
        for _ in range(args.warmup):
            agentctl.call(sock, "control.status", {})
        before = rollup(sup)
        t0 = time.monotonic()
        for _ in range(args.calls):
            result, _ = agentctl.call(sock, "control.status", {})
        secs = time.monotonic() - t0
        after = rollup(sup)
        workers = {w["name"]: w["state"] for w in result["workers"]}
    print(json.dumps({"calls": args.calls, "warmup": args.warmup, "seconds": round(secs, 1),
                      "supervisor_pid": sup, "before_kib": before, "after_kib": after,
                      "pss_growth_kib": after["pss"] - before["pss"],
                      "uss_growth_kib": after["uss"] - before["uss"],
                      "workers": workers, "target_growth_kib": 1024}))


if __name__ == "__main__":
    main()
