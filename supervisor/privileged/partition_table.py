"""The resource disk's partition table, read and written in plain code (protocol.md §5).

waagent drives parted and sfdisk and reads their output; the three things it looks at are a
few bytes each, so the broker reads them itself and needs neither tool (a minimal image has
no parted, Debian ships sfdisk apart from util-linux): whether the disk is GPT and how many
partitions it has, the MBR type of partition 1, and whether the disk is blank. It writes two
things: partition 1's MBR type (7, NTFS, becomes 83, Linux) and a new GPT with one Linux
partition over the whole disk (a GPT with several partitions, as waagent, and a blank disk —
waagent gives up on one; QEMU's blank disk and a wiped one are formatted instead).
"""

import fcntl
import os
import struct
import zlib
from typing import Optional, Tuple

BLKSSZGET = 0x1268           # linux/fs.h: logical sector size
BLKGETSIZE64 = 0x80081272    # size in bytes
BLKRRPART = 0x125F           # re-read the partition table
NTFS, LINUX = 0x07, 0x83
PROTECTIVE = 0xEE
# The Linux filesystem type GUID 0fc63daf-8483-4772-8e79-3d69d8477de4, as GPT stores it (the
# first three groups little-endian); a literal, so that the resident supervisor needs no uuid.
LINUX_FS_LE = bytes.fromhex("af3dc60f838472478e793d69d8477de4")
ENTRIES, ENTRY_SIZE = 128, 128
ALIGN = 1024 * 1024          # the partition starts at 1 MiB, as parted's 0% does
BLANK_PROBE = 1024 * 1024    # a disk whose first MiB is zeros holds nothing


def geometry(fd: int) -> Tuple[int, int]:
    """(logical sector size, size in bytes) of a block device; of a file: (512, its size)."""
    try:
        buf = fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4)
        sector = struct.unpack("i", buf)[0]
        size = struct.unpack("Q", fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8))[0]
    except OSError:
        sector, size = 512, os.fstat(fd).st_size
    return sector, size


def read_at(fd: int, offset: int, length: int) -> bytes:
    return os.pread(fd, length, offset)


def inspect(fd: int) -> Tuple[str, Optional[int]]:
    """("gpt", partitions) | ("mbr", type of partition 1) | ("blank", None) | ("other", None)."""
    sector, size = geometry(fd)
    lba0 = read_at(fd, 0, 512)
    header = read_at(fd, sector, 512)
    if header[:8] == b"EFI PART":
        entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
        if not (0 < count <= 1024 and 128 <= entry_size <= 1024 and
                (entries_lba + 1) * sector + count * entry_size <= size):
            return "other", None
        table = read_at(fd, entries_lba * sector, count * entry_size)
        used = sum(1 for i in range(count)
                   if table[i * entry_size:i * entry_size + 16].strip(b"\0"))
        return "gpt", used
    if lba0[510:512] == b"\x55\xaa":
        part_type = lba0[446 + 4]
        return ("other", None) if part_type == PROTECTIVE else ("mbr", part_type)
    if not read_at(fd, 0, BLANK_PROBE).strip(b"\0"):
        return "blank", None
    return "other", None


def set_mbr_type(fd: int, part_type: int) -> None:
    """Partition 1's type byte in the MBR (sfdisk --part-type <dev> 1 <type>)."""
    lba0 = read_at(fd, 0, 512)
    if lba0[510:512] != b"\x55\xaa":
        raise ValueError("no MBR")
    os.pwrite(fd, bytes([part_type]), 446 + 4)
    os.fsync(fd)


def random_guid() -> bytes:
    """A version-4 GUID in GPT's byte order (only its uniqueness matters)."""
    b = bytearray(os.urandom(16))
    b[7] = (b[7] & 0x0F) | 0x40     # version 4 (the third group, stored little-endian)
    b[8] = (b[8] & 0x3F) | 0x80     # the RFC 4122 variant
    return bytes(b)


def _gpt_header(sector, current, backup, first, last, disk_guid, entries_lba, entries_crc):
    fields = struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0, current, backup,
                         first, last, disk_guid, entries_lba, ENTRIES, ENTRY_SIZE, entries_crc)
    fields = fields[:16] + struct.pack("<I", zlib.crc32(fields)) + fields[20:]
    return fields.ljust(sector, b"\0")


def write_single_gpt(fd: int) -> Tuple[int, int]:
    """A new GPT: one Linux filesystem partition from 1 MiB to the end (aligned down to 1 MiB),
    primary and backup tables, and a protective MBR; every other partition is gone. Returns
    the partition's (first, last) sector."""
    sector, size = geometry(fd)
    total = size // sector
    table_sectors = ENTRIES * ENTRY_SIZE // sector
    first_usable, last_usable = 2 + table_sectors, total - 2 - table_sectors
    first = ALIGN // sector
    last = (last_usable + 1) // (ALIGN // sector) * (ALIGN // sector) - 1
    if last <= first:
        last = last_usable
    if last <= first:
        raise ValueError("the disk is too small for a partition (%d bytes)" % size)
    entry = LINUX_FS_LE + random_guid() + struct.pack("<QQQ", first, last, 0) + \
        "primary".encode("utf-16-le").ljust(72, b"\0")
    entries = entry.ljust(ENTRIES * ENTRY_SIZE, b"\0")
    crc = zlib.crc32(entries)
    disk_guid = random_guid()
    count = min(total - 1, 0xFFFFFFFF)
    pmbr = b"\0" * 446 + struct.pack("<B3sB3sII", 0, b"\0\x02\0", PROTECTIVE, b"\xff\xff\xff",
                                     1, count) + b"\0" * 48 + b"\x55\xaa"
    os.pwrite(fd, pmbr.ljust(sector, b"\0"), 0)
    os.pwrite(fd, _gpt_header(sector, 1, total - 1, first_usable, last_usable, disk_guid, 2,
                              crc), sector)
    os.pwrite(fd, entries, 2 * sector)
    backup_entries = total - 1 - table_sectors
    os.pwrite(fd, entries, backup_entries * sector)
    os.pwrite(fd, _gpt_header(sector, total - 1, 1, first_usable, last_usable, disk_guid,
                              backup_entries, crc), (total - 1) * sector)
    # Old filesystem signatures at the start of the new partition would make a mount guess.
    os.pwrite(fd, b"\0" * min(ALIGN, (last - first) * sector), first * sector)
    os.fsync(fd)
    return first, last


def reread(fd: int) -> None:
    """Have the kernel read the new table (blockdev --rereadpt)."""
    fcntl.ioctl(fd, BLKRRPART)
