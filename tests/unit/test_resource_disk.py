"""The resource disk's plain-code pieces (protocol.md §5): vmbus discovery over fixture trees,
and the partition table read and written on an image file (no root, no device)."""

import os
import struct
import zlib

import pytest

from supervisor.privileged import partition_table as pt
from supervisor.privileged import resource_disk as rd
from tests.integration.resource_disk.disk import (GEN1_ID, GEN2_ID, LINUX_FS, MiB, gpt, mbr,
                                                  vmbus_tree)


@pytest.mark.parametrize("gen", [1, 2])
def test_discovery_finds_the_resource_disk_not_the_os_disk(tmp_path, gen):
    assert rd.discover(vmbus_tree(str(tmp_path), "sdb", gen=gen)) == "sdb"


def test_discovery_gen2_needs_lun_1(tmp_path):
    base = tmp_path / "sys/bus/vmbus/devices" / GEN2_ID.strip("{}")
    (base / "host0/target0:0:0/0:0:0:0/block/sda").mkdir(parents=True)
    (base / "device_id").write_text(GEN2_ID)
    assert rd.discover(str(tmp_path)) is None
    (base / "host0/target0:0:0/0:0:0:1/block/sdb").mkdir(parents=True)
    assert rd.discover(str(tmp_path)) == "sdb"


def test_discovery_older_kernels_block_colon_name(tmp_path):
    base = tmp_path / "sys/bus/vmbus/devices/vmbus_1"
    (base / "host1/target1:0:1/1:0:1:0/block:sdc").mkdir(parents=True)
    (base / "device_id").write_text(GEN1_ID)
    assert rd.discover(str(tmp_path)) == "sdc"


def test_discovery_refuses_names_that_are_not_disk_names(tmp_path):
    base = tmp_path / "sys/bus/vmbus/devices/vmbus_1"
    (base / "host1/t/block/..sda").mkdir(parents=True)
    (base / "device_id").write_text(GEN1_ID)
    assert rd.discover(str(tmp_path)) is None
    assert rd.discover(str(tmp_path / "none")) is None


def disk_file(tmp_path, size=16 * MiB, parts=None):
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in (parts or {}).items():
            f.seek(offset)
            f.write(data)
    return os.open(path, os.O_RDWR)


def test_inspect_tells_the_layouts_apart(tmp_path):
    sectors = 16 * MiB // 512
    fd = disk_file(tmp_path, parts={0: mbr(7, 2048, sectors - 2048)})
    assert pt.inspect(fd) == ("mbr", pt.NTFS)
    pt.set_mbr_type(fd, pt.LINUX)
    assert pt.inspect(fd) == ("mbr", pt.LINUX)
    os.close(fd)
    fd = disk_file(tmp_path)
    assert pt.inspect(fd) == ("blank", None)
    os.pwrite(fd, b"data", 4096)
    assert pt.inspect(fd) == ("other", None)   # not a table, not blank: left alone
    os.close(fd)
    fd = disk_file(tmp_path, parts=gpt(sectors, [(2048, 4095), (4096, sectors - 34)]))
    assert pt.inspect(fd) == ("gpt", 2)
    os.close(fd)


def test_new_gpt_is_valid_with_one_aligned_partition_and_a_backup(tmp_path):
    sectors = 16 * MiB // 512
    fd = disk_file(tmp_path, parts=gpt(sectors, [(2048, 4095), (4096, sectors - 34)]))
    first, last = pt.write_single_gpt(fd)
    assert pt.inspect(fd) == ("gpt", 1)
    assert first == 2048 and (last + 1) % 2048 == 0 and last <= sectors - 34
    for lba in (1, sectors - 1):
        header = os.pread(fd, 92, lba * 512)
        assert header[:8] == b"EFI PART"
        crc = struct.unpack_from("<I", header, 16)[0]
        assert zlib.crc32(header[:16] + b"\0" * 4 + header[20:]) == crc
        entries_lba = struct.unpack_from("<Q", header, 72)[0]
        entries = os.pread(fd, 128 * 128, entries_lba * 512)
        assert zlib.crc32(entries) == struct.unpack_from("<I", header, 88)[0]
        assert struct.unpack_from("<QQ", entries, 32) == (first, last)
        assert entries[:16] == LINUX_FS.bytes_le   # the Linux filesystem type
        assert not entries[128:].strip(b"\0")
    assert os.pread(fd, 2, 510) == b"\x55\xaa" and os.pread(fd, 1, 450) == b"\xee"
    os.close(fd)
