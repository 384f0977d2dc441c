"""A resource disk on the host: a sparse file on a loop device (`losetup -P`, so the kernel
makes the partition nodes), laid out as Azure hands it over (an MBR with one NTFS partition,
type 7), blank, or as a GPT with several partitions; and a vmbus fixture tree under an
OS.SysRoot that names it as Gen1's or Gen2's resource disk (protocol.md §5).

A kernel built without partition parsers (CONFIG_MSDOS_PARTITION and CONFIG_EFI_PARTITION
off, as some CI hosts' are) makes no /dev/loopNp1. There, and only there, the test makes
the node the kernel would: a second loop device over partition 1's bytes (where the broker's
own table puts it), its node named loopNp1. Everything else is the real path; the VM test
proves the kernel's own partition nodes."""

import contextlib
import os
import stat
import struct
import subprocess
import uuid
import zlib

import pytest

MiB = 1024 * 1024
GEN1_ID = "{00000000-0001-8899-0000-000000000000}"
GEN2_ID = "{f8b3781a-1e82-4818-a1c3-63d806ec15bb}"
OS_DISK_ID = "{00000000-0000-8899-0000-000000000000}"   # IDE port 0: the OS disk, not ours
LINUX_FS = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")


def mbr(part_type: int, start: int = 2048, sectors: int = 0) -> bytes:
    """Sector 0 with one primary partition of the given type (Azure's fresh disk: 7)."""
    entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", part_type, b"\0\0\0", start, sectors)
    return b"\0" * 446 + entry + b"\0" * 48 + b"\x55\xaa"


def gpt(total_sectors: int, partitions) -> dict:
    """{offset: bytes} of a GPT (protective MBR, header, entries) with the given
    (first, last) partitions, for writing into an image."""
    entries = b""
    for first, last in partitions:
        entries += LINUX_FS.bytes_le + uuid.uuid4().bytes_le + struct.pack("<QQQ", first, last, 0) \
            + "part".encode("utf-16-le").ljust(72, b"\0")
    entries = entries.ljust(128 * 128, b"\0")
    header = struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0, 1,
                         total_sectors - 1, 34, total_sectors - 34, uuid.uuid4().bytes_le, 2,
                         128, 128, zlib.crc32(entries))
    header = header[:16] + struct.pack("<I", zlib.crc32(header)) + header[20:]
    return {0: mbr(0xEE, 1, total_sectors - 1), 512: header.ljust(512, b"\0"), 1024: entries}


@contextlib.contextmanager
def loop_disk(folder, size_mib=96, layout="azure"):
    """A loop device over a sparse file; yields its name (e.g. loop3). layout: azure (MBR,
    one NTFS partition, type 7), blank (zeros), gpt2 (GPT with two partitions)."""
    if os.geteuid() != 0:
        pytest.skip("a loop device needs root")
    path = os.path.join(folder, "resource.img")
    sectors = size_mib * MiB // 512
    with open(path, "wb") as f:
        f.truncate(size_mib * MiB)
        if layout == "azure":
            f.write(mbr(7, 2048, sectors - 2048))
            f.seek(2048 * 512 + 3)
            f.write(b"NTFS    ")   # the OEM id of an NTFS boot sector
        elif layout == "gpt2":
            half = sectors // 2
            for offset, data in gpt(sectors, [(2048, half - 1), (half, sectors - 34)]).items():
                f.seek(offset)
                f.write(data)
    dev = _losetup(["-P", path])
    name = os.path.basename(dev)
    stand_in = node = None
    try:
        if not kernel_parses_partitions():
            # Partition 1 where the broker's table puts it: from 1 MiB, to the end (MBR as
            # Azure's) or to the last whole MiB before the backup GPT (a table the broker wrote).
            end = size_mib * MiB if layout == "azure" else \
                ((sectors - 34 + 1) // 2048 * 2048) * 512
            stand_in = _losetup(["-o", str(MiB), "--sizelimit", str(end - MiB), path])
            node = dev + "p1"
            os.mknod(node, stat.S_IFBLK | 0o600, os.stat(stand_in).st_rdev)
        yield name
    finally:
        if node:
            os.unlink(node)
        for d in (stand_in, dev):
            if d:
                subprocess.run(["losetup", "-d", d], capture_output=True)


def _losetup(args):
    p = subprocess.run(["losetup", "-f", "--show"] + args, capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip("no loop device: %s" % p.stderr.strip())
    return p.stdout.strip()


_PARSES = []


def kernel_parses_partitions() -> bool:
    """Does this kernel make partition nodes from an MBR (probed once, on a loop device)?"""
    if not _PARSES:
        import tempfile
        with tempfile.NamedTemporaryFile() as f:
            f.truncate(4 * MiB)
            f.write(mbr(0x83, 2048, 4096))
            f.flush()
            dev = _losetup(["-P", f.name])
            try:
                name = os.path.basename(dev)
                _PARSES.append(os.path.exists("/sys/block/%s/%sp1" % (name, name)))
            finally:
                subprocess.run(["losetup", "-d", dev], capture_output=True)
    return _PARSES[0]


def vmbus_tree(sysroot, device, gen=2):
    """sys/bus/vmbus/devices under sysroot: the OS disk on IDE port 0, and `device` on IDE
    port 1 (Gen1) or at LUN 1 of SCSI controller 0 (Gen2, where LUN 0 is the OS disk)."""
    base = os.path.join(sysroot, "sys", "bus", "vmbus", "devices")

    def node(guid, *parts):
        d = os.path.join(base, guid.strip("{}"))
        os.makedirs(os.path.join(d, *parts), exist_ok=True)
        with open(os.path.join(d, "device_id"), "w") as f:
            f.write(guid + "\n")
    node(OS_DISK_ID, "host0", "target0:0:0", "0:0:0:0", "block", "sda")
    if gen == 1:
        node(GEN1_ID, "host1", "target1:0:1", "1:0:1:0", "block", device)
    else:
        node(GEN2_ID, "host2", "target2:0:0", "2:0:0:0", "block", "sdz")
        node(GEN2_ID, "host2", "target2:0:0", "2:0:0:1", "block", device)
    return sysroot
