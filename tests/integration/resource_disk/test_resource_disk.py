"""The resource disk through the broker's real handler (protocol.md §5, issue 12), on the host:
a sparse file on a loop device is the disk, found through a vmbus fixture tree under
OS.SysRoot (or named by ResourceDisk.Device), partitioned, formatted by mkfs, mounted with
ResourceDisk.MountOptions and given its README, each run in a private mount namespace
(in_namespace.py) that ends with the run: the next run is the next boot.

The swap file is made, checked and mkswap'ed for real; swapon(2)/swapoff(2) are recorded
instead of called, because swap is the whole host kernel's (the VM test turns it on)."""

import json
import os
import struct
import subprocess

import pytest

from supervisor.privileged import partition_table as pt
from tests.integration import supervisor_harness as harness
from tests.integration.resource_disk.disk import MiB, loop_disk, vmbus_tree

SWAP_MB = 8


@pytest.fixture(autouse=True)
def host_swap_untouched():
    """Swap is the whole host kernel's: no test here may turn any on (or off)."""
    with open("/proc/swaps") as f:
        before = f.read()
    yield
    with open("/proc/swaps") as f:
        assert f.read() == before


def boot(tmp_path, conf, *actions):
    """One boot's worth of actions in a mount namespace of its own; their outcomes."""
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", harness.PYTHON, "-m",
                        "tests.integration.resource_disk.in_namespace", conf,
                        json.dumps([list(a) for a in actions])],
                       capture_output=True, text=True, cwd=harness.ROOT, timeout=300,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": harness.ROOT})
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def write_conf(tmp_path, **keys):
    values = {"ResourceDisk.Format": "y", "ResourceDisk.Filesystem": "ext4",
              "ResourceDisk.MountPoint": str(tmp_path / "mnt" / "resource"),
              "Provisioning.Agent": "waagent", "OS.SysRoot": str(tmp_path / "sysroot"),
              "ResourceDisk.EnableSwap": "y", "ResourceDisk.SwapSizeMB": str(SWAP_MB)}
    values.update({k.replace("_", "."): v for k, v in keys.items()})
    path = tmp_path / "waagent.conf"
    path.write_text("".join("%s=%s\n" % kv for kv in values.items()))
    return str(path)


def image(tmp_path):
    return str(tmp_path / "resource.img")


def table_of(tmp_path):
    fd = os.open(image(tmp_path), os.O_RDONLY)
    try:
        return pt.inspect(fd)
    finally:
        os.close(fd)


def ext4_at(tmp_path, offset=MiB):
    with open(image(tmp_path), "rb") as f:
        f.seek(offset + 1024 + 56)
        return struct.unpack("<H", f.read(2))[0] == 0xEF53


def test_azure_disk_is_retyped_formatted_mounted_and_kept_on_the_next_boot(tmp_path):
    """Azure's fresh disk (MBR, partition 1 NTFS type 7), found at Gen2's SCSI LUN 1."""
    with loop_disk(str(tmp_path), layout="azure") as dev:
        vmbus_tree(str(tmp_path / "sysroot"), dev, gen=2)
        conf = write_conf(tmp_path, ResourceDisk_MountOptions="nodev,noexec")
        mp = str(tmp_path / "mnt" / "resource")
        first, mounts, readme, again, mine = boot(
            tmp_path, conf, ["activate"], ["mounts"], ["readme"], ["activate"],
            ["sh", "echo kept > %s/mine" % mp])
        assert mine["rc"] == 0, mine
        assert first["ok"], first
        r = first["result"]
        assert (r["device"], r["mount_point"], r["formatted"], r["already_mounted"]) == \
            ("/dev/" + dev, mp, True, False), r
        assert [m[:3] for m in mounts] == [["/dev/%sp1" % dev, mp, "ext4"]], mounts
        assert {"nodev", "noexec"} <= set(mounts[0][3].split(",")), mounts
        assert readme.startswith("WARNING: THIS IS A TEMPORARY DISK.\n"), readme
        assert table_of(tmp_path) == ("mbr", pt.LINUX)
        assert ext4_at(tmp_path)
        assert r["swap_mb"] == SWAP_MB and r["swap_error"] is None, r
        assert first["swap_calls"] == ["swapon"], first
        assert set(r["seconds"]) == {"detect", "partition", "mkfs", "mount", "swap"}
        # Once a boot: a second call is answered and does nothing.
        assert again["ok"] and again["result"]["skipped"] == "done already this boot", again
        assert again["result"]["device"] is None and again["swap_calls"] == [], again
        # The next boot (not a redeploy): a type-83 partition with a filesystem is mounted
        # as it is, what was on it still there.
        # The disk is only read: closing it after opening it for writing would make udev
        # re-read the table and take /dev/...p1 away while the mount looks for it (a VM's
        # reboot once lost that race and formatted the disk).
        nxt, mounts, kept = boot(tmp_path, conf, ["watched_activate", "/dev/" + dev],
                                 ["mounts"], ["sh", "cat %s/mine" % mp])
        assert nxt["ok"] and not nxt["result"]["formatted"], nxt
        assert nxt["close_writes"] == 0, nxt
        assert mounts and kept["out"] == "kept\n", (mounts, kept)
        # A boot where something else mounted it first (fstab, an admin): left alone, no
        # mkfs, the README and the swap file go where it is.
        elsewhere = str(tmp_path / "elsewhere")
        _, r, readme = boot(
            tmp_path, conf,
            ["sh", "mkdir -p %s && mount /dev/%sp1 %s" % (elsewhere, dev, elsewhere)],
            ["activate"], ["sh", "head -1 %s/DATALOSS_WARNING_README.txt" % elsewhere])
        assert r["ok"] and r["result"]["already_mounted"], r
        assert (r["result"]["mount_point"], r["result"]["formatted"]) == (elsewhere, False), r
        assert r["result"]["seconds"]["mkfs"] == 0 and r["result"]["swap_mb"] == SWAP_MB, r
        assert readme["out"] == "WARNING: THIS IS A TEMPORARY DISK.\n", readme


@pytest.mark.parametrize("layout", ["blank", "gpt2"])
def test_blank_disk_and_gpt_with_several_partitions_get_one_partition(tmp_path, layout):
    """A GPT with several partitions becomes one (waagent), a blank disk (QEMU's, a wiped one)
    gets one too; found at Gen1's IDE port 1; ext3, waagent's default, with its swap file
    written with zeros (ext3 has no fallocate)."""
    with loop_disk(str(tmp_path), layout=layout) as dev:
        vmbus_tree(str(tmp_path / "sysroot"), dev, gen=1)
        conf = write_conf(tmp_path, ResourceDisk_Filesystem="ext3")
        first, mounts, swap = boot(tmp_path, conf, ["activate"], ["mounts"], ["swap"])
        assert first["ok"] and first["result"]["formatted"], first
        assert table_of(tmp_path) == ("gpt", 1)
        assert [m[2] for m in mounts] == ["ext3"], mounts
        assert swap["stat"]["allocated"] >= SWAP_MB * MiB, swap
        nxt, = boot(tmp_path, conf, ["activate"])
        assert nxt["ok"] and not nxt["result"]["formatted"], nxt


def test_swap_file_is_made_non_sparse_0600_and_mkswapped(tmp_path):
    with loop_disk(str(tmp_path), layout="azure") as dev:
        conf = write_conf(tmp_path, ResourceDisk_Device="/dev/" + dev,
                          ResourceDisk_EnableSwap="n")
        mp = str(tmp_path / "mnt" / "resource")
        sw = os.path.join(mp, "swapfile")
        (_, made, again, _, chmodded, _, wrong, _, link, _, foreign) = boot(
            tmp_path, conf, ["activate"], ["swap"], ["swap"],
            ["sh", "chmod 0644 %s" % sw], ["swap"],
            ["sh", "rm %s && head -c 1048576 /dev/zero > %s" % (sw, sw)], ["swap"],
            ["sh", "rm %s && ln -s /etc/passwd %s" % (sw, sw)], ["swap"],
            ["sh", "rm %s && install -o nobody -m 0600 /dev/null %s && truncate -s %dM %s"
             % (sw, sw, SWAP_MB, sw)], ["swap"])
        st = made["stat"]
        assert (st["mode"], st["size"], st["uid"]) == (0o600, SWAP_MB * MiB, 0), made
        assert st["allocated"] >= SWAP_MB * MiB, made   # non-sparse: every block allocated
        assert made["signature"] == "SWAPSPACE2" and made["calls"] == ["swapon"], made
        # Not active (swapon recorded, not called): the right file is kept, turned on again.
        assert again["stat"]["ino"] == st["ino"] and again["calls"] == ["swapon"], again
        # An existing file's group and other bits are stripped, the file kept.
        assert chmodded["stat"]["mode"] == 0o600 and chmodded["stat"]["ino"] == st["ino"]
        # A wrong size is replaced by a new file of the right one.
        assert wrong["stat"]["size"] == SWAP_MB * MiB and wrong["signature"] == "SWAPSPACE2"
        # A symlink is removed, never followed; /etc/passwd untouched.
        assert not link["stat"]["link"] and link["stat"]["size"] == SWAP_MB * MiB, link
        # Someone else's file of the right size is not used as root's swap: replaced.
        assert foreign["stat"]["uid"] == 0 and foreign["signature"] == "SWAPSPACE2", foreign
    with open("/etc/passwd") as f:
        assert f.read(5) == "root:"


def test_nothing_is_done_when_it_is_not_ours(tmp_path):
    with loop_disk(str(tmp_path), layout="azure") as dev:
        vmbus_tree(str(tmp_path / "sysroot"), dev)
        for keys, why in (({"ResourceDisk_Format": "n"}, "ResourceDisk.Format=n"),
                          ({"Provisioning_Agent": "cloud-init"}, "cloud-init provisions")):
            conf = write_conf(tmp_path, **keys)
            r, mounts = boot(tmp_path, conf, ["activate"], ["mounts"])
            assert r["ok"] and r["result"]["skipped"].startswith(why), r
            assert mounts == []
        assert table_of(tmp_path) == ("mbr", pt.NTFS)


def test_no_disk_is_a_clear_failure_that_touches_nothing(tmp_path):
    os.makedirs(tmp_path / "sysroot")
    r, = boot(tmp_path, write_conf(tmp_path), ["activate"])
    assert not r["ok"] and "no resource disk" in r["error"], r
    not_a_disk = tmp_path / "file"
    not_a_disk.write_bytes(b"\0" * 4096)
    r, = boot(tmp_path, write_conf(tmp_path, ResourceDisk_Device=str(not_a_disk)),
              ["activate"])
    assert not r["ok"] and "not a /dev disk" in r["error"], r
    assert not os.path.ismount(tmp_path / "mnt" / "resource")
