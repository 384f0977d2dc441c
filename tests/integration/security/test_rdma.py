"""A compromised provisioning worker against boot.rdma (supervisor/privileged/boot.py).

The real supervisor and workers (tests/integration/supervisor_harness.py), the worker's code
replaced by an attack script under its own uid on its own channel. boot.rdma is the one boot
verb with arguments — SharedConfig.xml's RDMA address, which only the worker reads — so the
broker checks them itself: their syntax (no quote smuggled into the device's line), a /16 that
takes neither the WireServer's route nor another interface's network, RDMA enabled in
waagent.conf; and it writes only where it decides: dat.conf and dev/hvnd_rdma under OS.SysRoot,
never through a link, never blocking on a FIFO. Once per boot.

The RDMA hardware is simulated (no HPC size here): OS.SysRoot is a fixture tree of a Network
Direct VM (KVP pool, module version, dat.conf, the RDMA NIC), where a regular file stands in
for the /dev/hvnd_rdma character device; under "/" the broker would accept only a char device.
"""

import os

import pytest

from tests.integration.provisioning.test_rdma import OLD_DAT, ROUTES, kvp, put
from tests.integration.security.test_provisioning_attacks import outcomes, refused

GOOD = {"ipv4": "172.16.2.59", "mac": "00:15:5D:34:00:44"}


def tree(base, device="file"):
    """A Network Direct VM's tree; dev/hvnd_rdma a file, a link to a victim, or a FIFO."""
    root = os.path.join(base, "sysroot")
    victim = put(os.path.join(base, "victim"), b"keep\n", 0o600)
    put(os.path.join(root, "var/lib/hyperv/.kvp_pool_0"), kvp(NdDriverVersion="142.0"))
    put(os.path.join(root, "etc/rdma/dat.conf"), OLD_DAT)
    put(os.path.join(root, "sys/module/hv_network_direct/version"), b"4.0.1\n")
    put(os.path.join(root, "sys/class/net/eth0/address"), b"00:0d:3a:10:67:2f\n")
    put(os.path.join(root, "sys/class/net/eth1/address"), b"00:15:5d:34:00:44\n")
    put(os.path.join(root, "proc/net/route"), ROUTES.encode())
    os.makedirs(os.path.join(root, "dev"), exist_ok=True)
    dev = os.path.join(root, "dev/hvnd_rdma")
    if device == "file":
        put(dev, b"", 0o600)
    elif device == "link":
        os.symlink(victim, dev)
    elif device == "fifo":
        os.mkfifo(dev)
    return root, victim


@pytest.fixture
def rdma_agent(make_agent):
    def make(device="file", enabled=True):
        a = make_agent()
        conf = {"OS.SysRoot": os.path.join(a.dir, "sysroot"), "OS.CheckRdmaDriver": "y"}
        if enabled:
            conf["OS.EnableRDMA"] = "y"
        else:
            conf["OS.CheckRdmaDriver"] = "n"
        a.write_conf(conf)
        a.root, a.victim = tree(a.dir, device)
        a.start()
        return a
    return make


def attack(a, *calls, worker="provisioning"):
    script = 'report("uid", os.getuid())\n' + "".join(
        "attempt(%r, %r, timeout=20)\n" % ("boot.rdma", args) for args in calls)
    return a.attack(worker, script, timeout=60)


def device(a):
    return open(os.path.join(a.root, "dev/hvnd_rdma"), "rb").read()


def dat(a):
    return open(os.path.join(a.root, "etc/rdma/dat.conf"), "rb").read()


def test_the_broker_writes_the_device_once_per_boot(rdma_agent):
    a = rdma_agent()
    records = attack(a, GOOD, GOOD)
    got = outcomes(records)
    assert got["boot.rdma"][0][0] == "ok", got
    assert got["boot.rdma"][0][1]["device_written"] is True
    assert device(a) == b'rdmaMacAddress="00:15:5D:34:00:44" rdmaIPv4Address="172.16.2.59"'
    # The second call in the boot: refused (a violation), the device not written again.
    assert refused(got["boot.rdma"][1] if len(got["boot.rdma"]) > 1 else ["killed"])
    put(os.path.join(a.root, "dev/hvnd_rdma"), b"", 0o600)
    got = outcomes(attack(a, GOOD))
    assert refused(got["boot.rdma"][0]), got
    assert device(a) == b""


@pytest.mark.parametrize("args", [
    {"ipv4": '172.16.2.59" rdmaIPv4Address="1.2.3.4', "mac": "00:15:5D:34:00:44"},
    {"ipv4": "172.16.2.59", "mac": '00:15:5D:34:00:44" x="'},
    {"ipv4": "172.16.2.59", "mac": "00:15:5D:34:00:44", "device": "/etc/shadow"},
    {"ipv4": "../../etc", "mac": "00:15:5D:34:00:44"},
])
def test_smuggled_text_is_a_violation_and_nothing_is_written(rdma_agent, args):
    a = rdma_agent()
    records = attack(a, args)
    assert records[-1]["key"] == "killed", records
    assert "event=security" in a.log("supervisor")
    assert device(a) == b"" and dat(a) == OLD_DAT


@pytest.mark.parametrize("ipv4, why", [
    ("168.63.1.10", "WireServer"),        # its /16 would capture 168.63.129.16
    ("10.0.7.7", "overlaps 10.0.0.0/24 on eth0"),
    ("127.0.0.5", "not a unicast host address"),
    ("224.0.0.1", "not a unicast host address"),
])
def test_an_address_that_would_take_a_route_is_refused(rdma_agent, ipv4, why):
    a = rdma_agent()
    got = outcomes(attack(a, {"ipv4": ipv4, "mac": GOOD["mac"]}))
    assert got["boot.rdma"][0][:2] == ["error", "FAILED"], got
    assert why in got["boot.rdma"][0][2]
    assert device(a) == b"" and dat(a) == OLD_DAT


def test_the_rdma_nics_own_route_is_not_an_overlap(rdma_agent):
    """A /16 already on the RDMA NIC (eth1, the MAC given) is its own, not another's."""
    a = rdma_agent()
    put(os.path.join(a.root, "proc/net/route"),
        ROUTES.encode() + b"eth1\t000010AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n")
    got = outcomes(attack(a, GOOD))
    assert got["boot.rdma"][0][0] == "ok", got
    got = outcomes(attack(a, {"ipv4": "172.16.2.59", "mac": "00:15:5D:34:00:99"}))
    assert refused(got["boot.rdma"][0]), got      # once per boot, whatever the MAC


def test_the_primary_interfaces_mac_is_refused(rdma_agent):
    """The MAC of eth0 (the default route's) would put the /16 on the VM's own network."""
    a = rdma_agent()
    got = outcomes(attack(a, {"ipv4": "10.0.9.9", "mac": "00:0D:3A:10:67:2F"}))
    assert got["boot.rdma"][0][:2] == ["error", "FAILED"], got
    assert "interface of the default route" in got["boot.rdma"][0][2]
    assert device(a) == b"" and dat(a) == OLD_DAT


def test_a_link_for_the_device_is_never_followed(rdma_agent):
    a = rdma_agent("link")
    got = outcomes(attack(a, GOOD))
    assert got["boot.rdma"][0][:2] == ["error", "FAILED"], got
    assert open(a.victim, "rb").read() == b"keep\n"
    assert os.path.islink(os.path.join(a.root, "dev/hvnd_rdma"))


def test_a_fifo_for_the_device_is_an_answer_not_a_hung_broker(rdma_agent):
    a = rdma_agent("fifo")
    records = a.attack("provisioning", """
report("uid", os.getuid())
attempt("boot.rdma", %r, timeout=20)
attempt("provisioning.state", timeout=10)
""" % (GOOD,), timeout=60)
    got = outcomes(records)
    assert got["boot.rdma"][0][:2] == ["error", "FAILED"], got
    assert got["provisioning.state"][0][0] == "ok"


def test_a_link_for_dat_conf_is_not_written_through(rdma_agent):
    a = rdma_agent()
    path = os.path.join(a.root, "etc/rdma/dat.conf")
    os.unlink(path)
    os.symlink(a.victim, path)
    got = outcomes(attack(a, GOOD))
    assert got["boot.rdma"][0][:2] == ["error", "FAILED"], got
    assert "no DAPL configuration file" in got["boot.rdma"][0][2]
    assert open(a.victim, "rb").read() == b"keep\n" and device(a) == b""


def test_nothing_when_waagent_conf_does_not_enable_rdma(rdma_agent):
    a = rdma_agent(enabled=False)
    got = outcomes(attack(a, GOOD))
    assert got["boot.rdma"][0][:2] == ["error", "FAILED"], got
    assert "RDMA is not enabled" in got["boot.rdma"][0][2]
    assert device(a) == b"" and dat(a) == OLD_DAT


@pytest.mark.parametrize("worker", ["monitoring", "extensions", "logcollector"])
def test_no_other_worker_may_call_it(rdma_agent, worker):
    a = rdma_agent()
    records = attack(a, GOOD, worker=worker)
    assert records[-1]["key"] == "killed", records
    assert device(a) == b"" and dat(a) == OLD_DAT
