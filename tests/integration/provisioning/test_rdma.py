"""RDMA set-up after provisioning (OS.EnableRDMA, OS.CheckRdmaDriver), as waagent's daemon does
it: the real supervisor and provisioning worker in a confined host, the emulator serving the
SharedConfig.xml of a real RDMA (A9) VM (tests/data/walinuxagent/wire/shared_config_rdma.xml,
rdmaIPv4Address 172.16.2.59, rdmaMacAddress 00155D340044).

The hardware part is simulated, and must be: nothing here has an Azure HPC size, a Hyper-V
Network Direct driver or an InfiniBand HCA. OS.SysRoot is a fixture tree holding what such a VM
shows the agent: the KVP pool with NdDriverVersion (var/lib/hyperv/.kvp_pool_0), the loaded
module's sysfs version, dat.conf, the RDMA NIC under sys/class/net, and a regular file standing
in for the /dev/hvnd_rdma character device (the broker accepts a regular file only under a
fixture root). The worker's parsing, the verb, the broker's checks and its writes all run for
real; under a fixture root the broker does not touch the live network and says which address it
would set on which interface (checked below), since the interfaces are the host's.
"""

import json
import os

import pytest

from emulator.confinement import DEFAULT_SCENARIO, Emulator

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_CONFIG = os.path.join(HERE, "..", "..", "data", "walinuxagent", "wire",
                             "shared_config_rdma.xml")
DONE = "event=provisioning_done"
OLD_DAT = (b"# DAT 2.0 configuration\n"
           b'ofa-v2-ib0 u2.0 nonthreadsafe default libdaplofa.so.2 dapl.2.0 "oldip 0" ""\n'
           b'ofa-v2-mlx4_0-1 u2.0 nonthreadsafe default libdaplofa.so.2 dapl.2.0 "mlx4_0 1" ""\n')
NEW_DAT = OLD_DAT.replace(b'"oldip 0"', b'"172.16.2.59 0"')
# Kernel's /proc/net/route: eth0 10.0.0.0/24 and its default route via 10.0.0.1.
ROUTES = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
          "eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
          "eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n")


@pytest.fixture
def emu(tmp_path):
    """The emulator with the default scenario but SharedConfig: the RDMA VM's, verbatim."""
    scenario = json.load(open(DEFAULT_SCENARIO))
    base = os.path.dirname(DEFAULT_SCENARIO)
    for cert in scenario.get("certificates", []):
        for k in ("cert", "key"):
            if cert.get(k):
                cert[k] = os.path.join(base, cert[k])
    scenario["extensions"] = []
    scenario["shared_config"] = os.path.abspath(SHARED_CONFIG)
    path = tmp_path / "rdma.json"
    path.write_text(json.dumps(scenario))
    e = Emulator(str(path))
    yield e
    e.stop()


def put(path, data=b"", mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def kvp(**pairs):
    """Hyper-V KVP pool records: a 512-byte key and a 2048-byte value, NUL-padded."""
    return b"".join(k.encode().ljust(512, b"\0") + v.encode().ljust(2048, b"\0")
                    for k, v in pairs.items())


def hvnd_vm(root, module_version="4.0.1"):
    """What an A8/A9 (Network Direct) VM shows the agent, under OS.SysRoot."""
    put(os.path.join(root, "var/lib/hyperv/.kvp_pool_0"),
        kvp(HostName="host-1", NdDriverVersion="142.0"))
    put(os.path.join(root, "etc/rdma/dat.conf"), OLD_DAT)
    put(os.path.join(root, "sys/module/hv_network_direct/version"),
        module_version.encode() + b"\n")
    put(os.path.join(root, "dev/hvnd_rdma"), b"", 0o600)
    put(os.path.join(root, "sys/class/net/eth0/address"), b"00:0d:3a:10:67:2f\n")
    put(os.path.join(root, "sys/class/net/eth1/address"), b"00:15:5d:34:00:44\n")
    put(os.path.join(root, "proc/net/route"), ROUTES.encode())


def boot(host, needle="event=rdma_set_up", timeout=90):
    """Start the agent; the provisioning log once this start's job logged `needle`."""
    before = host.log().count(needle)
    host.start()
    return host.wait_log(needle, timeout, count=before + 1)


def test_network_direct_vm_gets_its_rdma_address_from_sharedconfig(make_host):
    host = make_host({"OS.EnableRDMA": "y", "OS.CheckRdmaDriver": "y"})
    hvnd_vm(host.sysroot)
    log = boot(host)
    assert "event=rdma_found ipv4=172.16.2.59 mac=00:15:5D:34:00:44" in log
    assert "kind=network_direct nd_version=142.0 dat_conf=/etc/rdma/dat.conf " \
           "device_written=True interface=eth1" in log
    assert "would set 172.16.2.59/16 on eth1 (OS.SysRoot is not /)" in log
    with open(os.path.join(host.sysroot, "dev/hvnd_rdma"), "rb") as f:
        assert f.read() == b'rdmaMacAddress="00:15:5D:34:00:44" rdmaIPv4Address="172.16.2.59"'
    with open(os.path.join(host.sysroot, "etc/rdma/dat.conf"), "rb") as f:
        assert f.read() == NEW_DAT
    # Once per boot: a restarted supervisor in the same boot does not do it again.
    put(os.path.join(host.sysroot, "dev/hvnd_rdma"), b"", 0o600)
    host.stop()
    boot(host, "event=rdma_already_set_up")
    assert os.path.getsize(os.path.join(host.sysroot, "dev/hvnd_rdma")) == 0
    # The next boot does.
    host.stop()
    host.reboot()
    boot(host, "event=rdma_set_up", 90)
    assert host.log().count("event=rdma_set_up") == 2
    assert os.path.getsize(os.path.join(host.sysroot, "dev/hvnd_rdma")) > 0


def test_driver_4_1_and_later_and_no_driver_check_leave_the_device_alone(make_host):
    host = make_host({"OS.EnableRDMA": "y", "OS.CheckRdmaDriver": "y"})
    hvnd_vm(host.sysroot, module_version="4.2.0")
    log = boot(host)
    assert "device_written=False interface=eth1" in log
    assert os.path.getsize(os.path.join(host.sysroot, "dev/hvnd_rdma")) == 0
    assert "event=rdma_device_skipped driver=4.2" in host.log("supervisor")
    # OS.EnableRDMA alone: waagent skips the driver check and the device, dat.conf is set.
    host.stop()
    host.write_conf({"OS.EnableRDMA": "y"} | dict(_emu_conf(host)))
    host.reboot()
    put(os.path.join(host.sysroot, "etc/rdma/dat.conf"), OLD_DAT)
    boot(host, "event=rdma_set_up", 90)
    assert "event=rdma_driver_check skipped" in host.log("supervisor")
    assert os.path.getsize(os.path.join(host.sysroot, "dev/hvnd_rdma")) == 0
    assert open(os.path.join(host.sysroot, "etc/rdma/dat.conf"), "rb").read() == NEW_DAT


def _emu_conf(host):
    """The Protocol.* lines of the host's waagent.conf (to rewrite it with other keys)."""
    out = {}
    for line in open(host.conf_path):
        k, _, v = line.rstrip("\n").partition("=")
        if k.startswith("Protocol.") or k == "Agent.FlapMaxFailures":
            out[k] = v
    return out


def test_sriov_vm_sets_ib0(make_host):
    """No NdDriverVersion in the KVP pool: SR-IOV (Mellanox), waagent's other path: an
    InfiniBand device, then ib0."""
    host = make_host({"OS.EnableRDMA": "y"})
    root = host.sysroot
    put(os.path.join(root, "var/lib/hyperv/.kvp_pool_0"), kvp(HostName="host-1"))
    os.makedirs(os.path.join(root, "sys/class/infiniband/mlx5_0"))
    put(os.path.join(root, "sys/class/net/ib0/address"), b"00:00:10:29:fe:80:00:00:00:00:00:00"
        b":00:15:5d:ff:fd:34:00:44\n")
    put(os.path.join(root, "proc/net/route"), ROUTES.encode())
    log = boot(host)
    assert "kind=sriov nd_version=None dat_conf=None device_written=False interface=ib0" in log
    assert "would set 172.16.2.59/16 on ib0" in log


def test_rdma_off_by_default_and_a_missing_device_is_logged_not_fatal(make_host):
    host = make_host()
    log = boot(host, "event=rdma skipped")
    assert "event=rdma_found" not in log
    host.stop()
    host.write_conf({"OS.EnableRDMA": "y"} | dict(_emu_conf(host)))
    host.reboot()
    put(os.path.join(host.sysroot, "var/lib/hyperv/.kvp_pool_0"), kvp(HostName="host-1"))
    log = boot(host, "event=rdma_failed")
    assert "no InfiniBand device" in log
    assert host.log().count(DONE) == 2 and "outcome='already provisioned'" in log
