"""What the monitoring rows of issue 14 cost: CPU of the monitoring worker and of the
supervisor (whose broker runs the OS-check verbs) per round, measured on the real tree against
the emulator on 127.0.0.1, with every period at 1 s so that a short run has many rounds.

    /opt/guestagent/bin/python benchmarks/monitoring_checks.py [--seconds 20]

Two runs, each after a warm-up: the HealthService heartbeat alone (HostGAPlugin /health, IMDS,
one POST), then the heartbeat with the three OS checks (SCSI timeouts on a fixture root with
four disks, persistent net rules, the WireServer route: one broker verb each). The idle tree's
own cost (heartbeats every Agent.HeartbeatInterval) is in both; the difference is the checks'.
Then, at waagent's periods (heartbeat 60 s, OS checks 30 s), CPU seconds per hour.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.supervisor_bench import Tree  # noqa: E402
from emulator.confinement import Emulator  # noqa: E402


def cpu(pid):
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def measure(emu, seconds, os_checks):
    root = "/tmp/guestagent-bench-sysroot-%d" % os.getpid()
    for disk in ("sda", "sdb", "sdc", "sdd"):
        os.makedirs(os.path.join(root, "sys/block", disk, "device"), exist_ok=True)
        open(os.path.join(root, "sys/block", disk, "device/timeout"), "w").write("30\n")
    conf = {k.replace(".", "__"): v for k, v in emu.conf().items()}
    conf.update(Provisioning__Agent="disabled", DVD__Device="/nonexistent",
                Protocol__HealthServicePeriod="1", Agent__HeartbeatInterval="5")
    if os_checks:
        conf.update(OS__SysRoot=root, OS__RootDeviceScsiTimeout="300",
                    OS__RootDeviceScsiTimeoutPeriod="1", OS__RemovePersistentNetRulesPeriod="1",
                    OS__MonitorDhcpClientRestartPeriod="1")
    lib = tempfile.mkdtemp(prefix="guestagent-bench-lib-")   # never the host's /var/lib/waagent
    conf.update(Lib__Dir=lib)
    with Tree(**conf) as tree:
        deadline = time.monotonic() + 60
        while True:                      # monitoring starts once provisioning has ended
            workers = {w["name"]: w for w in tree.status()["workers"]}
            if workers["monitoring"]["state"] == "RUNNING" and \
                    emu.state()["received"].get("health_service"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("no heartbeat: %r" % workers["monitoring"])
            time.sleep(0.1)
        mon, sup = workers["monitoring"]["pid"], tree.proc.pid
        time.sleep(3)                                        # warm-up: first rounds done
        beats0 = len(emu.state()["received"].get("health_service", []))
        c0 = (cpu(mon), cpu(sup))
        time.sleep(seconds)
        c1 = (cpu(mon), cpu(sup))
        beats = len(emu.state()["received"].get("health_service", [])) - beats0
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(lib, ignore_errors=True)
    return beats, (c1[0] - c0[0]) / seconds, (c1[1] - c0[1]) / seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    emu = Emulator()
    try:
        b1, mon1, sup1 = measure(emu, args.seconds, False)
        b2, mon2, sup2 = measure(emu, args.seconds, True)
    finally:
        emu.stop()
    print("heartbeat only : %d heartbeats in %.0f s; monitoring %.2f ms CPU/s, supervisor "
          "%.2f ms CPU/s" % (b1, args.seconds, mon1 * 1e3, sup1 * 1e3))
    print("+ 3 OS checks  : %d heartbeats in %.0f s; monitoring %.2f ms CPU/s, supervisor "
          "%.2f ms CPU/s" % (b2, args.seconds, mon2 * 1e3, sup2 * 1e3))
    per_beat = mon1 * args.seconds / max(b1, 1)
    per_os_round = max(0.0, (mon2 + sup2) - (mon1 + sup1))   # three checks a second
    print("per heartbeat round (monitoring, incl. idle ticks): %.1f ms CPU" % (per_beat * 1e3))
    print("per round of the 3 OS checks (monitoring + broker): %.1f ms CPU" %
          (per_os_round * 1e3))
    hour = per_beat * 60 + per_os_round * 120
    print("at waagent's periods (heartbeat 60 s, OS checks 30 s): %.2f s CPU per hour" % hour)


if __name__ == "__main__":
    main()
