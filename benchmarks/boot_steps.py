"""Per-step time of the per-boot kernel and network steps (issue 12), on the host.

Each broker handler of supervisor/privileged/boot.py, called as the broker's loop calls it,
on a fixture tree under OS.SysRoot that makes it do its work (a Hyper-V OEM0 table, eight SCSI
disks, a 2.6.37 kernel with two NUMA nodes and a grub configuration, both udev net rules, a
routing table without the WireServer); the tree is rebuilt before each run, so each run does
the whole job, not the "already done" path. With --netns (root, dnsmasq), the two steps that
act on a network run in a network namespace made here with a DHCP server: the WireServer
route (`ip route add`) and the hostname's DHCP publication (request, ACK).

    sudo /opt/guestagent/bin/python benchmarks/boot_steps.py [--runs 20] [--netns]

Prints the median and maximum milliseconds of each step and their sum. The IPC round trip
that the provisioning worker adds per step is ipc_roundtrip.py's figure (tens of µs).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROUTES = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
          "eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n")


def put(path, data=b""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def tree(base):
    root = os.path.join(base, "root")
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(os.path.join(base, "lib"), ignore_errors=True)
    put(os.path.join(root, "sys/firmware/acpi/tables/OEM0"), os.urandom(64))
    put(os.path.join(root, "dev/random"))
    for i in range(8):
        put(os.path.join(root, "sys/block/sd%s/device/timeout" % "abcdefgh"[i]), b"30\n")
    put(os.path.join(root, "proc/sys/kernel/osrelease"), b"2.6.37-1-default\n")
    for n in (0, 1):
        os.makedirs(os.path.join(root, "sys/devices/system/node/node%d" % n))
    put(os.path.join(root, "etc/default/grub"), b'GRUB_CMDLINE_LINUX="quiet"\n')
    put(os.path.join(root, "boot/grub/grub.cfg"),
        b"menuentry 'Linux' {\n\tlinux\t/boot/vmlinuz root=/dev/sda1 ro\n}\n")
    put(os.path.join(root, "lib/udev/rules.d/75-persistent-net-generator.rules"), b"# gen\n")
    put(os.path.join(root, "etc/udev/rules.d/70-persistent-net.rules"), b"# rules\n")
    put(os.path.join(root, "proc/net/route"), ROUTES.encode())
    # A Network Direct (A8/A9) VM's RDMA pieces; a regular file stands in for /dev/hvnd_rdma.
    put(os.path.join(root, "var/lib/hyperv/.kvp_pool_0"),
        b"NdDriverVersion".ljust(512, b"\0") + b"142.0".ljust(2048, b"\0"))
    put(os.path.join(root, "etc/rdma/dat.conf"), b'ofa-v2-ib0 u2.0 nonthreadsafe default '
        b'libdaplofa.so.2 dapl.2.0 "oldip 0" ""\n')
    put(os.path.join(root, "sys/module/hv_network_direct/version"), b"4.0.1\n")
    put(os.path.join(root, "sys/class/net/eth1/address"), b"00:15:5d:34:00:44\n")
    put(os.path.join(root, "dev/hvnd_rdma"))
    return root


def local(runs):
    import logging
    logging.disable(logging.CRITICAL)   # numa's "reboot to apply" warning, every run
    from config import defaults
    from supervisor import broker
    from supervisor.privileged import boot
    base = tempfile.mkdtemp(prefix="boot-steps-")
    steps = {"entropy": boot.entropy, "numa": boot.numa, "scsi_timeouts": boot.scsi_timeouts,
             "persistent_net_rules": boot.persistent_net_rules,
             "wireserver_route (decision)": boot.wireserver_route,
             "rdma (dat.conf, hvnd_rdma; address decision)": boot.rdma}
    rdma_args = {"ipv4": "172.16.2.59", "mac": "00:15:5D:34:00:44"}
    times = {name: [] for name in steps}
    try:
        for _ in range(runs):
            root = tree(base)
            conf = defaults().with_overrides(OS__SysRoot=root, Lib__Dir=os.path.join(base, "lib"),
                                             OS__RootDeviceScsiTimeout=300,
                                             OS__EnableRDMA=True, OS__CheckRdmaDriver=True)
            for name, fn in steps.items():
                ctx = broker.Context("provisioning", conf, threading.Event())
                start = time.perf_counter()
                fn(ctx, rdma_args if fn is boot.rdma else {})
                times[name].append((time.perf_counter() - start) * 1000)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return times


IN_NETNS = r"""
import json, socket, sys, threading, time
from config import defaults
from supervisor import broker
from supervisor.privileged import boot
socket.sethostname("bench-host-01")
import tempfile
conf = defaults().with_overrides(Protocol__Endpoint="168.63.129.16",
                                 Lib__Dir=tempfile.mkdtemp())   # published_hostname: not the host's
out = {}
for name, fn in (("wireserver_route (ip route add)", boot.wireserver_route),
                 ("publish_hostname (DHCP ACK)", boot.publish_hostname)):
    ctx = broker.Context("provisioning", conf, threading.Event())
    start = time.perf_counter()
    r = fn(ctx, {})
    out[name] = ((time.perf_counter() - start) * 1000, r)
print(json.dumps(out))
"""


def netns(runs):
    def ip(*a):
        subprocess.run(["ip"] + list(a), check=True, capture_output=True)
    tag = "gbb%d" % os.getpid()
    srv, cli = tag + "s", tag + "c"
    times = {}
    ip("netns", "add", srv)
    ip("netns", "add", cli)
    base = tempfile.mkdtemp(prefix="boot-steps-")
    dns = None
    try:
        ip("link", "add", "vsrv", "netns", srv, "type", "veth", "peer", "name", "vcli",
           "netns", cli)
        ip("-n", srv, "addr", "add", "10.214.0.1/24", "dev", "vsrv")
        ip("-n", cli, "addr", "add", "10.214.0.20/24", "dev", "vcli")
        for ns, dev in ((srv, "vsrv"), (cli, "vcli")):
            ip("-n", ns, "link", "set", dev, "up")
        ip("-n", cli, "route", "add", "default", "via", "10.214.0.1")
        mac = json.loads(subprocess.run(["ip", "-n", cli, "-j", "link", "show", "vcli"],
                                        capture_output=True, text=True).stdout)[0]["address"]
        dns = subprocess.Popen(
            ["ip", "netns", "exec", srv, "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
             "--port=0", "--interface=vsrv", "--bind-interfaces", "--user=root",
             "--dhcp-range=10.214.0.10,10.214.0.50,255.255.255.0,1h",
             "--dhcp-host=%s,10.214.0.20" % mac, "--dhcp-authoritative",
             "--dhcp-leasefile=%s/leases" % base, "--pid-file=%s/pid" % base],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        for _ in range(runs):
            subprocess.run(["ip", "-n", cli, "route", "del", "168.63.129.16"],
                           capture_output=True)
            r = subprocess.run(["ip", "netns", "exec", cli, "unshare", "--uts", sys.executable,
                                "-c", IN_NETNS], capture_output=True, text=True,
                               cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            if r.returncode != 0:
                raise SystemExit(r.stderr)
            for name, (ms, result) in json.loads(r.stdout).items():
                times.setdefault(name, []).append(ms)
                if name.startswith("publish") and not result["acked"]:
                    raise SystemExit("no DHCP ACK: %r" % result)
    finally:
        if dns is not None:
            dns.terminate()
            dns.wait()
        subprocess.run(["ip", "netns", "del", cli], capture_output=True)
        subprocess.run(["ip", "netns", "del", srv], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--netns", action="store_true",
                   help="also the route and the DHCP publication in a network namespace")
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the handlers write root files)")
    times = local(args.runs)
    if args.netns:
        times.update(netns(args.runs))
    print("%-46s %10s %10s" % ("step", "p50 ms", "max ms"))
    total = 0.0
    for name, values in times.items():
        median = statistics.median(values)
        total += median
        print("%-46s %10.2f %10.2f" % (name, median, max(values)))
    print("%-46s %10.2f" % ("sum of medians", total))


if __name__ == "__main__":
    main()
