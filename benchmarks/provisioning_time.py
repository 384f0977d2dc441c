"""Provisioning time (issue 7): from `guestagentd` exec to the emulator recording Ready, on the
host, with the whole agent in a confined host (emulator/confinement.py) against the emulator's
default scenario.

    /opt/guestagent/bin/python benchmarks/provisioning_time.py [--rounds 5] [--host-keys rsa]

Each round is a first boot of a fresh confined host. Reported per round and as medians:
- total: guestagentd exec -> the emulator has recorded Ready (polled every 2 ms);
- host keys: the broker's ssh-keygen time (Provisioning.RegenerateSshHostKeyPair=y with the
  type given; `--host-keys none` skips it), reported apart, and total minus it;
- the breakdown the worker logs (event=provisioned): interpreter start and imports (with the
  zygote: from the worker's fork), OVF, goal state, each step; the spawner's start-up (its
  interpreter and preload, before the first spawn: the supervisor's event=spawner_start
  ready_after) apart; "supervisor to worker" is the rest before the worker's first step;
- the provisioning worker's peak memory (VmHWM).
Run as root (namespaces, useradd in a copied /etc).
"""

import argparse
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emulator.confinement import ConfinedHost, Emulator  # noqa: E402

LINE = re.compile(r"event=provisioned user=\S+ total=([\d.]+) host_keys=([\d.]+) "
                  r"peak_kib=(\d+) steps: (.*)$", re.M)
SPAWNER = re.compile(r"event=spawner_start pid=\d+ starts=1 ready_after=([\d.]+)s")


def one_round(host_keys: str) -> dict:
    emu = Emulator()
    conf = dict(emu.conf())
    if host_keys != "none":
        conf.update({"Provisioning.RegenerateSshHostKeyPair": "y",
                     "Provisioning.SshHostKeyPairType": host_keys})
    # Production timings: nothing here is shortened but the test-only retry delays, unused
    # on a healthy emulator.
    conf.update({"Agent.HeartbeatInterval": "5", "Agent.ReadyTimeout": "60"})
    host = ConfinedHost(conf)
    try:
        host.write_media()
        host.start()
        t0 = host.exec_time()
        deadline = time.monotonic() + 60
        ready_at = None
        while time.monotonic() < deadline:
            if any((r["document"] or {}).get("state") == "Ready" for r in emu.health()):
                ready_at = time.time()
                break
            time.sleep(0.002)
        if ready_at is None:
            raise RuntimeError("no Ready in 60 s:\n" + host.all_logs()[-3000:])
        log = host.wait_log("event=provisioned ", 30)
        sup_log = host.log("supervisor")
    finally:
        host.close()
        emu.stop()
    m = LINE.search(log)
    steps = dict((k, float(v)) for k, v in (s.split("=") for s in m.group(4).split()))
    total = ready_at - t0
    worker_work = sum(steps.values())
    sp = SPAWNER.search(sup_log)
    spawner = float(sp.group(1)) if sp else 0.0
    return {"total": total, "host_keys": float(m.group(2)),
            "without_host_keys": total - float(m.group(2)),
            "spawner": spawner,
            "supervisor_to_worker": max(0.0, total - worker_work - spawner),
            "peak_mib": int(m.group(3)) / 1024.0, "steps": steps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--host-keys", default="rsa", choices=("none", "rsa", "ecdsa", "ed25519",
                                                            "auto"))
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    rounds = []
    for i in range(args.rounds):
        r = one_round(args.host_keys)
        rounds.append(r)
        print("round %d: total %.3f s, host keys %.3f s, without host keys %.3f s, peak %.1f MiB"
              % (i + 1, r["total"], r["host_keys"], r["without_host_keys"], r["peak_mib"]))

    def med(key):
        return statistics.median(r[key] for r in rounds)
    print("\nmedian of %d rounds (host keys: %s)" % (len(rounds), args.host_keys))
    print("| | seconds |\n|---|---|")
    print("| guestagentd exec, imports, config, spawn to the worker's first line | %.3f |"
          % med("supervisor_to_worker"))
    print("| spawner start-up before the first spawn (interpreter, preload, warm-up) | %.3f |"
          % med("spawner"))
    for name in rounds[0]["steps"]:
        print("| %s | %.3f |" % (name.replace("_", " "),
                                 statistics.median(r["steps"].get(name, 0.0) for r in rounds)))
    print("| **total: guestagentd start -> Ready recorded** | **%.3f** |" % med("total"))
    print("| host-key generation (inside the total) | %.3f |" % med("host_keys"))
    print("| **total without host keys** (target <= 1 s) | **%.3f** |" % med("without_host_keys"))
    print("| provisioning worker peak memory (VmHWM) | %.1f MiB |" % med("peak_mib"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
