"""Which VM this is (reference/protocol.md §3.4 step 1), and whether cloud-init provisions it (§3.1).

The VM id is SMBIOS's product_uuid (read by the broker: the file is 0400 root) with the first
three GUID groups byte-swapped, because Azure stores them mixed-endian; that is the form
waagent writes in the `provisioned` marker and the one the metadata service calls vmId. A
marker matches when it equals the id, or its unswapped form, ignoring case.

cloud-init "enabled" is waagent's test made from files, so it works without systemd as PID 1
(and on the host tests' copy of /etc): cloud-init-local.service wanted by some target, and no
/etc/cloud/cloud-init.disabled and no `cloud-init=disabled` on the kernel command line.
"""

import glob
import os
import re
from typing import Optional

GUID_RE = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
UNIT = "cloud-init-local.service"
# SMBIOS chassis asset tag of every Azure VM (what cloud-init's ds-identify checks).
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
UNIT_DIRS = ("etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system",
             "run/systemd/system")


def _swap(hexstring: str) -> str:
    return "".join(reversed([hexstring[i:i + 2] for i in range(0, len(hexstring), 2)]))


def swap_guid(guid: str) -> str:
    """The GUID with its first three groups byte-swapped (an involution)."""
    parts = guid.split("-")
    if len(parts) != 5:
        raise ValueError("not a GUID")
    return "-".join([_swap(parts[0]), _swap(parts[1]), _swap(parts[2]), parts[3], parts[4]])


def vm_id(product_uuid: Optional[str]) -> Optional[str]:
    """The VM id from SMBIOS's product_uuid (lower case), or None if there is none."""
    if not product_uuid:
        return None
    value = product_uuid.strip()
    if not GUID_RE.fullmatch(value):
        return None
    return swap_guid(value).lower()


def marker_matches(marker: Optional[str], current: Optional[str]) -> bool:
    if not marker or not current:
        return False
    marker = marker.strip().lower()
    current = current.lower()
    if marker == current:
        return True
    return GUID_RE.fullmatch(marker) is not None and swap_guid(marker) == current


def _under(root: str, relative: str) -> str:
    return os.path.join(root or "/", relative)


def cloud_init_enabled(sysroot: str = "/", root: str = "/") -> bool:
    """The unit files and /etc/cloud are read under root, /proc/cmdline under OS.SysRoot."""
    if os.path.exists(_under(root, "etc/cloud/cloud-init.disabled")):
        return False
    try:
        with open(_under(sysroot, "proc/cmdline"), "rb") as f:
            if b"cloud-init=disabled" in f.read(64 * 1024).split():
                return False
    except OSError:
        pass
    for unit_dir in UNIT_DIRS:
        if glob.glob(os.path.join(_under(root, unit_dir), "*.wants", UNIT)):
            return True
    return False


def on_azure(sysroot: str = "/") -> bool:
    try:
        with open(_under(sysroot, "sys/class/dmi/id/chassis_asset_tag"), "rb") as f:
            return f.read(128).strip().decode("ascii", "replace") == AZURE_ASSET_TAG
    except OSError:
        return False
