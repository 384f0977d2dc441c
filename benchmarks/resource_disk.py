"""Per-boot resource disk and swap work (issue 12), on the host: the broker's handler
(supervisor/privileged/resource_disk.py activate) from start to done, per step, on a sparse
file on a loop device, each boot in a private mount namespace of its own.

    /opt/guestagent/bin/python benchmarks/resource_disk.py [--rounds 5] [--disk-gib 8]
                                                           [--swap-mb 1024] [--fs ext4]

Two kinds of boot, each `--rounds` times on a fresh disk, medians reported:
- first boot after a (re)deploy: Azure's fresh disk (MBR, one NTFS partition, type 7):
  retype to 83, mkfs, mount, README, a new swap file (fallocate on ext4/xfs, zeros else) and
  mkswap;
- next boot (a reboot): the partition and the swap file are there: mount, README, checks.
swapon(2) is not called on the host (swap is the whole kernel's): the swap step is
everything but it. Run as root. On a kernel that parses no partition table, the partition
node is a second loop device (tests/integration/resource_disk/disk.py says why).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

STEPS = ("detect", "partition", "mkfs", "mount", "swap")


def in_namespace(conf_path: str) -> None:
    """One boot: the handler, timed; prints its result as JSON."""
    import config
    from supervisor.broker import Context
    from supervisor.privileged import resource_disk as rd
    conf = config.load(conf_path)
    ctx = Context(worker="provisioning", conf=conf, cancel=threading.Event())
    rd.swap_call = lambda name, fd: None   # never on the host: swap is the whole kernel's
    t0 = time.monotonic()
    r = rd.activate(ctx, {})
    r["total"] = time.monotonic() - t0
    json.dump(r, sys.stdout)


def boot(conf_path: str) -> dict:
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                        os.path.abspath(__file__), "--in-namespace", conf_path],
                       capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(p.stderr[-2000:])
    return json.loads(p.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--disk-gib", type=int, default=8)
    ap.add_argument("--swap-mb", type=int, default=1024)
    ap.add_argument("--fs", default="ext4")
    ap.add_argument("--in-namespace")
    a = ap.parse_args()
    if a.in_namespace:
        return in_namespace(a.in_namespace)
    from tests.integration.resource_disk.disk import loop_disk
    runs = {"first boot": [], "next boot": []}
    for _ in range(a.rounds):
        with tempfile.TemporaryDirectory(prefix="rd-bench-") as d:
            conf = os.path.join(d, "waagent.conf")
            with loop_disk(d, size_mib=a.disk_gib * 1024, layout="azure") as dev:
                with open(conf, "w") as f:
                    f.write("ResourceDisk.Format=y\nResourceDisk.Filesystem=%s\n"
                            "ResourceDisk.MountPoint=%s/mnt\nResourceDisk.Device=/dev/%s\n"
                            "ResourceDisk.EnableSwap=y\nResourceDisk.SwapSizeMB=%d\n"
                            "Provisioning.Agent=waagent\n" % (a.fs, d, dev, a.swap_mb))
                first = boot(conf)
                assert first["formatted"], first
                runs["first boot"].append(first)
                nxt = boot(conf)
                assert not nxt["formatted"], nxt
                runs["next boot"].append(nxt)
    print("resource disk %d GiB %s, swap %d MiB, %d rounds (median, ms)"
          % (a.disk_gib, a.fs, a.swap_mb, a.rounds))
    print("%-11s %8s" % ("", "total") + "".join("%10s" % s for s in STEPS))
    for kind, rs in runs.items():
        med = lambda k: statistics.median(r["seconds"][k] for r in rs) * 1000  # noqa: E731
        print("%-11s %8.1f" % (kind, statistics.median(r["total"] for r in rs) * 1000) +
              "".join("%10.1f" % med(s) for s in STEPS))


if __name__ == "__main__":
    main()
