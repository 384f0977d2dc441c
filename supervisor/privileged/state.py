"""The provisioning state in Lib.Dir (root, 0700): the `provisioned` marker, `disable_agent`,
and the previous VM's protocol state removed when the VM id changes (protocol.md §3.4, §6.3).
Also SMBIOS's product_uuid, which only root may read, for the worker to derive the VM id.

The VM id is the broker's own: read from product_uuid here, with the first three GUID groups
byte-swapped as waagent writes it (the same rule as workers/provisioning/identity.py, which
the supervisor may not import). `finish` writes that id, never one a worker sends, and
`forget_previous_vm` runs only when the marker names another VM.
"""

import glob
import logging
import os
import re
import shutil

from typing import Optional

from config.version import AGENT_NAME, WAAGENT_VERSION
from ipc.verbs import provisioning as P
from supervisor.broker import BOOT, PROCESS, PROV, PROVISIONING, Context, Privileged
from supervisor.privileged import agent_events, atomic_write, fail, gates, lib_dir, read_capped

log = logging.getLogger("guestagent.broker.provisioning")

MARKER = "provisioned"
DISABLE_AGENT = "disable_agent"
PRODUCT_UUID = "sys/class/dmi/id/product_uuid"
GUID_RE = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
# protocol.md §6.3: what a new VM must not inherit from the captured one.
PREVIOUS_VM_FILES = ("HostingEnvironmentConfig.xml", "Incarnation", "partition", "Protocol",
                     "SharedConfig.xml", "WireServerEndpoint", "published_hostname",
                     "fast_track.json", "initial_goal_state", "waagent_rsm_update",
                     "waagent_initial_update")
PREVIOUS_VM_GLOBS = ("Extensions.*.xml", "ExtensionsConfig.*.xml", "GoalState.*.xml")
EXTENSION_GLOBS = ("status/*.status", "config/*.settings", "config/HandlerStatus", "mrseq")
# §6.3 with §6.1 step 3: the captured VM's DHCP leases would give the new one its old address
# and WireServer. Under OS.SysRoot, where endpoint discovery reads them (workers/platform/
# endpoint.py), so tests point both at a fixture tree.
LEASE_DIRS = ("var/lib/dhclient", "var/lib/dhcpcd", "var/lib/dhcp")
LEASE_GLOBS = ("var/db/dhclient.leases.*", "var/lib/NetworkManager/dhclient-*.lease",
               "run/systemd/netif/leases/*")
# §6.1 step 10: waagent's network-setup unit and script (waagent's firewall at boot), which an
# image captured from a waagent VM may carry. (Step 11, waagent's cgroup drop-ins: guestagent
# writes none, and waagent's unit is not ours to edit.)
NETWORK_SETUP_UNIT = "etc/systemd/system/waagent-network-setup.service"
NETWORK_SETUP_SCRIPT = "waagent-network-setup.py"


def _text(data):
    if data is None:
        return None
    return data.decode("ascii", "replace").strip()[:128]


def read_marker(conf) -> Optional[str]:
    folder = conf["Lib.Dir"]
    if not os.path.isdir(folder):
        return None
    try:
        return _text(read_capped(os.path.join(folder, MARKER), 4096))
    except Exception as e:  # noqa: B902 - a marker that is not a file: none, logged
        log.warning("event=marker_unreadable error=%r", str(e))
        return None


def product_uuid(conf) -> Optional[str]:
    path = os.path.join(conf["OS.SysRoot"] or "/", PRODUCT_UUID)
    try:
        uuid = _text(read_capped(path, 64, follow=True))
    except Exception as e:  # noqa: B902 - an unreadable uuid is "none", logged
        log.warning("event=product_uuid_unreadable path=%s error=%r", path, str(e))
        return None
    if uuid is not None and not GUID_RE.fullmatch(uuid):
        log.warning("event=product_uuid_malformed path=%s", path)
        return None
    return uuid


def _swap(hexstring: str) -> str:
    return "".join(reversed([hexstring[i:i + 2] for i in range(0, len(hexstring), 2)]))


def swap_guid(guid: str) -> str:
    p = guid.split("-")
    return "-".join([_swap(p[0]), _swap(p[1]), _swap(p[2]), p[3], p[4]])


def current_vm_id(conf) -> Optional[str]:
    """The VM id as waagent writes it in the marker (lower case), from SMBIOS; None if none."""
    uuid = product_uuid(conf)
    return swap_guid(uuid).lower() if uuid else None


def marker_matches(marker: Optional[str], vm_id: Optional[str]) -> bool:
    """The marker names this VM: equal to the id, or to its unswapped form, ignoring case."""
    if not marker or not vm_id:
        return False
    marker = marker.strip().lower()
    if marker == vm_id:
        return True
    return GUID_RE.fullmatch(marker) is not None and swap_guid(marker) == vm_id


def write_marker(conf, vm_id: str) -> None:
    atomic_write(os.path.join(lib_dir(conf), MARKER), vm_id.encode() + b"\n", 0o600)


def state(ctx: Context, args: dict) -> dict:
    folder = ctx.conf["Lib.Dir"]
    g = gates.current()
    return {"marker": read_marker(ctx.conf), "product_uuid": product_uuid(ctx.conf),
            "disable_agent": os.path.lexists(os.path.join(folder, DISABLE_AGENT)),
            "gate_open": gates.PROVISIONING not in g.closed, "done": sorted(g.done)[:16]}


def finish(ctx: Context, args: dict) -> dict:
    vm_id = current_vm_id(ctx.conf) if args["vm_id"] is not None else None
    if args["vm_id"] is not None:
        if vm_id is None:
            raise fail("no VM id: product_uuid is unreadable, the marker cannot be written")
        if args["vm_id"].lower() != vm_id:
            raise fail("that is not this VM's id (%s)" % vm_id)
    if vm_id is None and not args["disable_agent"]:
        log.info("event=provisioning_gate_closed marker=unchanged")
        return {}
    folder = lib_dir(ctx.conf)
    if vm_id is not None:
        write_marker(ctx.conf, vm_id)
    if args["disable_agent"]:
        atomic_write(os.path.join(folder, DISABLE_AGENT), b"", 0o600)
    log.info("event=provisioning_gate_closed marker=%s disable_agent=%s",
             "written" if vm_id else "unchanged", args["disable_agent"])
    if vm_id is not None:
        agent_events.operation(ctx.conf, AGENT_NAME, WAAGENT_VERSION, "Provision", True,
                               "Provisioning succeeded")
    return {}


def forget_previous_vm(ctx: Context, args: dict) -> dict:
    # The broker's own comparison: only a marker naming another VM means a captured image.
    marker, vm_id = read_marker(ctx.conf), current_vm_id(ctx.conf)
    if not marker or vm_id is None or marker_matches(marker, vm_id):
        raise fail("the VM id did not change (marker %s, VM id %s): nothing to forget"
                   % ("absent" if not marker else "equal" if vm_id else "present",
                      vm_id or "unknown"))
    folder = lib_dir(ctx.conf)
    doomed = [os.path.join(folder, name) for name in PREVIOUS_VM_FILES]
    for pattern in PREVIOUS_VM_GLOBS:
        doomed += glob.glob(os.path.join(glob.escape(folder), pattern))
    for ext_dir in glob.glob(os.path.join(glob.escape(folder), "*-*")):
        if os.path.isdir(ext_dir) and not os.path.islink(ext_dir):
            for pattern in EXTENSION_GLOBS:
                doomed += glob.glob(os.path.join(glob.escape(ext_dir), pattern))
    doomed.append(os.path.join(folder, NETWORK_SETUP_SCRIPT))
    sysroot = ctx.conf["OS.SysRoot"] or "/"
    doomed.append(os.path.join(sysroot, NETWORK_SETUP_UNIT))
    for pattern in LEASE_GLOBS:
        doomed += glob.glob(os.path.join(glob.escape(sysroot), pattern))
    removed = 0
    for path in doomed:
        try:
            if os.path.isfile(path) or os.path.islink(path):
                os.unlink(path)
                removed += 1
        except OSError as e:
            log.warning("event=forget_failed path=%s error=%r", path, e.strerror)
    for name in LEASE_DIRS:
        path = os.path.join(sysroot, name)
        try:
            if os.path.islink(path):
                os.unlink(path)   # the link, never what it points at
            elif os.path.isdir(path):
                shutil.rmtree(path)
            else:
                continue
            removed += 1
        except OSError as e:
            log.warning("event=forget_failed path=%s error=%r", path, e.strerror)
    log.info("event=previous_vm_forgotten removed=%d", removed)
    return {"removed": removed}


VERBS = (
    Privileged(P.STATE, state, PROV),
    Privileged(P.FORGET_VM, forget_previous_vm, PROV, once=BOOT, gate=PROVISIONING, slow=True),
    Privileged(P.FINISH, finish, PROV, once=PROCESS, gate=PROVISIONING, closes=PROVISIONING),
)


def load_gates(conf) -> gates.Gates:
    """The gates at the supervisor's start, from disk and from what the broker reads itself."""
    vm_id = current_vm_id(conf)
    g = gates.Gates(os.path.join(conf["Agent.StateDir"], "broker", gates.FILE),
                    gates.boot_id(conf), vm_id)
    g.load()
    marker = read_marker(conf)
    why = None
    if conf.provisioning_agent == "disabled":
        why = "agent_disabled"
    elif marker_matches(marker, vm_id):
        why = "provisioned"
    if why is not None:
        g.closed.add(PROVISIONING)
    if why == "agent_disabled" and vm_id is not None and not marker_matches(marker, vm_id):
        try:
            write_marker(conf, vm_id)
            log.info("event=marker_written vm_id=%s reason=agent_disabled", vm_id)
        except Exception as e:  # noqa: B902 - logged; the gate is closed all the same
            log.error("event=marker_unwritable error=%r", str(e)[:200])
    log.info("event=gates boot_id=%s vm_id=%s closed=%s done=%s%s", g.boot, vm_id,
             ",".join(sorted(g.closed)) or "-", ",".join(sorted(g.done)) or "-",
             " reason=%s" % why if why else "")
    gates.CURRENT = g
    return g
