"""The resource disk and its swap file, every boot (protocol.md §5; verb resource_disk.activate).

The worker names nothing; the broker decides from waagent.conf and what it reads itself:
- nothing when ResourceDisk.Format=n, or when cloud-init provisions (Provisioning.Agent
  cloud-init, or auto with cloud-init enabled): the disk and swap are cloud-init's then;
- the disk: ResourceDisk.Device (a block device; where there is no vmbus, as in QEMU), else
  vmbus discovery under OS.SysRoot: Gen1's IDE port 1 (device id 00000000-0001-…), Gen2's
  SCSI controller 0 (f8b3781a-…) at LUN 1; the name under that `block` folder;
- a disk (or one of its partitions) already mounted is left alone: its mount point is used;
- the partition (partition_table.py): a GPT with several partitions becomes one, an MBR
  partition 1 of type 7 (NTFS, as Azure hands it over) becomes 83 (Linux), a blank disk gets a
  GPT; each of these is then formatted (`mkfs.<ResourceDisk.Filesystem> -F`); anything else is
  mounted as it is (after a reboot: the filesystem made last boot);
- mounted at ResourceDisk.MountPoint (root's, 0755) with ResourceDisk.MountOptions; a failed
  mount is tried again once udev has settled, and only a partition that still will not mount
  is formatted and mounted once more;
- DATALOSS_WARNING_README.txt written there;
- the swap file (ResourceDisk.EnableSwap, SwapSizeMB): `<mount point>/swapfile`, opened
  without following a link and checked (a regular root file with one link) before anything
  is done with it, through its descriptor only: a wrong-size, foreign or sparse one replaced
  (swapoff first), a new one made O_EXCL 0600 and filled (fallocate on ext4/xfs, zeros
  elsewhere), an existing one's group/other bits stripped; mkswap on /dev/fd/N and swapon(2)
  on /proc/self/fd/N, so a name swapped under us is never what is formatted or enabled.
Once per boot and VM id, recorded on the broker's disk before anything is done (gates.py): the
owner may repartition the disk after boot, and no later call this boot touches it.
"""

import errno
import logging
import os
import re
import stat
import subprocess
import time
from typing import Dict, List, Optional, Tuple

from ipc.verbs import resource_disk as R
from supervisor.broker import PROV, Context, Privileged
from supervisor.privileged import (SAFE_PATH, ensure_root_dir, fail, gates, read_capped, run,
                                   supervise, which)
from supervisor.privileged import partition_table as pt

log = logging.getLogger("guestagent.broker.resource_disk")

VMBUS = "sys/bus/vmbus/devices"
GEN1_PREFIX = "00000000-0001"
GEN2_ID = "f8b3781a-1e82-4818-a1c3-63d806ec15bb"
DEVICE_NAME = re.compile(r"[a-z][a-z0-9]{0,31}")
LUN1 = re.compile(r"\d+:\d+:\d+:1")
MAX_WALK = 4096              # sysfs entries looked at under one vmbus device
FILESYSTEM = re.compile(r"[a-z0-9]{1,16}")
README = "DATALOSS_WARNING_README.txt"
README_TEXT = b"""WARNING: THIS IS A TEMPORARY DISK.

Any data stored on this drive is SUBJECT TO LOSS and THERE IS NO WAY TO RECOVER IT.

Please do not use this disk for storing any personal or application data.

For additional details to please refer to the MSDN documentation at :
http://msdn.microsoft.com/en-us/library/windowsazure/jj672979.aspx
"""
SWAPFILE = "swapfile"
MiB = 1024 * 1024
PARTITION_WAIT = 25.0        # waagent: 5 tries 5 s apart for the partition node
MKFS_TIMEOUT = 900.0
DONE = "done already this boot"
CLOUD_INIT_UNIT = "cloud-init-local.service"
UNIT_DIRS = ("etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system")


class Steps:
    def __init__(self):
        self.seconds: Dict[str, float] = {k: 0.0 for k in
                                          ("detect", "partition", "mkfs", "mount", "swap")}

    def timed(self, name, fn, *args):
        t0 = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.seconds[name] += time.monotonic() - t0


# ---- what the broker reads ---------------------------------------------------------------
def cloud_init_provisions(conf) -> bool:
    """protocol.md §3.1: cloud-init, or auto while cloud-init is enabled (the worker's
    identity.cloud_init_enabled, which the supervisor may not import: the same rule)."""
    agent = conf.provisioning_agent
    if agent == "cloud-init":
        return True
    if agent != "auto" or os.path.exists("/etc/cloud/cloud-init.disabled"):
        return False
    try:
        cmdline = read_capped(os.path.join(conf["OS.SysRoot"] or "/", "proc/cmdline"),
                              64 * 1024, follow=True) or b""
    except Exception:  # noqa: B902 - unreadable: no override
        cmdline = b""
    if b"cloud-init=disabled" in cmdline.split():
        return False
    for unit_dir in UNIT_DIRS:
        folder = os.path.join("/", unit_dir)
        try:
            wants = [d for d in os.listdir(folder) if d.endswith(".wants")]
        except OSError:
            continue
        if any(os.path.lexists(os.path.join(folder, d, CLOUD_INIT_UNIT)) for d in wants):
            return True
    return False


def discover(sysroot: str) -> Optional[str]:
    """The resource disk's name (e.g. sdb) from the vmbus device ids under sysroot."""
    base = os.path.join(sysroot or "/", VMBUS)
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return None
    for entry in entries:
        try:
            raw = read_capped(os.path.join(base, entry, "device_id"), 256, follow=True)
        except Exception:  # noqa: B902 - an unreadable id is not the disk's
            continue
        guid = (raw or b"").decode("ascii", "replace").strip().strip("{}").lower()
        gen1, gen2 = guid.startswith(GEN1_PREFIX), guid == GEN2_ID
        if not (gen1 or gen2):
            continue
        seen = 0
        for root, dirs, _ in os.walk(os.path.join(base, entry)):
            seen += len(dirs) + 1
            if seen > MAX_WALK:
                break
            parts = root.rstrip("/").split("/")
            names = []
            if parts[-1] == "block":
                # Gen2: every disk of the VM is on this controller; only LUN 1 is ours.
                if gen2 and not (len(parts) > 1 and LUN1.fullmatch(parts[-2])):
                    continue
                names = sorted(dirs)
            else:   # older kernels: a `block:<name>` entry
                names = sorted(d.split(":", 1)[1] for d in dirs if d.startswith("block:")
                               and (gen1 or LUN1.fullmatch(parts[-1])))
            for name in names:
                if DEVICE_NAME.fullmatch(name):
                    return name
    return None


def find_device(conf) -> Tuple[str, str]:
    """(/dev/<disk>, how found); FAILED when there is none, or it is not a whole block disk."""
    configured = conf["ResourceDisk.Device"]
    if configured:
        device, how = os.path.realpath(configured), "ResourceDisk.Device"
    else:
        name = discover(conf["OS.SysRoot"])
        if name is None:
            raise fail("no resource disk: no vmbus device id of one under %s "
                       "(set ResourceDisk.Device where there is no vmbus)" % os.path.join(
                           conf["OS.SysRoot"] or "/", VMBUS))
        device, how = "/dev/" + name, "vmbus"
    if os.path.dirname(device) != "/dev" or not DEVICE_NAME.fullmatch(os.path.basename(device)):
        raise fail("the resource disk %s is not a /dev disk name" % device)
    try:
        st = os.stat(device)
    except OSError as e:
        raise fail("the resource disk %s: %s" % (device, e.strerror)) from None
    if not stat.S_ISBLK(st.st_mode):
        raise fail("the resource disk %s is not a block device" % device)
    return device, how


def partition_of(device: str) -> str:
    return device + ("p1" if device[-1].isdigit() else "1")


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounted_at(device: str) -> List[str]:
    """Where the disk or its partitions are mounted (in our namespace), in mount order."""
    name = os.path.basename(device)
    ours = re.compile(re.escape(name) + r"(p?\d+)?")
    data = read_capped("/proc/self/mounts", 4 * MiB, follow=True) or b""
    found = []
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split()
        if len(fields) < 2 or not fields[0].startswith("/dev/"):
            continue
        source = os.path.realpath(_unescape(fields[0]))
        if os.path.dirname(source) == "/dev" and ours.fullmatch(os.path.basename(source)):
            found.append(_unescape(fields[1]))
    return found


# ---- partition, mkfs, mount --------------------------------------------------------------
def prepare_partition(device: str, fs: str) -> Tuple[bool, str]:
    """The partition checks; (mkfs needed, what was found).

    The disk is read through a read-only descriptor and opened for writing only when its table
    is to change: udev watches block devices, and closing one that was open for writing makes
    it re-read the table, removing and re-adding the partition nodes for a moment. A reboot's
    mount, racing that, once found no /dev/vdb1 and (then) formatted a disk that was fine."""
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC | os.O_EXCL)   # O_EXCL: nobody mounted it
    try:
        kind, detail = pt.inspect(fd)
    finally:
        os.close(fd)
    found = "%s %s" % (kind, detail if kind != "mbr" else "type %#x" % detail)
    if not ((kind == "gpt" and detail > 1) or kind == "blank"
            or (kind == "mbr" and detail == pt.NTFS and fs != "ntfs")):
        return False, found
    fd = os.open(device, os.O_RDWR | os.O_CLOEXEC | os.O_EXCL)
    try:
        if kind == "mbr":
            pt.set_mbr_type(fd, pt.LINUX)
        else:
            pt.write_single_gpt(fd)
        try:
            pt.reread(fd)
        except OSError as e:
            raise fail("%s: the kernel did not re-read the partition table: %s"
                       % (device, e.strerror)) from None
        return True, found
    finally:
        os.close(fd)


def wait_for_node(path: str, ctx: Context, settle: bool = True) -> None:
    """The partition node, once udev is done: closing the disk after writing it makes udev
    re-read the table itself, which removes and re-adds the partition nodes for a moment
    (settle=False: nothing was written, the node is there since boot)."""
    if settle and which("udevadm"):
        run(["udevadm", "settle", "--timeout=%d" % PARTITION_WAIT], timeout=PARTITION_WAIT + 5,
            cancel=ctx.cancel, check=False)
    deadline = time.monotonic() + PARTITION_WAIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise fail("the partition %s did not appear" % path)
        if ctx.cancel.wait(0.1):
            raise fail("the supervisor is stopping")


def mkfs(ctx: Context, fs: str, partition: str) -> None:
    wait_for_node(partition, ctx)
    force = "-f" if fs in ("xfs", "btrfs") else "-F"
    run(["mkfs." + fs, force, partition], timeout=MKFS_TIMEOUT, cancel=ctx.cancel)


def mount(ctx: Context, fs: str, options: Optional[str], partition: str, mp: str) -> bool:
    argv = ["mount", "-t", fs] + (["-o", options] if options else []) + [partition, mp]
    code, out = run(argv, timeout=120, cancel=ctx.cancel, check=False)
    if code != 0:
        log.warning("event=resource_disk_mount_failed partition=%s code=%d output=%r",
                    partition, code, out[-300:])
    return code == 0 or (code == 32 and "already mounted" in out)


# ---- swap --------------------------------------------------------------------------------
def active_swaps() -> Dict[str, int]:
    data = read_capped("/proc/swaps", MiB, follow=True) or b""
    swaps = {}
    for line in data.decode("utf-8", "replace").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[2].isdigit():
            swaps[_unescape(fields[0])] = int(fields[2])
    return swaps


def _libc():
    import ctypes   # lazily: the resident supervisor needs it once a boot
    return ctypes.CDLL(None, use_errno=True), ctypes


def swap_call(name: str, fd: int) -> None:
    """swapon(2)/swapoff(2) on our open file: /proc/self/fd/N is that inode, whatever
    happens to the name (swapon(8) would resolve the name again)."""
    libc, ctypes = _libc()
    if getattr(libc, name)(("/proc/self/fd/%d" % fd).encode(), 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (name, os.strerror(e)))


def has_swap_signature(fd: int) -> bool:
    page = os.sysconf("SC_PAGE_SIZE")
    return os.pread(fd, 10, page - 10) in (b"SWAPSPACE2", b"SWAP-SPACE")


def fill(fd: int, size: int, fs: str, ctx: Context) -> str:
    """Make the file `size` bytes with every block allocated: no hole swapon would refuse."""
    if fs in ("ext4", "xfs"):
        try:
            os.posix_fallocate(fd, 0, size)
            return "fallocate"
        except OSError as e:
            log.info("event=swap_fallocate_unsupported fs=%s error=%r: writing zeros", fs,
                     e.strerror)
    zeros = b"\0" * MiB
    done = 0
    while done < size:
        if done % (64 * MiB) == 0 and ctx.cancel.is_set():
            raise fail("the supervisor is stopping")
        done += os.pwrite(fd, zeros[:min(MiB, size - done)], done)
    os.fsync(fd)
    return "zeros"


def mkswap(ctx: Context, fd: int) -> None:
    exe = which("mkswap")
    if exe is None:
        raise fail("mkswap is not installed")
    proc = subprocess.Popen([exe, "/dev/fd/%d" % fd], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=(fd,),
                            env={"PATH": SAFE_PATH, "LC_ALL": "C.UTF-8"}, cwd="/",
                            start_new_session=True)
    code, out, _, why = supervise(proc, 120, ctx.cancel)
    if why or code != 0:
        raise fail("mkswap %s: %s" % (why or "exited %s" % code,
                                      out.decode("utf-8", "replace")[-300:]))


def open_swapfile(mp: str) -> Tuple[int, Optional[int]]:
    """(mount point's descriptor, the existing swap file's descriptor or None): a name that is
    not a plain root file with one link is removed (never followed, never opened blocking)."""
    dfd = os.open(mp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = os.open(SWAPFILE, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC |
                     os.O_NOCTTY, dir_fd=dfd)
    except FileNotFoundError:
        return dfd, None
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.EACCES):
            os.close(dfd)
            raise
        log.warning("event=swapfile_replaced reason=%r", "a symlink, FIFO or folder")
        _remove(dfd)
        return dfd, None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_nlink != 1:
        log.warning("event=swapfile_replaced reason=%r uid=%d links=%d",
                    "not a plain root file", st.st_uid, st.st_nlink)
        os.close(fd)
        _remove(dfd)
        return dfd, None
    return dfd, fd


def _remove(dfd: int) -> None:
    try:
        os.unlink(SWAPFILE, dir_fd=dfd)
    except IsADirectoryError:
        os.rename(SWAPFILE, ".%s.not-a-file.%d" % (SWAPFILE, time.time()), src_dir_fd=dfd,
                  dst_dir_fd=dfd)


def enable_swap(ctx: Context, mp: str, size_mb: int, fs: str, call=None) -> str:
    """The swap file on, as §5 says; returns what was done. `call` stands for swap_call in
    the host tests (swap is the whole kernel's: only the VM test turns it on)."""
    call = call or swap_call
    size = size_mb * MiB
    path = os.path.join(os.path.realpath(mp), SWAPFILE)
    active = path in active_swaps()
    dfd, fd = open_swapfile(mp)
    try:
        if fd is not None:
            st = os.fstat(fd)
            if st.st_size == size and st.st_blocks * 512 >= size:
                os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o700)   # group/other bits stripped
                if active:
                    return "already active"
            else:
                log.info("event=swapfile_replaced reason=%r size=%d blocks=%d",
                         "wrong size or sparse", st.st_size, st.st_blocks)
                if active:
                    call("swapoff", fd)
                    active = False
                os.close(fd)
                fd = None
                os.unlink(SWAPFILE, dir_fd=dfd)
        how = "existing file"
        if fd is None:
            fd = os.open(SWAPFILE, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                         os.O_CLOEXEC, 0o600, dir_fd=dfd)
            os.fchmod(fd, 0o600)
            how = fill(fd, size, fs, ctx)
        if not has_swap_signature(fd):
            mkswap(ctx, fd)
        if active:
            return "already active"
        call("swapon", fd)
        return how
    finally:
        if fd is not None:
            os.close(fd)
        os.close(dfd)


# ---- the verb ----------------------------------------------------------------------------
def result(**fields) -> dict:
    r = {"skipped": None, "device": None, "mount_point": None, "formatted": False,
         "already_mounted": False, "swap_mb": 0, "swap_error": None,
         "seconds": {k: 0.0 for k in ("detect", "partition", "mkfs", "mount", "swap")}}
    r.update(fields)
    return r


def activate(ctx: Context, args: dict) -> dict:
    conf = ctx.conf
    # Once per boot and VM id, on the broker's disk (gates.py), recorded before anything is
    # done. A later call is answered, not a violation: the worker need not know whether a
    # run of it before a restart got this far, and nothing is touched.
    if not gates.current().record(R.ACTIVATE.name):
        return result(skipped=DONE)
    if not conf["ResourceDisk.Format"]:
        return result(skipped="ResourceDisk.Format=n")
    if cloud_init_provisions(conf):
        return result(skipped="cloud-init provisions: the resource disk and swap are its own")
    fs = conf["ResourceDisk.Filesystem"]
    if not FILESYSTEM.fullmatch(fs or ""):
        raise fail("ResourceDisk.Filesystem %r is not a filesystem name" % fs)
    steps = Steps()
    device, how = steps.timed("detect", find_device, conf)
    partition = partition_of(device)
    mounts = steps.timed("detect", mounted_at, device)
    if "/" in mounts:
        raise fail("%s holds the root filesystem: not the resource disk, refused" % device)
    already = mounts[0] if mounts else None
    formatted = False
    if already:
        mp = already
        log.info("event=resource_disk_already_mounted device=%s at=%s", device, mp)
    else:
        mp = os.path.normpath(conf["ResourceDisk.MountPoint"])
        if not os.path.isabs(mp) or mp == "/":
            raise fail("ResourceDisk.MountPoint %r is not an absolute folder" % mp)
        ensure_root_dir(mp, 0o755)
        if os.path.ismount(mp):
            raise fail("%s has something else mounted on it" % mp)
        try:
            need_mkfs, found = steps.timed("partition", prepare_partition, device, fs)
        except OSError as e:
            raise fail("%s: %s" % (device, e.strerror)) from None
        steps.timed("partition", wait_for_node, partition, ctx, need_mkfs)
        log.info("event=resource_disk_partition device=%s found=%r mkfs=%s", device, found,
                 need_mkfs)
        if need_mkfs:
            steps.timed("mkfs", mkfs, ctx, fs, partition)
            formatted = True
        options = conf["ResourceDisk.MountOptions"]
        if options in ("None", ""):
            options = None
        if not steps.timed("mount", mount, ctx, fs, options, partition, mp):
            # As waagent: once udev has settled (a node may have been away for a moment), one
            # more mount; a partition that is there and still will not mount is formatted.
            steps.timed("mount", wait_for_node, partition, ctx)
            if not steps.timed("mount", mount, ctx, fs, options, partition, mp):
                steps.timed("mkfs", mkfs, ctx, fs, partition)
                formatted = True
                if not steps.timed("mount", mount, ctx, fs, options, partition, mp):
                    raise fail("cannot mount %s on %s" % (partition, mp))
    from statefiles import write_atomic   # lazily, as supervisor.privileged.atomic_write
    try:
        write_atomic(os.path.join(mp, README), README_TEXT, 0o644)
    except OSError as e:   # e.g. MountOptions=ro: the disk is mounted all the same
        log.warning("event=resource_disk_readme_unwritable at=%s error=%r", mp, e.strerror)
    swap_mb, swap_error = 0, None
    if conf["ResourceDisk.EnableSwapEncryption"]:
        log.warning("event=swap_encryption_unsupported (FreeBSD only in waagent): plain swap")
    if conf["ResourceDisk.EnableSwap"] and conf["ResourceDisk.SwapSizeMB"] > 0:
        size_mb = conf["ResourceDisk.SwapSizeMB"]
        try:
            what = steps.timed("swap", enable_swap, ctx, mp, size_mb, fs)
            swap_mb = size_mb
            log.info("event=swap_on path=%s size_mb=%d how=%r", os.path.join(mp, SWAPFILE),
                     size_mb, what)
        except Exception as e:  # noqa: B902 - swap is not the disk: reported, never fatal
            swap_error = (getattr(e, "message", None) or str(e))[:1000]
            log.error("event=swap_failed path=%s error=%r", os.path.join(mp, SWAPFILE),
                      swap_error)
    seconds = {k: round(v, 4) for k, v in steps.seconds.items()}
    log.info("event=resource_disk_mounted device=%s found_by=%s at=%s formatted=%s "
             "already_mounted=%s swap_mb=%d %s", device, how, mp, formatted, bool(already),
             swap_mb, " ".join("%s=%.3f" % kv for kv in seconds.items()))
    return result(device=device, mount_point=mp, formatted=formatted,
                  already_mounted=bool(already), swap_mb=swap_mb, swap_error=swap_error,
                  seconds=seconds)


VERBS = (
    Privileged(R.ACTIVATE, activate, PROV, slow=True),
)
