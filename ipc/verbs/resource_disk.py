"""The resource disk and its swap file (reference/protocol.md §5): one verb, every boot.

The worker that asks (provisioning, at the start of its every-boot run) names nothing: no
device, no mount point, no size. The broker decides everything from waagent.conf
(ResourceDisk.*, Provisioning.Agent) and from what it reads itself (vmbus ids under
OS.SysRoot, /proc/self/mounts, /proc/swaps, the disk's partition table). Once per boot and VM
id, recorded on the broker's disk before it runs: a second call (a retry, a restart, an
attacker) is answered `skipped` and touches nothing, so a disk its owner repartitioned later
in the boot is left as it is.
"""

from ipc.schema import Bool, Int, Nullable, Num, Obj, Str
from ipc.verbs import declare

PATH = Str(1024, 1)
SECONDS = Num(0, 86400)

ACTIVATE = declare(
    "resource_disk.activate",
    """Format (if fresh) and mount the resource disk, write DATALOSS_WARNING_README.txt, and
    turn on the swap file, as ResourceDisk.* says. skipped names why nothing was done
    (Format=n, cloud-init provisions, done already this boot); the disk found and its mount point; formatted when mkfs
    ran; already_mounted when it was mounted before (left alone); swap_mb the active swap
    file's size (0: none), swap_error why it is off when it should be on; seconds per step.
    FAILED when the disk cannot be found or mounted (never fatal to the caller).""",
    result=Obj({"skipped": Nullable(Str(200)), "device": Nullable(PATH),
                "mount_point": Nullable(PATH), "formatted": Bool(), "already_mounted": Bool(),
                "swap_mb": Int(0, 2 ** 31), "swap_error": Nullable(Str(1000)),
                "seconds": Obj({"detect": SECONDS, "partition": SECONDS, "mkfs": SECONDS,
                                "mount": SECONDS, "swap": SECONDS})}),
    timeout=1800.0,
)
