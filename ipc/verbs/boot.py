"""The per-boot verbs: what waagent does to the kernel and the network on every start
(reference/protocol.md §3.3 SCVMM, §9.1, §9.3; waagent 2.0 for entropy and NUMA), and the
hostname's publication by DHCP.

None but boot.rdma takes an argument: the broker decides every value from its own state —
waagent.conf (OS.RootDeviceScsiTimeout, DetectScvmmEnv, Protocol.Endpoint), what it reads
under OS.SysRoot (/sys, /proc, the grub and udev files of that root), the kernel's hostname.
boot.rdma's two addresses come from SharedConfig.xml, which only the worker fetches: the
broker checks them itself (syntax, a /16 that takes no route of this machine) and writes only
to paths it fixes. The provisioning worker calls them, each at most once per worker process
(the SCVMM installer and RDMA once per boot and VM id, on the broker's disk); the monitoring
worker may repeat SCSI timeouts, persistent net rules, the WireServer route and the hostname's
publication on their waagent.conf periods, never sooner than half of one. A failure is an
answer (FAILED), never fatal to provisioning: the worker logs it and goes on.
"""

from ipc.schema import Bool, Enum, Int, List, Nullable, Obj, Str
from ipc.verbs import declare

REASON = Str(300)
DEVICE = Str(32, 1, r"[A-Za-z0-9_.:-]+")

SCSI_TIMEOUTS = declare(
    "boot.scsi_timeouts",
    """Write OS.RootDeviceScsiTimeout (seconds; unset: nothing) to the timeout of every SCSI
    disk, /sys/block/sd*/device/timeout under OS.SysRoot: the OS disk and the data disks.
    Returns the timeout applied (null when unset) and the disks written.""",
    result=Obj({"timeout": Nullable(Int(1, 3600)), "devices": List(DEVICE, 256)}),
    timeout=30.0,
)

ENTROPY = declare(
    "boot.entropy",
    """Hyper-V's entropy: the ACPI OEM0 table (/sys/firmware/acpi/tables/OEM0 under
    OS.SysRoot, 64 bytes on Hyper-V) written into /dev/random, before SSH host keys are made.
    Returns the bytes written (0 where there is no such table).""",
    result=Obj({"bytes": Int(0, 65536)}),
)

NUMA = declare(
    "boot.numa",
    """Linux 2.6.37 crashes on Hyper-V's virtual NUMA: on that kernel with more than one NUMA
    node, `numa=off` is added to the kernel command line in the grub configuration (under
    OS.SysRoot) for the next boot. Anything else: nothing changed, and why.""",
    result=Obj({"changed": Bool(), "reason": REASON}),
)

WIRESERVER_ROUTE = declare(
    "boot.wireserver_route",
    """A route to the WireServer (168.63.129.16/32) via the default gateway, when DHCP gave
    none (a client that ignores the classless-route options 121/249). Not with a
    Protocol.Endpoint of another address. Returns whether one was added, and why not.""",
    result=Obj({"added": Bool(), "reason": REASON}),
    timeout=30.0,
)

# The files boot.persistent_net_rules moves, under OS.SysRoot (the monitoring worker looks for
# them before it asks).
NET_RULES = ("lib/udev/rules.d/75-persistent-net-generator.rules",
             "etc/udev/rules.d/70-persistent-net.rules")

PERSISTENT_NET_RULES = declare(
    "boot.persistent_net_rules",
    """Interface-name stability: udev's persistent-net generator and its rules
    (lib/udev/rules.d/75-persistent-net-generator.rules, etc/udev/rules.d/70-persistent-net.rules
    under OS.SysRoot) moved into Lib.Dir, so a new NIC MAC (a redeploy, a captured image) is
    still eth0. Links are moved as links, never followed. Returns the files moved.""",
    result=Obj({"moved": List(Str(256), 4)}),
)

PUBLISH_HOSTNAME = declare(
    "boot.publish_hostname",
    """Publish the kernel's hostname to the platform's DNS: a DHCPREQUEST (rebinding: the
    interface's own address, broadcast on the interface of the default route) carrying it as
    option 12, without taking the interface down. Returns the name, the interface, and
    whether the DHCP server acknowledged. Provisioning's call always publishes; the
    monitoring worker's (every Provisioning.MonitorHostNamePeriod) only when the hostname is
    not the one the broker published last (Lib.Dir/published_hostname): otherwise
    published=false and no interface.""",
    result=Obj({"hostname": Str(255, 1), "interface": Nullable(DEVICE), "acked": Bool(),
                "published": Bool()}),
    timeout=30.0,
)

SCVMM = declare(
    "boot.scvmm",
    """With DetectScvmmEnv=y: the provisioning media mounted read-only; when it holds
    linuxosconfiguration.xml, System Center VMM provisions this VM: its `install` script,
    read off the media by the broker into a root-only copy, run as root with `-p <mount>`
    (protocol.md §3.3). Once per boot and VM id. Returns whether SCVMM was found and the
    installer's exit code.""",
    result=Obj({"found": Bool(), "exit_code": Nullable(Int(-255, 255))}),
    timeout=360.0,
)

# The RDMA addresses as SharedConfig.xml gives them (the worker's reading of a platform
# document): the broker checks them again against its own state before any write.
IPV4 = Str(15, 7, r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
                  r"(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}")
MAC = Str(17, 17, r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")

RDMA = declare(
    "boot.rdma",
    """waagent's RDMA set-up (OS.EnableRDMA or OS.CheckRdmaDriver), with the rdmaIPv4Address
    and rdmaMacAddress of SharedConfig.xml's Instance. With a Network Direct driver (its
    NdDriverVersion in the Hyper-V KVP pool, var/lib/hyperv/.kvp_pool_0 under OS.SysRoot): the
    IPv4 into the ofa-v2-ib0 line of the first dat.conf found (etc/dat.conf, etc/rdma/dat.conf,
    usr/local/etc/dat.conf); with OS.CheckRdmaDriver, the hv_network_direct module loaded and,
    below version 4.1, `rdmaMacAddress="<mac>" rdmaIPv4Address="<ipv4>"` written to the one
    device dev/hvnd_rdma (a character device, never a link or FIFO); then the interface with
    that MAC brought up with <ipv4>/16. Without one (SR-IOV): once an InfiniBand device shows
    in sys/class/infiniband, ib0 gets <ipv4>/16. The address is refused where its /16 would
    take the WireServer's or another interface's route. Once per boot. Under a fixture
    OS.SysRoot the live network is not touched: the interface step says what it would do.""",
    args=Obj({"ipv4": IPV4, "mac": MAC}),
    result=Obj({"kind": Enum("network_direct", "sriov"), "nd_version": Nullable(Str(64)),
                "dat_conf": Nullable(Str(64)), "device_written": Bool(),
                "interface": Nullable(DEVICE), "reason": REASON}),
    timeout=240.0,
)
