"""The per-boot verbs (ipc/verbs/boot.py): SCSI timeouts, Hyper-V entropy, virtual NUMA on
2.6.37, the WireServer route, persistent net rules, the hostname's DHCP publication, SCVMM,
RDMA.

No verb but boot.rdma takes an argument: every value comes from waagent.conf, from what the broker reads
under OS.SysRoot (the root whose /sys, /proc, /dev/random, grub and udev files are meant: "/"
on a VM, a fixture tree in the host tests) or from the kernel. Every file is opened without
following a symlink, never a FIFO or device but the one /dev/random (checked: char device
1:8) and the one /dev/hvnd_rdma (a char device), with a size cap. boot.rdma alone takes
arguments (SharedConfig's RDMA address, read by the worker): checked here before any write.
"""

import errno
import glob
import logging
import os
import re
import select
import socket
import stat
import struct
import time
from typing import List, Optional, Tuple

from ipc.errors import IpcError
from ipc.verbs import boot as B
from supervisor.broker import BOOT, MON, PROCESS, PROV, Context, Privileged
from supervisor.privileged import (atomic_write, ensure_root_dir, fail, lib_dir, read_capped,
                                   run, which)

log = logging.getLogger("guestagent.broker.boot")
_said: dict = {}   # a periodic verb's last outcome line (see scsi_timeouts)

WIRESERVER = "168.63.129.16"


def _root(conf) -> str:
    return conf["OS.SysRoot"] or "/"


def _under(conf, relative: str) -> str:
    return os.path.join(_root(conf), relative)


AZURE_ASSET_TAG = b"7783-7084-3265-9085-8269-3286-77"


def _machine_is_ours(conf) -> bool:
    """Whether the verbs that change the machine's configuration (routes, udev rules) may:
    an Azure VM (SMBIOS chassis asset tag) or a fixture root. Never a developer's box that
    runs the agent (pointed at an emulator by Protocol.Endpoint or not)."""
    if _root(conf) != "/":
        return True
    try:
        tag = read_capped(_under(conf, "sys/class/dmi/id/chassis_asset_tag"), 128, follow=True)
    except Exception:  # noqa: B902 - unreadable: not known to be Azure
        return False
    return (tag or b"").strip() == AZURE_ASSET_TAG


def _refuse_unless_ours(conf, told: bool = False) -> None:
    if not (told or _machine_is_ours(conf)):
        raise fail("not an Azure VM (no Azure chassis asset tag): the machine's network "
                   "configuration is left alone")


# ---- SCSI timeouts (protocol.md §9.3 SetRootDeviceScsiTimeout) -----------------------------

def _write_attribute(path: str, data: bytes) -> None:
    """A sysfs attribute: a regular file, never a link (O_NOFOLLOW), never a FIFO (O_NONBLOCK
    and fstat before writing)."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC |
                 os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.write(fd, data)
    finally:
        os.close(fd)


def scsi_timeouts(ctx: Context, args: dict) -> dict:
    timeout = ctx.conf["OS.RootDeviceScsiTimeout"]
    if timeout is None:
        return {"timeout": None, "devices": []}
    if not 1 <= timeout <= 3600:
        raise fail("OS.RootDeviceScsiTimeout=%d is outside 1..3600" % timeout)
    written, failed = [], []
    for block in sorted(glob.glob(os.path.join(glob.escape(_under(ctx.conf, "sys/block")),
                                               "sd*")))[:256]:
        name = os.path.basename(block)
        try:
            _write_attribute(os.path.join(block, "device", "timeout"), b"%d\n" % timeout)
            written.append(name)
        except OSError as e:
            failed.append(name)
            log.warning("event=scsi_timeout_failed device=%s error=%r", name,
                        e.strerror or str(e))
    said = "timeout=%d devices=%s failed=%s" % (timeout, ",".join(written) or "-",
                                                ",".join(failed) or "-")
    # Re-applied every period by monitoring: the same outcome again is logged at DEBUG.
    log.log(logging.DEBUG if said == _said.get("scsi_timeouts") else logging.INFO,
            "event=scsi_timeouts %s", said)
    _said["scsi_timeouts"] = said
    return {"timeout": timeout, "devices": written}


# ---- Hyper-V entropy -------------------------------------------------------------------------

OEM0 = "sys/firmware/acpi/tables/OEM0"
MAX_OEM0 = 64 * 1024


def _random_device(conf) -> int:
    """/dev/random of the root: on a VM the real device (char 1:8, nothing else); under a
    fixture root a regular file stands in for it."""
    path = _under(conf, "dev/random")
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC |
                 os.O_NOCTTY | (os.O_APPEND if _root(conf) != "/" else 0))
    st = os.fstat(fd)
    ok = (stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and
          os.minor(st.st_rdev) == 8) or (_root(conf) != "/" and stat.S_ISREG(st.st_mode))
    if not ok:
        os.close(fd)
        raise fail("%s is not the random device" % path)
    return fd


def entropy(ctx: Context, args: dict) -> dict:
    data = read_capped(_under(ctx.conf, OEM0), MAX_OEM0)
    if not data:
        log.info("event=entropy bytes=0 reason='no ACPI OEM0 table (not Hyper-V)'")
        return {"bytes": 0}
    try:
        fd = _random_device(ctx.conf)
    except OSError as e:
        raise fail("cannot open the random device: %s" % e.strerror) from None
    try:
        written = os.write(fd, data)
    finally:
        os.close(fd)
    log.info("event=entropy bytes=%d source=OEM0", written)
    return {"bytes": written}


# ---- virtual NUMA on 2.6.37 -------------------------------------------------------------------

def numa(ctx: Context, args: dict) -> dict:
    from supervisor.privileged import grub
    release = read_capped(_under(ctx.conf, "proc/sys/kernel/osrelease"), 256, follow=True)
    release = (release or b"").decode("ascii", "replace").strip()
    if not release.startswith("2.6.37"):
        return {"changed": False, "reason": "kernel %s is not 2.6.37" % (release[:64] or "?")}
    nodes = glob.glob(os.path.join(glob.escape(_under(ctx.conf, "sys/devices/system/node")),
                                   "node[0-9]*"))
    if len(nodes) < 2:
        return {"changed": False, "reason": "one NUMA node"}
    changed = grub.add_kernel_words(_root(ctx.conf), ["numa=off"])
    log.warning("event=numa_off kernel=%s nodes=%d files=%s: reboot to apply", release[:64],
                len(nodes), ",".join(changed) or "-")
    return {"changed": bool(changed),
            "reason": ("numa=off added to %s; applies at the next boot" % ", ".join(changed))
            if changed else "numa=off already on the kernel command line"}


# ---- the WireServer route ---------------------------------------------------------------------

def _routes(conf) -> List[Tuple[str, int, int, int]]:
    """(interface, destination, gateway, mask) of <root>/proc/net/route, addresses as ints."""
    data = read_capped(_under(conf, "proc/net/route"), 1024 * 1024, follow=True) or b""
    out = []
    for line in data.decode("ascii", "replace").splitlines()[1:]:
        f = line.split()
        if len(f) < 8:
            continue
        try:
            # The kernel prints each address's network-order bytes as a host-order number.
            dest, gw, mask = (struct.unpack("!I", struct.pack("<I", int(x, 16)))[0]
                              for x in (f[1], f[2], f[7]))
        except (ValueError, struct.error):
            continue
        out.append((f[0], dest, gw, mask))
    return out


def _default_route(conf) -> Optional[Tuple[str, str]]:
    """(interface, gateway) of the first default route, or None."""
    for iface, dest, gw, mask in _routes(conf):
        if dest == 0 and mask == 0 and gw:
            return iface, socket.inet_ntoa(struct.pack("!I", gw))
    return None


def wireserver_route(ctx: Context, args: dict) -> dict:
    endpoint = (ctx.conf["Protocol.Endpoint"] or "").split(":")[0]
    if endpoint and endpoint != WIRESERVER:
        return {"added": False, "reason": "Protocol.Endpoint is %s" % endpoint[:64]}
    # Protocol.Endpoint=168.63.129.16 says so explicitly: a WireServer is reached this way.
    _refuse_unless_ours(ctx.conf, told=endpoint == WIRESERVER)
    ws = struct.unpack("!I", socket.inet_aton(WIRESERVER))[0]
    routes = _routes(ctx.conf)
    for iface, dest, gw, mask in routes:
        if mask and (ws & mask) == dest:
            return {"added": False, "reason": "present via %s" % iface[:32]}
    default = _default_route(ctx.conf)
    if default is None:
        return {"added": False, "reason": "no default route to add it by"}
    iface, gateway = default
    if _root(ctx.conf) != "/":
        # The routing table is the live kernel's, not the fixture root's: decide, not act.
        return {"added": False, "reason": "would add via %s dev %s (OS.SysRoot is not /)"
                % (gateway, iface[:32])}
    if not os.path.isdir(os.path.join("/sys/class/net", iface)) or "/" in iface:
        raise fail("no interface %s" % iface[:32])
    run(["ip", "route", "add", WIRESERVER + "/32", "via", gateway, "dev", iface], timeout=20,
        cancel=ctx.cancel)
    log.info("event=wireserver_route_added via=%s dev=%s", gateway, iface)
    return {"added": True, "reason": "via %s dev %s" % (gateway, iface)}


# ---- persistent net rules (protocol.md §9.3 RemovePersistentNetworkRules) --------------------

def persistent_net_rules(ctx: Context, args: dict) -> dict:
    _refuse_unless_ours(ctx.conf)
    moved = []
    for relative in B.NET_RULES:
        src = _under(ctx.conf, relative)
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            continue
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            log.warning("event=net_rules_skipped path=%s reason='not a file or link'", src)
            continue
        dst = os.path.join(lib_dir(ctx.conf), os.path.basename(relative))
        try:
            os.rename(src, dst)              # a link is moved as a link
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise fail("cannot move %s: %s" % (src, e.strerror)) from None
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(src)
                try:
                    os.unlink(dst)
                except FileNotFoundError:
                    pass
                os.symlink(target, dst)
            else:
                atomic_write(dst, read_capped(src, 1024 * 1024) or b"", 0o644)
            os.unlink(src)
        moved.append(relative)
    if moved:
        log.info("event=persistent_net_rules_moved files=%s to=%s", ",".join(moved),
                 ctx.conf["Lib.Dir"])
    return {"moved": moved}


# ---- the hostname's publication by DHCP -------------------------------------------------------

DHCP_SERVER_PORT, DHCP_CLIENT_PORT = 67, 68
MAGIC = b"\x63\x82\x53\x63"
SIOCGIFADDR = 0x8915
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
ACK_WAIT = 1.0     # per send: a DHCP server on the link answers in milliseconds
SENDS = 2


def _interface_address(iface: str) -> str:
    import fcntl
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR,
                             struct.pack("256s", iface.encode()[:15]))
    except OSError as e:
        raise fail("%s has no IPv4 address: %s" % (iface, e.strerror)) from None
    finally:
        s.close()
    return socket.inet_ntoa(packed[20:24])


def dhcp_request(xid: int, mac: bytes, address: str, hostname: str) -> bytes:
    """A DHCPREQUEST in the rebinding state (RFC 2131 §4.3.2: ciaddr set, no server id, no
    requested address) with the hostname as option 12 and the MAC as client id (61)."""
    header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0,
                         socket.inet_aton(address), b"\0" * 4, b"\0" * 4, b"\0" * 4,
                         mac.ljust(16, b"\0"), b"", b"")
    name = hostname.encode("ascii")
    options = (b"\x35\x01\x03" + b"\x3d\x07\x01" + mac + bytes((12, len(name))) + name +
               b"\x37\x06\x01\x03\x06\x0c\x0f\x33" + b"\xff")
    return header + MAGIC + options


def _is_ack(data: bytes, xid: int) -> bool:
    if len(data) < 244 or data[0] != 2 or struct.unpack("!I", data[4:8])[0] != xid or \
            data[236:240] != MAGIC:
        return False
    i = 240
    while i + 1 < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        code, size = data[i], data[i + 1]
        if code == 53 and size == 1 and i + 2 < len(data):
            return data[i + 2] == 5
        i += 2 + size
    return False


PUBLISHED = "published_hostname"     # in Lib.Dir, as waagent keeps it (deprovision removes it)


def _published(conf) -> Optional[str]:
    data = read_capped(os.path.join(lib_dir(conf), PUBLISHED), 1024)
    return None if data is None else data.decode("ascii", "replace").strip()


def publish_hostname(ctx: Context, args: dict) -> dict:
    name = socket.gethostname()
    if not name or len(name) > 255 or not all(c.isalnum() or c in "-." for c in name) \
            or not name.isascii():
        raise fail("the hostname %r cannot be published" % name[:64])
    if ctx.worker != "provisioning":
        # The monitor's call: published only when the kernel's hostname is not the one the
        # broker published last (its own record); the first call, with no record, takes the
        # current name as published (waagent's monitor starts from the name it finds).
        last = _published(ctx.conf)
        if last is None:
            atomic_write(os.path.join(lib_dir(ctx.conf), PUBLISHED), name.encode(), 0o644)
        if last is None or last == name:
            return {"hostname": name, "interface": None, "acked": False, "published": False}
    if _root(ctx.conf) != "/":
        raise fail("OS.SysRoot is not /: the network is the live kernel's, not that root's")
    default = _default_route(ctx.conf)
    if default is None:
        raise fail("no default route: no interface to publish the hostname on")
    iface = default[0]
    if "/" in iface or iface in (".", ".."):
        raise fail("no interface %r" % iface[:32])
    mac_text = read_capped(_under(ctx.conf, "sys/class/net/%s/address" % iface), 64,
                           follow=True)
    try:
        mac = bytes.fromhex((mac_text or b"").decode("ascii").strip().replace(":", ""))
    except ValueError:
        mac = b""
    if len(mac) != 6:
        raise fail("%s has no Ethernet address" % iface)
    address = _interface_address(iface)
    xid = struct.unpack("!I", os.urandom(4))[0]
    packet = dhcp_request(xid, mac, address, name)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    acked = False
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, iface.encode())
        sends = SENDS
        try:
            s.bind(("", DHCP_CLIENT_PORT))
        except OSError:
            # The DHCP client holds port 68: the server's ACK goes to it, not to us, so there
            # is nothing to wait for; the server has the name all the same.
            s.bind(("", 0))
            sends = 0
            s.sendto(packet, ("255.255.255.255", DHCP_SERVER_PORT))
        for _ in range(sends):
            s.sendto(packet, ("255.255.255.255", DHCP_SERVER_PORT))
            deadline = time.monotonic() + ACK_WAIT
            while not acked:
                left = deadline - time.monotonic()
                if left <= 0 or ctx.cancel.is_set():
                    break
                if select.select([s], [], [], min(left, 0.2))[0]:
                    acked = _is_ack(s.recv(2048), xid)
            if acked or ctx.cancel.is_set():
                break
    except OSError as e:
        raise fail("DHCP on %s: %s" % (iface, e.strerror)) from None
    finally:
        s.close()
    atomic_write(os.path.join(lib_dir(ctx.conf), PUBLISHED), name.encode(), 0o644)
    log.info("event=hostname_published hostname=%s interface=%s address=%s acked=%s", name,
             iface, address, acked)
    return {"hostname": name, "interface": iface, "acked": acked, "published": True}


# ---- SCVMM (protocol.md §3.3) ---------------------------------------------------------------

SCVMM_MARK = "linuxosconfiguration.xml"
SCVMM_INSTALLER = "install"
MAX_INSTALLER = 4 * 1024 * 1024
SCVMM_TIMEOUT = 300.0


def scvmm(ctx: Context, args: dict) -> dict:
    from supervisor.privileged import dvd
    if not ctx.conf["DetectScvmmEnv"]:
        return {"found": False, "exit_code": None}
    if which("modprobe"):    # waagent loads the IDE driver the SCVMM DVD may sit on
        run(["modprobe", "ata_piix"], timeout=30, check=False, cancel=ctx.cancel)
    device = dvd.find_device(ctx.conf)
    if device is None:
        return {"found": False, "exit_code": None}
    mount_point = ctx.conf["DVD.MountPoint"]
    ensure_root_dir(mount_point, 0o700)
    is_folder = stat.S_ISDIR(os.stat(device).st_mode)
    argv = (["mount", "--bind", "-o", "ro", device, mount_point] if is_folder else
            ["mount", "-o", "ro,nosuid,nodev", "-t", "udf,iso9660", device, mount_point])
    code, out = run(argv, timeout=60, check=False, cancel=ctx.cancel)
    if code != 0:
        raise fail("cannot mount %s: %s" % (device, out[-200:]))
    try:
        if is_folder:
            run(["mount", "-o", "remount,bind,ro", mount_point], timeout=30, check=False)
        if read_capped(os.path.join(mount_point, SCVMM_MARK), 1024 * 1024) is None:
            return {"found": False, "exit_code": None}
        script = read_capped(os.path.join(mount_point, SCVMM_INSTALLER), MAX_INSTALLER)
        if script is None:
            raise fail("SCVMM media without its %s script" % SCVMM_INSTALLER)
        # The bytes read off the root-mounted media, run from a root-only copy: no path a
        # worker could write, no file on the media executed in place.
        folder = os.path.join(ctx.conf["Agent.StateDir"], "broker", "scvmm")
        ensure_root_dir(os.path.dirname(folder), 0o700)
        ensure_root_dir(folder, 0o700)
        copy = os.path.join(folder, SCVMM_INSTALLER)
        atomic_write(copy, script, 0o700)
        log.warning("event=scvmm_found device=%s: running its installer", device)
        code, out = run(["/bin/bash", copy, "-p", mount_point], timeout=SCVMM_TIMEOUT,
                        check=False, cancel=ctx.cancel, cwd=folder)
        log.info("event=scvmm_installer exit=%d output=%r", code, out[-300:])
        return {"found": True, "exit_code": max(-255, min(255, code))}
    finally:
        code, out = run(["umount", mount_point], timeout=60, check=False)
        if code != 0:
            log.warning("event=scvmm_umount_failed at=%s output=%r", mount_point, out[-200:])


# ---- RDMA (waagent azurelinuxagent/common/rdma.py; protocol.md §9.1) --------------------------

KVP_POOL = "var/lib/hyperv/.kvp_pool_0"
KVP_KEY, KVP_VALUE = 512, 2048              # the Hyper-V KVP pool's fixed-size records
DAT_CONF = ("etc/dat.conf", "etc/rdma/dat.conf", "usr/local/etc/dat.conf")
DAT_LINE = re.compile(rb'ofa-v2-ib0 u2.0 nonthreadsafe default libdaplofa.so.2 dapl.2.0 "\S+ 0"')
HVND = "dev/hvnd_rdma"
ND_MODULE = "hv_network_direct"
RDMA_PREFIX = 16                             # waagent sets <ipv4>/16
DEVICE_WAIT, IB_WAIT = 120.0, 60.0           # waagent's waits for the device and for ib0


def _nd_version(conf) -> Optional[str]:
    """NdDriverVersion from the KVP pool the host fills (hv_kvp_daemon): a Network Direct
    (hvnd) VM; None: SR-IOV (or no KVP daemon), as waagent decides."""
    try:
        data = read_capped(_under(conf, KVP_POOL), 4 * 1024 * 1024) or b""
    except IpcError as e:
        log.warning("event=rdma_kvp_unreadable reason=%r", e.message)
        return None
    step = KVP_KEY + KVP_VALUE
    for i in range(0, len(data) - step + 1, step):
        if data[i:i + KVP_KEY].split(b"\0", 1)[0] == b"NdDriverVersion":
            value = data[i + KVP_KEY:i + step].split(b"\0", 1)[0]
            text = value.decode("ascii", "replace").strip()
            if re.fullmatch(r"[0-9A-Za-z._-]{1,64}", text):
                return text
            log.warning("event=rdma_nd_version_invalid value=%r", text[:64])
            return None
    return None


def _check_rdma_address(conf, ipv4: str, mac: str) -> None:
    """The worker's address (from SharedConfig.xml) must be a unicast address whose /16
    takes neither the WireServer's route nor another interface's network (the RDMA
    interfaces' own routes, ib* and the NIC with the RDMA MAC, are its own: a set-up done
    before)."""
    import ipaddress
    try:
        address = ipaddress.IPv4Address(ipv4)
    except ValueError:
        raise fail("rdmaIPv4Address %r is not an IPv4 address" % ipv4[:32]) from None
    if address.is_loopback or address.is_multicast or address.is_unspecified or \
            address.is_reserved or address.is_link_local:
        raise fail("rdmaIPv4Address %s is not a unicast host address" % address)
    network = ipaddress.IPv4Network("%s/%d" % (address, RDMA_PREFIX), strict=False)
    if ipaddress.IPv4Address(WIRESERVER) in network:
        raise fail("rdmaIPv4Address %s: its /%d would take the WireServer's route"
                   % (address, RDMA_PREFIX))
    own = _interface_by_mac(conf, mac)
    default = _default_route(conf)
    if own is not None and default is not None and own == default[0]:
        raise fail("rdmaMacAddress %s is %s's, the interface of the default route" % (mac, own))
    for iface, dest, gw, mask in _routes(conf):
        if not mask or iface.startswith("ib") or iface == own:
            continue
        theirs = ipaddress.IPv4Network((dest, bin(mask).count("1")), strict=False)
        if theirs.overlaps(network):
            raise fail("rdmaIPv4Address %s: its /%d overlaps %s on %s" % (
                address, RDMA_PREFIX, theirs, iface[:32]))


def _update_dat_conf(conf, ipv4: str) -> str:
    """The ofa-v2-ib0 line of the first dat.conf found; FAILED (as waagent) when none is."""
    for relative in DAT_CONF:
        path = _under(conf, relative)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            log.warning("event=rdma_dat_conf_skipped path=%s reason='not a regular file'", path)
            continue
        data = read_capped(path, 1024 * 1024) or b""
        new = DAT_LINE.sub(b'ofa-v2-ib0 u2.0 nonthreadsafe default libdaplofa.so.2 dapl.2.0 "'
                           + ipv4.encode() + b' 0"', data)
        if new != data:
            atomic_write(path, new, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        log.info("event=rdma_dat_conf path=%s changed=%s", path, new != data)
        return "/" + relative
    raise fail("RDMA: no DAPL configuration file at %s" % ", ".join("/" + p for p in DAT_CONF))


def _module_version(ctx: Context) -> Optional[Tuple[int, int]]:
    """hv_network_direct loaded (the name resolved by modprobe -R, as waagent) and its
    version, read from sysfs (/sys/module/<name>/version, what modinfo prints for a loaded
    module). Under a fixture root the live kernel's modules are not touched: the fixture's
    sys/module says which is loaded."""
    name = ND_MODULE
    if _root(ctx.conf) == "/":
        code, out = run(["modprobe", "-R", ND_MODULE], timeout=30, check=False,
                        cancel=ctx.cancel)
        resolved = out.strip().splitlines()[-1] if code == 0 and out.strip() else ""
        if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", resolved):
            name = resolved
        code, out = run(["modprobe", name], timeout=60, check=False, cancel=ctx.cancel)
        if code != 0:
            raise fail("RDMA: cannot load %s: %s" % (name, out[-200:]))
    else:
        found = sorted(glob.glob(os.path.join(glob.escape(_under(ctx.conf, "sys/module")),
                                              ND_MODULE + "*")))
        if not found:
            raise fail("RDMA: %s is not loaded (fixture root)" % ND_MODULE)
        name = os.path.basename(found[0])
    text = read_capped(_under(ctx.conf, "sys/module/%s/version" % name), 256, follow=True)
    match = re.match(rb"\s*(\d+)\.(\d+)\.(\d+)\D", (text or b"") + b"\n")
    if match is None:
        log.info("event=rdma_module_version module=%s version=unknown (assumed 4.0.x or "
                 "older)", name)
        return None
    return int(match.group(1)), int(match.group(2))


def _wait(ctx: Context, seconds: float, ready) -> bool:
    """Poll ready() once a second for up to `seconds` (waagent's waits); a fixture root does
    not change under us, so it is asked once."""
    deadline = time.monotonic() + (seconds if _root(ctx.conf) == "/" else 0)
    while True:
        if ready():
            return True
        if time.monotonic() >= deadline or ctx.cancel.wait(1.0):
            return False


def _write_hvnd(conf, ipv4: str, mac: str) -> None:
    """The one device dev/hvnd_rdma under OS.SysRoot: never through a link (O_NOFOLLOW),
    never a FIFO (O_NONBLOCK, fstat first); a character device, or under a fixture root a
    regular file standing in for it."""
    path = _under(conf, HVND)
    data = ('rdmaMacAddress="%s" rdmaIPv4Address="%s"' % (mac, ipv4)).encode("ascii")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC |
                     os.O_NOCTTY)
    except OSError as e:
        raise fail("RDMA: cannot open %s: %s" % (path, e.strerror)) from None
    try:
        st = os.fstat(fd)
        if not (stat.S_ISCHR(st.st_mode) or (_root(conf) != "/" and stat.S_ISREG(st.st_mode))):
            raise fail("RDMA: %s is not the hvnd_rdma device" % path)
        if stat.S_ISREG(st.st_mode):
            os.ftruncate(fd, 0)
        os.write(fd, data)
    finally:
        os.close(fd)
    log.info("event=rdma_device_written path=%s mac=%s ipv4=%s", path, mac, ipv4)


def _interface_by_mac(conf, mac: str) -> Optional[str]:
    """The eth* interface whose address is mac (waagent: `ifconfig -a`, eth\\d)."""
    folder = _under(conf, "sys/class/net")
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        if not re.fullmatch(r"eth\d+", name):
            continue
        text = read_capped(os.path.join(folder, name, "address"), 128, follow=True) or b""
        if text.decode("ascii", "replace").strip().lower() == mac.lower():
            return name
    return None


def _set_address(ctx: Context, iface: str, ipv4: str, up: bool) -> str:
    cidr = "%s/%d" % (ipv4, RDMA_PREFIX)
    if _root(ctx.conf) != "/":
        # The interfaces are the live kernel's, not the fixture root's: decide, not act.
        return "would set %s on %s (OS.SysRoot is not /)" % (cidr, iface)
    if up:
        run(["ip", "link", "set", "dev", iface, "up"], timeout=20, cancel=ctx.cancel)
    code, out = run(["ip", "addr", "add", cidr, "dev", iface], timeout=20, check=False,
                    cancel=ctx.cancel)
    if code != 0 and "File exists" not in out:
        raise fail("RDMA: cannot set %s on %s: %s" % (cidr, iface, out[-200:]))
    log.info("event=rdma_address_set interface=%s address=%s", iface, cidr)
    return "%s set on %s" % (cidr, iface)


def rdma(ctx: Context, args: dict) -> dict:
    ipv4, mac = args["ipv4"], args["mac"].upper()
    if not (ctx.conf["OS.EnableRDMA"] or ctx.conf["OS.CheckRdmaDriver"]):
        raise fail("RDMA is not enabled (OS.EnableRDMA=n in waagent.conf)")
    _refuse_unless_ours(ctx.conf)
    _check_rdma_address(ctx.conf, ipv4, mac)
    nd_version = _nd_version(ctx.conf)
    if nd_version is None:
        # SR-IOV (mlx): an InfiniBand device, then ib0 (IPoIB) with the address.
        ib = _under(ctx.conf, "sys/class/infiniband")
        if not _wait(ctx, DEVICE_WAIT, lambda: os.path.isdir(ib) and bool(os.listdir(ib))):
            raise fail("RDMA: no InfiniBand device in %s" % ib)
        net = _under(ctx.conf, "sys/class/net/ib0")
        if not _wait(ctx, IB_WAIT, lambda: os.path.lexists(net)):
            raise fail("RDMA: ib0 is not available")
        reason = _set_address(ctx, "ib0", ipv4, up=False)
        log.info("event=rdma kind=sriov ipv4=%s %s", ipv4, reason)
        return {"kind": "sriov", "nd_version": None, "dat_conf": None,
                "device_written": False, "interface": "ib0", "reason": reason}
    dat_conf = _update_dat_conf(ctx.conf, ipv4)
    written = False
    if not ctx.conf["OS.CheckRdmaDriver"]:
        log.info("event=rdma_driver_check skipped (OS.CheckRdmaDriver=n)")
    else:
        version = _module_version(ctx)
        if version is not None and (version[0] > 4 or (version[0] == 4 and version[1] > 0)):
            log.info("event=rdma_device_skipped driver=%d.%d (4.1 or later)" % version)
        else:
            path = _under(ctx.conf, HVND)
            if not _wait(ctx, DEVICE_WAIT, lambda: os.path.lexists(path)):
                raise fail("RDMA: %s did not show up in %d seconds" % (path, DEVICE_WAIT))
            _write_hvnd(ctx.conf, ipv4, mac)
            written = True
    iface = _interface_by_mac(ctx.conf, mac)
    if iface is None:
        raise fail("RDMA: no interface with MAC %s" % mac)
    reason = _set_address(ctx, iface, ipv4, up=True)
    log.info("event=rdma kind=network_direct nd_version=%s dat_conf=%s device_written=%s %s",
             nd_version, dat_conf, written, reason)
    return {"kind": "network_direct", "nd_version": nd_version, "dat_conf": dat_conf,
            "device_written": written, "interface": iface, "reason": reason}


# The checks waagent repeats on a period (protocol.md §9.3) the monitoring worker asks for
# again on the same period (workers/monitoring/oschecks.py, hostname.py); provisioning once,
# at boot. What each does is still the broker's to decide (waagent.conf, its own reads).
VERBS = (
    Privileged(B.SCSI_TIMEOUTS, scsi_timeouts, PROV | MON, once=PROCESS, routine=True,
               periodic=(MON, "OS.RootDeviceScsiTimeoutPeriod")),
    Privileged(B.ENTROPY, entropy, PROV, once=PROCESS),
    Privileged(B.NUMA, numa, PROV, once=PROCESS),
    Privileged(B.WIRESERVER_ROUTE, wireserver_route, PROV | MON, once=PROCESS, slow=True,
               routine=True,
               periodic=(MON, "OS.MonitorDhcpClientRestartPeriod")),
    Privileged(B.PERSISTENT_NET_RULES, persistent_net_rules, PROV | MON, once=PROCESS,
               routine=True,
               periodic=(MON, "OS.RemovePersistentNetRulesPeriod")),
    Privileged(B.PUBLISH_HOSTNAME, publish_hostname, PROV | MON, once=PROCESS, slow=True,
               periodic=(MON, "Provisioning.MonitorHostNamePeriod")),
    Privileged(B.SCVMM, scvmm, PROV, once=BOOT, slow=True),
    Privileged(B.RDMA, rdma, PROV, once=BOOT, slow=True),
)
