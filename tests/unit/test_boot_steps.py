"""The per-boot handlers (supervisor/privileged/boot.py) on fixture trees under OS.SysRoot:
the real code reading and writing real files, links and FIFOs (what /sys, /proc, /dev/random,
grub and udev look like on a VM). The route and DHCP publication, which act on a network,
are tested in a network namespace (tests/integration/test_boot_network.py)."""

import os
import socket
import threading

import pytest

from config import defaults
from ipc.errors import IpcError
from ipc.verbs.boot import NET_RULES
from supervisor import broker
from supervisor.privileged import boot, grub

OEM0 = bytes(range(64))


def conf_for(tmp_path, **more):
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    return defaults().with_overrides(OS__SysRoot=str(root), Lib__Dir=str(tmp_path / "lib"),
                                     **more)


def call(fn, conf):
    return fn(broker.Context("provisioning", conf, threading.Event()), {})


def put(root, relative, data=b"", mode=0o644):
    path = os.path.join(str(root), relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


# ---- SCSI timeouts ---------------------------------------------------------------------------
def test_scsi_timeouts_reach_the_os_and_data_disks_and_never_follow_a_link(tmp_path):
    conf = conf_for(tmp_path, OS__RootDeviceScsiTimeout=300)
    root = tmp_path / "root"
    for disk in ("sda", "sdb", "sdc"):
        put(root, "sys/block/%s/device/timeout" % disk, b"30\n")
    victim = put(tmp_path, "victim", b"keep\n")
    os.unlink(str(root / "sys/block/sdc/device/timeout"))
    os.symlink(victim, str(root / "sys/block/sdc/device/timeout"))
    put(root, "sys/block/loop0/device/timeout", b"30\n")   # not a SCSI disk
    assert call(boot.scsi_timeouts, conf) == {"timeout": 300, "devices": ["sda", "sdb"]}
    for disk in ("sda", "sdb"):
        assert (root / "sys/block" / disk / "device/timeout").read_bytes() == b"300\n"
    assert open(victim, "rb").read() == b"keep\n"
    assert (root / "sys/block/loop0/device/timeout").read_bytes() == b"30\n"


def test_no_scsi_timeout_configured_writes_nothing(tmp_path):
    conf = conf_for(tmp_path)
    path = put(tmp_path / "root", "sys/block/sda/device/timeout", b"30\n")
    assert call(boot.scsi_timeouts, conf) == {"timeout": None, "devices": []}
    assert open(path, "rb").read() == b"30\n"


# ---- entropy ---------------------------------------------------------------------------------
def test_the_oem0_table_goes_into_the_random_device(tmp_path):
    conf = conf_for(tmp_path)
    put(tmp_path / "root", boot.OEM0, OEM0, 0o400)
    rnd = put(tmp_path / "root", "dev/random", b"")
    assert call(boot.entropy, conf) == {"bytes": 64}
    assert open(rnd, "rb").read() == OEM0


def test_no_oem0_table_is_nothing_to_do(tmp_path):
    assert call(boot.entropy, conf_for(tmp_path)) == {"bytes": 0}


def test_an_oem0_fifo_never_blocks_and_a_random_link_is_not_followed(tmp_path):
    conf = conf_for(tmp_path)
    root = tmp_path / "root"
    os.makedirs(str(root / os.path.dirname(boot.OEM0)))
    os.mkfifo(str(root / boot.OEM0))
    with pytest.raises(IpcError, match="not a regular file"):
        call(boot.entropy, conf)
    os.unlink(str(root / boot.OEM0))
    put(root, boot.OEM0, OEM0)
    victim = put(tmp_path, "victim", b"keep\n")
    os.makedirs(str(root / "dev"))
    os.symlink(victim, str(root / "dev/random"))
    with pytest.raises(IpcError, match="random device"):
        call(boot.entropy, conf)
    assert open(victim, "rb").read() == b"keep\n"


# ---- virtual NUMA on 2.6.37 --------------------------------------------------------------------
MENU_LST = b"""default 0
title Linux 2.6.37
    root (hd0,0)
    kernel /vmlinuz-2.6.37 root=/dev/sda1 ro
    initrd /initrd-2.6.37
"""


def numa_tree(tmp_path, release=b"2.6.37-0.1-default\n", nodes=2):
    root = tmp_path / "root"
    put(root, "proc/sys/kernel/osrelease", release)
    for n in range(nodes):
        os.makedirs(str(root / ("sys/devices/system/node/node%d" % n)))
    put(root, "etc/default/grub", b'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="quiet"\n')
    put(root, "boot/grub/menu.lst", MENU_LST, 0o600)
    return root


def test_numa_off_on_2_6_37_with_virtual_numa_once(tmp_path):
    root = numa_tree(tmp_path)
    r = call(boot.numa, conf_for(tmp_path))
    assert r["changed"] is True and "next boot" in r["reason"]
    assert (root / "etc/default/grub").read_text() == \
        'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="quiet numa=off"\n'
    menu = (root / "boot/grub/menu.lst").read_text()
    assert "kernel /vmlinuz-2.6.37 root=/dev/sda1 ro numa=off\n" in menu
    assert os.stat(str(root / "boot/grub/menu.lst")).st_mode & 0o777 == 0o600
    assert call(boot.numa, conf_for(tmp_path))["changed"] is False    # idempotent
    assert (root / "boot/grub/menu.lst").read_text().count("numa=off") == 1


@pytest.mark.parametrize("release, nodes, why", [(b"6.1.0-13-amd64\n", 2, "is not 2.6.37"),
                                                 (b"2.6.37\n", 1, "one NUMA node")])
def test_numa_left_alone_elsewhere(tmp_path, release, nodes, why):
    root = numa_tree(tmp_path, release, nodes)
    r = call(boot.numa, conf_for(tmp_path))
    assert r["changed"] is False and why in r["reason"]
    assert b"numa=off" not in (root / "boot/grub/menu.lst").read_bytes()


# ---- persistent net rules ----------------------------------------------------------------------
def test_persistent_net_rules_move_into_lib_dir_links_as_links(tmp_path):
    conf = conf_for(tmp_path)
    root = tmp_path / "root"
    put(root, NET_RULES[0], b"# generator\n")
    victim = put(tmp_path, "victim", b"keep\n")
    os.makedirs(str(root / "etc/udev/rules.d"))
    os.symlink(victim, str(root / NET_RULES[1]))
    assert call(boot.persistent_net_rules, conf) == {"moved": list(NET_RULES)}
    lib = tmp_path / "lib"
    assert (lib / "75-persistent-net-generator.rules").read_bytes() == b"# generator\n"
    assert os.readlink(str(lib / "70-persistent-net.rules")) == victim
    assert open(victim, "rb").read() == b"keep\n"
    assert not os.path.lexists(str(root / NET_RULES[0]))
    assert not os.path.lexists(str(root / NET_RULES[1]))
    assert call(boot.persistent_net_rules, conf) == {"moved": []}


# ---- the WireServer route: the decisions that need no network ------------------------------------
ROUTES = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
          "eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
          "eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n")


def test_a_wireserver_route_from_dhcp_is_left_alone(tmp_path):
    conf = conf_for(tmp_path)
    put(tmp_path / "root", "proc/net/route",
        (ROUTES + "eth0\t10813FA8\t0100000A\t0007\t0\t0\t100\tFFFFFFFF\t0\t0\t0\n").encode())
    assert call(boot.wireserver_route, conf) == {"added": False, "reason": "present via eth0"}


def test_no_wireserver_route_when_pointed_at_another_endpoint(tmp_path):
    conf = conf_for(tmp_path, Protocol__Endpoint="127.0.0.1:8080")
    put(tmp_path / "root", "proc/net/route", ROUTES.encode())
    r = call(boot.wireserver_route, conf)
    assert r["added"] is False and "Protocol.Endpoint" in r["reason"]


def test_a_missing_route_is_decided_from_the_fixture_root_but_not_added_to_this_host(tmp_path):
    conf = conf_for(tmp_path)
    put(tmp_path / "root", "proc/net/route", ROUTES.encode())
    assert boot._default_route(conf) == ("eth0", "10.0.0.1")
    assert call(boot.wireserver_route, conf) == {
        "added": False, "reason": "would add via 10.0.0.1 dev eth0 (OS.SysRoot is not /)"}


def test_a_developers_box_keeps_its_network_configuration():
    conf = defaults().with_overrides(OS__SysRoot="/nonexistent-root-for-test")
    assert boot._machine_is_ours(conf)          # a fixture root is the test's own
    plain = defaults()
    tag = "/sys/class/dmi/id/chassis_asset_tag"
    is_azure = os.path.exists(tag) and open(tag, "rb").read().strip() == boot.AZURE_ASSET_TAG
    assert boot._machine_is_ours(plain) is is_azure


# ---- the DHCP request ----------------------------------------------------------------------
def test_the_dhcp_request_carries_the_hostname_as_option_12():
    mac = bytes.fromhex("00155d012345")
    packet = boot.dhcp_request(0x12345678, mac, "10.0.0.4", "web-01")
    assert packet[0] == 1 and packet[28:34] == mac and packet[12:16] == socket.inet_aton(
        "10.0.0.4")
    assert packet[236:240] == boot.MAGIC
    options = packet[240:]
    assert options.startswith(b"\x35\x01\x03")                     # DHCPREQUEST
    assert b"\x0c\x06web-01" in options and options.endswith(b"\xff")
    assert b"\x32" not in options[:3] and b"\x36\x04" not in options   # no server id (rebinding)


# ---- grub ----------------------------------------------------------------------------------
GRUB_CFG = b"""menuentry 'Debian GNU/Linux' {
\tlinux\t/boot/vmlinuz-6.1.0 root=UUID=abcd ro quiet
\tinitrd\t/boot/initrd.img-6.1.0
}
"""


def test_grub_words_added_once_in_every_configuration(tmp_path):
    root = tmp_path / "root"
    put(root, "etc/default/grub", b"GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=''\n")
    put(root, "boot/grub/grub.cfg", GRUB_CFG, 0o444)
    words = ["console=ttyS0", "earlyprintk=ttyS0"]
    assert grub.add_kernel_words(str(root), words) == ["etc/default/grub", "boot/grub/grub.cfg"]
    assert (root / "etc/default/grub").read_text() == \
        "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX='console=ttyS0 earlyprintk=ttyS0'\n"
    assert "\tlinux\t/boot/vmlinuz-6.1.0 root=UUID=abcd ro quiet console=ttyS0 " \
        "earlyprintk=ttyS0\n" in (root / "boot/grub/grub.cfg").read_text()
    assert grub.add_kernel_words(str(root), words) == []
    with pytest.raises(IpcError, match="no grub configuration"):
        grub.add_kernel_words(str(tmp_path / "empty"), words)
