"""Footprint beside Debian's waagent, in the same VM image (issue 17 §1).

    sudo /usr/bin/python3 benchmarks/footprint_vm.py [--settle 60] [--window 180] [--boots 1]
                                                     [--json OUT]

One image, booted twice under QEMU (the system-test harness, tests/system/guestvm) against the
emulator's default scenario (provisioning from the DVD with a certificate-borne key, custom
data, one extension): once with Debian bookworm's own `waagent` package (2.7.3.0) started,
once with guestagent. Neither unit is enabled: each run boots, then `systemctl start`s one.

The image: the harness's base rootfs, then what an image that ran waagent looks like (test_deb.py
does the same): Debian's waagent and what it needs beyond the base (python3-distro,
lsb-release, and eject, which waagent runs on the DVD), installed from the host's apt sources
(`apt-get download`, the same bookworm archive mmdebstrap built the base from), with
`Provisioning.Agent=waagent` and the harness's QEMU keys in /etc/waagent.conf; then guestagent's
`make install` over it (which keeps that /etc/waagent.conf: both agents read the same file).
Both own /usr/sbin/waagent; each run puts its agent's copy there before the start. For
waagent, which knows nothing of QEMU:
- a drop-in clears `ConditionVirtualization=microsoft` on walinuxagent.service;
- /var/lib/dhcp/dhclient.eth0.leases carries `option unknown-245 a:0:2:64;`, so its lease-cache
  lookup finds the emulator at 10.0.2.100 (the guest runs systemd-networkd, no dhclient);
- both runs add `ip rule add prohibit to 168.63.129.16` and `... 169.254.169.254` before the
  start, so neither agent reaches the real platform addresses (QEMU's restrict=on already drops
  the packets; the rule makes a connect fail at once instead of timing out).

Printed for each agent:
- start → Ready: from the host's clock just before `systemctl start --no-block` (over ssh) to
  the time the emulator recorded the first health report with state Ready;
- per process, over an idle window starting --settle seconds after Ready and lasting --window
  seconds: RSS, PSS and USS (Private_Clean + Private_Dirty) from /proc/PID/smaps_rollup, read
  every --interval seconds with `cat` over ssh (no Python runs in the guest during the window:
  another interpreter would share the agents' pages and lower their PSS); the mean over the
  samples in which the process existed, and the tree's total per sample (mean and max);
- CPU of the unit's cgroup over the window (cgroup v2 cpu.stat usage_usec, guest clock), as % of
  one vCPU;
- the floor: after the window, the PSS of a bare `python3 -c 'import time; time.sleep(60)'`
  started beside the running agent;
- SSH host keys apart: guestagent's own logged ssh-keygen time, and for both agents the same
  three key types generated again in the guest after the window (waagent logs no figure), so
  start → Ready is printed with and without them;
- the ratios guestagent / waagent;
- the same work for both: waagent cannot find the resource disk in QEMU (it looks for Hyper-V's
  IDE topology), so each run sets ResourceDisk.Format=n before the start, and neither formats
  it; --resource-disk keeps the harness's =y (guestagent then formats /dev/vdb, waagent fails
  at once);
- with --boots N, N boots of each agent (taking turns) for start -> Ready and the host keys,
  as median (min–max) and the ratio of the medians: one boot's figure moves by seconds (the
  RSA prime searches, waagent's ifdown retries).

Each run takes about boot (30–60 s) + start → Ready + settle + window + 30 s; each further
boot about 1–2 minutes.
"""

import argparse
import datetime
import hashlib
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "tests" / "system"))

from guestvm import image as _image  # noqa: E402
from guestvm.image import QEMU_CONFIG, AgentImage, _Lock, _run  # noqa: E402
from guestvm.services import Emulator  # noqa: E402
from guestvm.vm import VM  # noqa: E402

# guestagent goes in with `make install` (its .deb conflicts with waagent's, and both agents
# must be in the one image), into the README's default venv.
GUEST_VENV = "/opt/guestagent"

SCENARIO = PROJECT / "emulator" / "scenarios" / "default.json"
DEBS = ("waagent", "python3-distro", "lsb-release", "eject")
VM_UUID = "13579bdf-2468-ace0-1357-9bdf2468ace0"
#: Where the image keeps each agent's /usr/sbin/waagent; a run copies its own into place.
SBIN_COPIES = "/usr/local/lib/footprint"
LEASE = """lease {
  interface "eth0";
  fixed-address 10.0.2.15;
  option subnet-mask 255.255.255.0;
  option routers 10.0.2.2;
  option dhcp-lease-time 4294967295;
  option dhcp-message-type 5;
  option dhcp-server-identifier 10.0.2.2;
  option unknown-245 a:0:2:64;
  renew 0 2152/07/23 23:27:10;
  rebind 0 2152/07/23 23:27:10;
  expire 0 never;
}
"""
DROPIN = "[Unit]\n# QEMU is not Hyper-V: the benchmark runs waagent there anyway.\nConditionVirtualization=\n"
POLICY_RC = "#!/bin/sh\nexit 101\n"
AGENTS = {
    "waagent": {"unit": "walinuxagent.service", "sbin": "waagent.debian"},
    "guestagent": {"unit": "guestagent.service", "sbin": "waagent.guestagent"},
}
PROHIBIT = ("ip rule add prohibit to 168.63.129.16; ip rule add prohibit to 169.254.169.254; "
            "ip rule show | grep -c prohibit")
# The same work for both (unless --resource-disk): waagent finds the resource disk by Hyper-V's
# IDE topology, which QEMU has not ("[ResourceDiskError] unable to detect disk topology", at
# once), while guestagent finds /dev/vdb by the harness's ResourceDisk.Device and partitions,
# formats and mounts it on the path to Ready (2-4 s of a boot's CPU under TCG). On Azure both
# format it before provisioning; here only one of them could.
NO_RESOURCE_DISK = r"sed -i 's/^ResourceDisk\.Format=.*/ResourceDisk.Format=n/' /etc/waagent.conf"
KiB = 1024


def log(msg):
    print("footprint: %s" % msg, file=sys.stderr, flush=True)


# ---- the image ----------------------------------------------------------------------------
def source_files():
    """The files `make install` installs from: what git tracks in this checkout."""
    out = subprocess.run(["git", "-C", str(PROJECT), "ls-files", "-z"], check=True,
                         capture_output=True).stdout
    return [PROJECT / n for n in sorted(out.decode().split("\0")) if n and (PROJECT / n).is_file()]


def image_key(base, packages):
    h = hashlib.sha256()
    h.update(_image.base_key().encode())
    # A base rebuilt under the same key has a new ssh key (and kernel): this image bakes both.
    h.update(base.key.with_suffix(".pub").read_bytes())
    h.update(base.kernel.read_bytes())
    recipe = inspect.getsource(build_image) + LEASE + DROPIN + SBIN_COPIES
    h.update(recipe.encode())
    h.update(QEMU_CONFIG.encode())
    for p in packages:
        h.update(p.name.encode())
    for f in source_files():
        h.update(str(f.relative_to(PROJECT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def build_image():
    base = _image.build_base()
    packages = _image.debian_debs(DEBS)
    cache = _image.cache_root()
    out = cache / ("footprint-" + image_key(base, packages))
    with _Lock(cache / ".footprint.lock"):
        if (out / ".complete").exists():
            return AgentImage(out, base)
        t0 = time.monotonic()
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        blog = out / "build.log"
        rootfs = out / "rootfs"
        log("building the benchmark image %s (log %s)" % (out.name, blog))
        try:
            _run(["cp", "-a", "--reflink=auto", str(base.rootfs), str(rootfs)], log=blog)
            (rootfs / "usr/sbin/policy-rc.d").write_text(POLICY_RC)
            os.chmod(rootfs / "usr/sbin/policy-rc.d", 0o755)
            drop = rootfs / "tmp/debs"
            drop.mkdir()
            for p in packages:
                shutil.copy(p, drop)
            _run(["chroot", str(rootfs), "sh", "-c", "dpkg -i /tmp/debs/*.deb"], log=blog)
            shutil.rmtree(drop)
            conf = rootfs / "etc/waagent.conf"
            text = conf.read_text()
            assert "Provisioning.Agent=cloud-init\n" in text, "Debian's waagent.conf changed"
            conf.write_text(text.replace("Provisioning.Agent=cloud-init\n",
                                         "Provisioning.Agent=waagent\n") + QEMU_CONFIG)
            copies = rootfs / SBIN_COPIES.lstrip("/")
            copies.mkdir(parents=True)
            shutil.copy2(rootfs / "usr/sbin/waagent", copies / "waagent.debian")
            env = {k: v for k, v in os.environ.items()
                   if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "VENV",
                                "DESTDIR", "WHEEL")}
            _run(["make", "-C", str(PROJECT), "--no-print-directory", "install",
                  "DESTDIR=%s" % rootfs, "VENV=%s" % GUEST_VENV],
                 log=blog, env=env)
            shutil.copy2(rootfs / "usr/sbin/waagent", copies / "waagent.guestagent")
            # Neither agent starts at boot: each run starts its own.
            _run(["chroot", str(rootfs), "systemctl", "disable", "walinuxagent.service"],
                 log=blog)
            _run(["chroot", str(rootfs), "sh", "-c", "update-rc.d walinuxagent disable || true"],
                 log=blog)
            dropin = rootfs / "etc/systemd/system/walinuxagent.service.d"
            dropin.mkdir(parents=True)
            (dropin / "qemu.conf").write_text(DROPIN)
            (rootfs / "var/lib/dhcp").mkdir(parents=True, exist_ok=True)
            (rootfs / "var/lib/dhcp/dhclient.eth0.leases").write_text(LEASE)
            os.unlink(rootfs / "usr/sbin/policy-rc.d")
            _run(["mkfs.ext4", "-q", "-F", "-L", "vmroot", "-E", "root_owner=0:0", "-d",
                  str(rootfs), str(out / "root.raw"), _image.DISK_SIZE], log=blog)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
        (out / ".complete").touch()
        log("image built in %.0f s" % (time.monotonic() - t0))
        _image._prune(cache, "footprint-", keep=out.name, count=1)
        return AgentImage(out, base)


# ---- one run ------------------------------------------------------------------------------
SAMPLE = r"""
cg=/sys/fs/cgroup$(systemctl show -p ControlGroup --value %(unit)s)
echo "uptime $(cut -d' ' -f1 /proc/uptime)"
echo "cpu $(sed -n 's/^usage_usec //p' $cg/cpu.stat)"
echo "hz $(getconf CLK_TCK)"
for p in $(cat $(find $cg -name cgroup.procs)); do
  r=$(cat /proc/$p/smaps_rollup 2>/dev/null) || continue
  t=$(sed 's/^.*) //' /proc/$p/stat | cut -d' ' -f12-15 | awk '{print $1+$2+$3+$4}')
  echo "proc $p $(printf %%s "$r" | awk '/^(Rss|Pss|Private_Clean|Private_Dirty):/ {printf "%%s=%%s ", $1, $2}') Ticks:=$t $(tr '\0' ' ' < /proc/$p/cmdline | cut -c1-120)"
done
"""

SMAPS = r"""
cg=/sys/fs/cgroup$(systemctl show -p ControlGroup --value %(unit)s)
for p in $(cat $(find $cg -name cgroup.procs)); do
  echo "== $p $(tr '\0' ' ' < /proc/$p/cmdline | cut -c1-120)"; cat /proc/$p/smaps
done
"""


def parse_sample(text):
    out = {"procs": {}}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "uptime":
            out["uptime"] = float(rest)
        elif kind == "cpu":
            out["cpu_usec"] = int(rest)
        elif kind == "hz":
            out["hz"] = int(rest)
        elif kind == "proc":
            pid, _, rest = rest.partition(" ")
            fields, cmd = {}, []
            for tok in rest.split(" "):
                if "=" in tok and tok.split("=")[0].endswith(":"):
                    k, v = tok.split("=")
                    fields[k[:-1]] = int(v)
                elif tok:
                    cmd.append(tok)
            if "Pss" in fields:
                out["procs"][int(pid)] = {
                    "cmd": " ".join(cmd), "rss": fields["Rss"], "pss": fields["Pss"],
                    "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
                    # user + system CPU, its own and its reaped children's (clock ticks)
                    "ticks": fields.get("Ticks", 0)}
    return out


def ready_time(emu):
    for r in emu.state()["received"]["health"]:
        if ((r.get("document") or {}).get("state")) == "Ready":
            t = datetime.datetime.strptime(r["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
            return t.replace(tzinfo=datetime.timezone.utc).timestamp()
    return None


def run_agent(name, img, workdir, args, boot=0):
    """One boot of `name`'s VM: start -> Ready, then (boot 0 only) the idle window. A later
    boot (--boots) measures start -> Ready and the host keys alone."""
    unit = AGENTS[name]["unit"]
    tag = name if not boot else "%s-boot%d" % (name, boot)
    emu = Emulator(SCENARIO, workdir / ("%s-emulator" % tag)).start()
    vm = VM(img, workdir / ("%s-vm" % tag), name="footprint-" + name, forwards=emu.forwards,
            dvd=emu.media(workdir / ("%s-dvd" % tag), iso=True), vm_uuid=VM_UUID)
    res = {"agent": name, "unit": unit}
    try:
        log("%s: booting" % name)
        vm.start()
        res["boot_to_ssh_s"] = vm.boots[0]
        vm.run("cp %s/%s /usr/sbin/waagent && %s" % (SBIN_COPIES, AGENTS[name]["sbin"], PROHIBIT),
               check=True)
        if not args.resource_disk:
            vm.run(NO_RESOURCE_DISK, check=True)
        res["resource_disk"] = args.resource_disk
        # Let the boot's own work (systemd units after multi-user) settle first.
        vm.run("systemctl is-system-running --wait", timeout=300)
        load_start = os.getloadavg()[0]
        t0 = time.time()
        vm.run("systemctl start --no-block %s" % unit, check=True)
        res["start_ssh_s"] = time.time() - t0   # the start ran somewhere in this interval
        deadline = time.monotonic() + args.ready_timeout
        t_ready = None
        while time.monotonic() < deadline:
            t_ready = ready_time(emu)
            if t_ready:
                break
            time.sleep(0.5)
        if t_ready is None:
            tail = vm.run("systemctl status %s --no-pager | tail -20; journalctl -u %s "
                          "--no-pager | tail -60" % (unit, unit)).out
            raise RuntimeError("%s: no Ready within %d s\n%s" % (name, args.ready_timeout, tail))
        res["start_to_ready_s"] = t_ready - t0
        if boot:
            log("%s: boot %d: start -> Ready %.1f s" % (name, boot, res["start_to_ready_s"]))
            time.sleep(5)   # the agent's log lines after Ready
            res["host_keys_s"] = host_keys_seconds(vm, name, save_agent_log(vm, unit, workdir,
                                                                            tag))
            return res
        log("%s: start -> Ready %.1f s; settling %d s" % (name, res["start_to_ready_s"],
                                                          args.settle))
        time.sleep(max(0.0, t_ready + args.settle - time.time()))
        script = SAMPLE % {"unit": shlex.quote(unit)}
        samples = []
        t_end = time.monotonic() + args.window
        while True:
            samples.append(parse_sample(vm.run(script, check=True).out))
            left = t_end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(args.interval, left))
        res.update(summarise(samples))
        # TCG guest speed follows the host's load: keep it beside the figures.
        res["host_load"] = {"at_start": load_start, "after_window": os.getloadavg()[0]}
        # The floor: a bare interpreter beside the running agent.
        floor = vm.run("python3 -c 'import time; time.sleep(120)' & p=$!; sleep 5; "
                       "awk '/^(Rss|Pss|Private_Clean|Private_Dirty):/ {print $1, $2}' "
                       "/proc/$p/smaps_rollup; kill $p", check=True).out
        f = {k.rstrip(":"): int(v) for k, v in (line.split() for line in floor.splitlines())}
        res["floor"] = {"rss": f["Rss"], "pss": f["Pss"],
                        "uss": f["Private_Clean"] + f["Private_Dirty"]}
        res["emulator"] = {k: len(v) for k, v in emu.state()["received"].items()}
        # Each process's memory mapping by mapping, saved beside the logs: where it is.
        (workdir / ("%s-smaps.txt" % name)).write_text(vm.run(SMAPS % {"unit": shlex.quote(unit)},
                                                             timeout=120).out)
        res["agent_version"] = vm.run("/usr/sbin/waagent -version 2>&1 | head -1").out.strip()
        log_text = save_agent_log(vm, unit, workdir, tag)
        res["unit_state"] = vm.run("systemctl show -p ActiveState,NRestarts,ControlGroup %s"
                                   % unit).out.split()
        res["host_keys_s"] = host_keys_seconds(vm, name, log_text)
    finally:
        vm.stop()
        vm.discard_disks()
        emu.stop()
    return res


def save_agent_log(vm, unit, workdir, tag):
    """The agent's own account of the boot, saved beside the VM's logs (for why Ready took so
    long, and the host keys' figures); returned."""
    text = vm.run("cat /var/log/waagent.log 2>/dev/null; journalctl -b -u %s --no-pager "
                  "-o short-monotonic" % unit, timeout=300).out
    (workdir / ("%s-agent.log" % tag)).write_text(text)
    return text


# SSH host keys inside start -> Ready, reported apart (issue 17): both agents regenerate them
# under the shared /etc/waagent.conf (Debian's: RegenerateSshHostKeyPair=y, type auto = rsa,
# ecdsa and ed25519). guestagent's broker logs how long its ssh-keygen runs took; waagent's log
# has no figure, so the same three types are generated again in the guest after the window
# (`ssh-keygen -A` into a scratch root), timed with the guest's clock, for both agents.
HOST_KEYS_LOGGED = re.compile(r"event=host_keys_generated .*?seconds=([0-9.]+)")
# guestagent makes them while provisioning goes on: what Ready waited for them is the
# provisioning worker's host_keys step (its wait for the broker's reply).
HOST_KEYS_WAITED = re.compile(r"event=provisioned .*? steps: .*?\bhost_keys=([0-9.]+)")
HOST_KEYS_AGAIN = ("d=$(mktemp -d) && mkdir -p $d/etc/ssh && a=$(date +%s.%N) && "
                   "ssh-keygen -A -f $d >/dev/null && b=$(date +%s.%N) && rm -rf $d && "
                   "echo $a $b")


def host_keys_seconds(vm, name, log_text):
    a, b = vm.run(HOST_KEYS_AGAIN, check=True, timeout=300).out.split()[-2:]
    logged = HOST_KEYS_LOGGED.findall(log_text)
    waited = HOST_KEYS_WAITED.findall(log_text)
    return {"again_in_guest": float(b) - float(a),
            "logged": sum(float(x) for x in logged) if logged else None,
            "waited": sum(float(x) for x in waited) if waited else None}


def host_keys_in_ready(r):
    """The host-key seconds to take out of this agent's start -> Ready: what Ready waited for
    them where the agent logs it (the rest of the generation overlapped other work), else its
    own logged generation time, else the in-guest re-run (waagent: one after the other, all
    on the path)."""
    hk = r["host_keys_s"]
    for key in ("waited", "logged"):
        if hk.get(key) is not None:
            return hk[key]
    return hk["again_in_guest"]


def summarise(samples):
    procs = {}
    for s in samples:
        for pid, p in s["procs"].items():
            d = procs.setdefault(pid, {"cmd": p["cmd"], "n": 0, "rss": 0, "pss": 0, "uss": 0,
                                       "pss_max": 0})
            d["n"] += 1
            for k in ("rss", "pss", "uss"):
                d[k] += p[k]
            d["pss_max"] = max(d["pss_max"], p["pss"])
    for d in procs.values():
        for k in ("rss", "pss", "uss"):
            d[k] /= d["n"]
    first, last = samples[0], samples[-1]
    for pid, d in procs.items():   # CPU over the window, for a process there all along
        if pid in first["procs"] and pid in last["procs"]:
            d["cpu_s"] = (last["procs"][pid]["ticks"] - first["procs"][pid]["ticks"]) \
                / last.get("hz", 100)
    totals = [sum(p["pss"] for p in s["procs"].values()) for s in samples]
    wall = last["uptime"] - first["uptime"]
    return {"samples": len(samples), "window_s": wall,
            "cpu_s": (last["cpu_usec"] - first["cpu_usec"]) / 1e6,
            "cpu_pct": 100.0 * (last["cpu_usec"] - first["cpu_usec"]) / 1e6 / wall if wall else 0,
            "tree_pss_mean": sum(totals) / len(totals), "tree_pss_max": max(totals),
            "procs": {str(k): v for k, v in sorted(procs.items())}}


# ---- report -------------------------------------------------------------------------------
def mib(kib):
    return kib / KiB


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return (xs[n // 2] + xs[(n - 1) // 2]) / 2 if n else 0.0


def _spread(xs):
    return "%.1f (%.1f–%.1f) [%s]" % (_median(xs), min(xs), max(xs),
                                      ", ".join("%.1f" % x for x in xs))


def report(results, args):
    w, g = results["waagent"], results["guestagent"]
    print("\nSide by side (settle %d s after Ready, window %d s, samples every %d s; MiB; %s)"
          % (args.settle, args.window, args.interval,
             "ResourceDisk.Format=y: only guestagent formats it" if args.resource_disk
             else "ResourceDisk.Format=n for both"))
    print("| | waagent | guestagent | ratio |")
    print("|---|---|---|---|")
    w_keys, g_keys = host_keys_in_ready(w), host_keys_in_ready(g)
    rows = [
        ("start → Ready (s)", w["start_to_ready_s"], g["start_to_ready_s"], "%.1f"),
        ("SSH host keys: generation (s; guestagent: its log, waagent: `ssh-keygen -A` again)",
         w["host_keys_s"]["again_in_guest"], g["host_keys_s"]["logged"] or 0.0, "%.1f"),
        ("SSH host keys: what Ready waited for them (s; waagent: all of it)",
         w_keys, g_keys, "%.1f"),
        ("start → Ready without the host keys (s)", w["start_to_ready_s"] - w_keys,
         g["start_to_ready_s"] - g_keys, "%.1f"),
        ("`ssh-keygen -A` again in the guest after the window (s)",
         w["host_keys_s"]["again_in_guest"], g["host_keys_s"]["again_in_guest"], "%.1f"),
        ("idle tree PSS, mean (MiB)", mib(w["tree_pss_mean"]), mib(g["tree_pss_mean"]), "%.1f"),
        ("idle tree PSS, max (MiB)", mib(w["tree_pss_max"]), mib(g["tree_pss_max"]), "%.1f"),
        ("idle CPU, unit cgroup (% of a vCPU)", w["cpu_pct"], g["cpu_pct"], "%.2f"),
        ("idle CPU seconds in the window", w["cpu_s"], g["cpu_s"], "%.2f"),
        ("bare python3 PSS, the floor (MiB)", mib(w["floor"]["pss"]), mib(g["floor"]["pss"]),
         "%.1f"),
    ]
    for label, a, b, fmt in rows:
        ratio = ("%.2f×" % (b / a)) if a else "—"
        print("| %s | %s | %s | %s |" % (label, fmt % a, fmt % b, ratio))
    for r in (w, g):
        print("\n%s (%s; window %.0f s guest clock, %d samples; unit %s)"
              % (r["agent"], r["agent_version"], r["window_s"], r["samples"],
                 " ".join(r["unit_state"])))
        print("| process | pid | RSS MiB | PSS MiB | USS MiB | CPU s in the window | samples |")
        print("|---|---|---|---|---|---|---|")
        for pid, p in r["procs"].items():
            cpu = "%.2f" % p["cpu_s"] if p.get("cpu_s") is not None else "—"
            print("| %s | %s | %.1f | %.1f | %.1f | %s | %d |" % (
                p["cmd"][:70], pid, mib(p["rss"]), mib(p["pss"]), mib(p["uss"]), cpu, p["n"]))
        print("| bare python3 (after the window) | | %.1f | %.1f | %.1f | | 1 |"
              % (mib(r["floor"]["rss"]), mib(r["floor"]["pss"]), mib(r["floor"]["uss"])))
        print("emulator received: %s" % r["emulator"])
        if "host_load" in r:
            print("host load average (1 min): %.1f at the start, %.1f after the window"
                  % (r["host_load"]["at_start"], r["host_load"]["after_window"]))
    print("(start → Ready counts from before the ssh call that starts the unit; that call took "
          "%.1f s and %.1f s)" % (w["start_ssh_s"], g["start_ssh_s"]))
    boots = [[r] + r.get("boots", []) for r in (w, g)]
    if len(boots[0]) > 1 or len(boots[1]) > 1:
        print("\nstart → Ready over every boot (s): median (min–max) [each boot]")
        print("| | waagent | guestagent | ratio of the medians |")
        print("|---|---|---|---|")
        for label, of in (("start → Ready", lambda b: b["start_to_ready_s"]),
                          ("what Ready waited for the host keys", host_keys_in_ready),
                          ("start → Ready without the host keys",
                           lambda b: b["start_to_ready_s"] - host_keys_in_ready(b))):
            a, b = [sorted(of(x) for x in bs) for bs in boots]
            print("| %s | %s | %s | %.2f× |" % (label, _spread(a), _spread(b),
                                                 _median(b) / _median(a) if _median(a) else 0))
    ready = [_median([b["start_to_ready_s"] for b in bs]) for bs in boots]
    bare = [_median([b["start_to_ready_s"] - host_keys_in_ready(b) for b in bs]) for bs in boots]
    print("\ntargets (issue 17): PSS ≤ 0.5×: %.2f×; CPU ≤ 0.2×: %.2f×; start → Ready ≤ 0.3×: %.2f×"
          " (%.2f× without the host keys; %s)"
          % (g["tree_pss_mean"] / w["tree_pss_mean"],
             (g["cpu_pct"] / w["cpu_pct"]) if w["cpu_pct"] else float("nan"),
             ready[1] / ready[0], bare[1] / bare[0],
             "medians of %d and %d boots" % tuple(len(bs) for bs in boots)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settle", type=int, default=60, help="seconds from Ready to the window")
    ap.add_argument("--window", type=int, default=180, help="idle window, seconds")
    ap.add_argument("--interval", type=int, default=30, help="seconds between samples")
    ap.add_argument("--ready-timeout", type=int, default=600)
    ap.add_argument("--agents", default="waagent,guestagent",
                    help="which runs, in order (the table needs both)")
    ap.add_argument("--boots", type=int, default=1,
                    help="boots of each agent for start -> Ready (median, min, max); the "
                         "first also measures the idle window")
    ap.add_argument("--resource-disk", action="store_true",
                    help="keep ResourceDisk.Format=y: guestagent formats /dev/vdb on the path to "
                         "Ready, waagent cannot find it in QEMU (the default sets =n for both)")
    ap.add_argument("--json", help="write every figure here")
    args = ap.parse_args()
    if os.geteuid() != 0 or _image.missing_host_tools():
        sys.exit("needs root and the harness's host packages: %s" % _image.missing_host_tools())
    img = build_image()
    workdir = Path(tempfile.mkdtemp(prefix="footprint-", dir="/tmp"))
    log("VM logs in %s" % workdir)
    results = {}
    names = args.agents.split(",")
    for name in names:
        results[name] = run_agent(name, img, workdir, args)
        log("%s: %s" % (name, json.dumps({k: v for k, v in results[name].items()
                                          if k != "procs"})))
    # start -> Ready moves by seconds from boot to boot (waagent's ifdown retries, the RSA
    # prime searches of both agents): more boots, the agents taking turns so that both see
    # the same host, for a median.
    for boot in range(1, args.boots):
        for name in names:
            more = run_agent(name, img, workdir, args, boot=boot)
            results[name].setdefault("boots", []).append(
                {k: more[k] for k in ("start_to_ready_s", "host_keys_s")})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if set(results) == set(AGENTS):
        report(results, args)


if __name__ == "__main__":
    main()
