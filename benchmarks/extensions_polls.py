"""Issue 13 figure: the extensions worker's PSS growth over N goal-state polls with no change
(period overridden to 0.1 s), target <= 1 MB after 10,000; beside it, the worker's CPU per poll
(user + system, its own process: where an idle poll's CPU goes, issue 17) and the
supervisor's (its broker side of the poll: `extensions.read_status`, asked since `91cc443` only
when the status folder changed, or once a minute).

    /opt/guestagent/bin/python benchmarks/extensions_polls.py [--polls 10000] [--warmup 200]

The whole agent runs in a confined host (emulator/confinement.py, as the integration tests)
against the emulator, with one real-contract extension installed and enabled (its status file
read back through the broker when it changed) and Extensions.GoalStatePeriod=0.1. A poll
is counted by its status-blob upload (one per loop). PSS of the extensions worker is read
after the warm-up and again after N more polls. Needs root. Prints one JSON line.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from emulator.confinement import ConfinedHost, Emulator  # noqa: E402

SCENARIOS = os.path.join(REPO, "emulator", "scenarios")
GOOD = os.path.join(REPO, "tests", "data", "extensions", "good")


def uploads(emu) -> int:
    counts = emu.control("GET", "state?since=999999999")["counts"]
    return sum(v.get("valid", 0) for k, v in counts.items() if k.lower() == "status")


def worker_pid(host) -> int:
    ns = host.mount_namespace()
    for p in psutil.process_iter(["username", "cmdline"]):
        try:
            # By its title: the confined host's users need not have names on this host.
            if "extensions [unpriv]" in " ".join(p.info["cmdline"]) and \
                    os.readlink("/proc/%d/ns/mnt" % p.pid) == ns:
                return p.pid
        except (OSError, psutil.Error):
            continue
    raise RuntimeError("no extensions worker")


def supervisor_pid(host) -> int:
    """The root supervisor (its process title), in the confined host."""
    ns = host.mount_namespace()
    for p in psutil.process_iter(["username", "cmdline"]):
        try:
            if p.info["username"] == "root" and \
                    "supervisor [priv]" in " ".join(p.info["cmdline"]) and \
                    os.readlink("/proc/%d/ns/mnt" % p.pid) == ns:
                return p.pid
        except (OSError, psutil.Error):
            continue
    raise RuntimeError("no supervisor")


def wait_polls(emu, target, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = uploads(emu)
        if n >= target:
            return n
        time.sleep(min(5.0, max(0.2, (target - n) * 0.05)))
    raise RuntimeError("only %d polls of %d" % (uploads(emu), target))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--polls", type=int, default=10000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--period", default="0.1")
    args = p.parse_args()
    with open(os.path.join(SCENARIOS, "default.json")) as f:
        scenario = json.load(f)
    for cert in scenario["certificates"]:
        for k in ("cert", "key"):
            cert[k] = os.path.join(SCENARIOS, cert[k])
    scenario["extensions"] = [{"name": "Bench.Good", "version": "1.0.0", "handler": GOOD,
                               "state": "enabled", "seq_no": 0,
                               "public_settings": {"a": 1}}]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "scenario.json")
        with open(path, "w") as f:
            json.dump(scenario, f)
        emu = Emulator(path)
        conf = dict(emu.conf())
        conf.update({"Provisioning.Agent": "disabled", "Extensions.GoalStatePeriod": args.period,
                     "Agent.HeartbeatInterval": "5",
                     # Retired during the warm-up: its exit moves the PSS of what it shared.
                     "Agent.SpawnerRetireAfter": "1"})
        host = ConfinedHost(conf)
        try:
            host.start()
            wait_polls(emu, args.warmup, 600)
            pid = worker_pid(host)
            before = psutil.Process(pid).memory_full_info()
            cpu_before = sum(psutil.Process(pid).cpu_times()[:2])
            sup = supervisor_pid(host)
            sup_before = sum(psutil.Process(sup).cpu_times()[:2])
            start_polls, started = uploads(emu), time.monotonic()
            wait_polls(emu, start_polls + args.polls, args.polls * 2 + 600)
            after = psutil.Process(pid).memory_full_info()
            cpu = sum(psutil.Process(pid).cpu_times()[:2]) - cpu_before
            sup_cpu = sum(psutil.Process(sup).cpu_times()[:2]) - sup_before
            assert worker_pid(host) == pid, "the worker was restarted"
            polls = uploads(emu) - start_polls
            seconds = time.monotonic() - started
            doc = emu.control("GET", "status")["latest_status"]["document"]
            ext = doc["aggregateStatus"]["handlerAggregateStatus"][0]
        finally:
            host.close()
            emu.stop()
    print(json.dumps({"polls": polls, "seconds": round(seconds, 1),
                      "pss_before_kib": before.pss // 1024, "pss_after_kib": after.pss // 1024,
                      "pss_growth_kib": (after.pss - before.pss) // 1024,
                      "uss_growth_kib": (after.uss - before.uss) // 1024,
                      "handler_status": ext["status"], "target_growth_kib": 1024,
                      "cpu_ms_per_poll": round(cpu * 1000 / polls, 2),
                      "supervisor_cpu_ms_per_poll": round(sup_cpu * 1000 / polls, 2),
                      "load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
