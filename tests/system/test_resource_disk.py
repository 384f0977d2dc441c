"""The resource disk and swap every boot (issue 12), in a real VM with systemd as PID 1.

QEMU has no vmbus, so the image names the disk (`ResourceDisk.Device=/dev/vdb`, guestvm/image.py
QEMU_CONFIG; discovery by vmbus ids is proven on the host, tests/integration/resource_disk),
with the shipped conf's ext4 and a 64 MiB swap file. The VM is the boot scenario's (agent_vm),
whose resource disk starts blank (a new qcow2). Then: a reboot (the same disk: mounted again,
not formatted, what was on it kept), and a redeploy: powered off, given a fresh disk as Azure
hands one over (an MBR with one NTFS partition, type 7), powered on with the same VM id: it is
formatted again. The tests run in file order and leave guestagent.service running."""

import subprocess
import time

import pytest

pytestmark = pytest.mark.system

MP = "/mnt/resource"
SWAP_KIB = 64 * 1024 - 4     # /proc/swaps: the file less its header page
TIMEOUT = 300


def journal(vm):
    return vm.run("journalctl -u guestagent --no-pager -o cat -b").out


def wait_done(vm):
    """Until this boot's event=resource_disk_done (the provisioning worker's line)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        log = journal(vm)
        if "event=resource_disk_done" in log:
            return log
        time.sleep(2)
    pytest.fail("no event=resource_disk_done in %ds:\n%s" % (TIMEOUT, journal(vm)[-4000:]))


def record_steps(log, timings, boot):
    """The broker's per-step seconds of this boot (event=resource_disk_mounted) as timings."""
    line = log.split("event=resource_disk_mounted", 1)[1].split("\n")[0]
    for step in ("detect", "partition", "mkfs", "mount", "swap"):
        timings[f"agent-vm: {boot}: resource disk {step}"] = float(
            line.split(f" {step}=", 1)[1].split()[0])


def check_mounted_with_readme_and_swap(vm):
    log = wait_done(vm)
    assert "event=resource_disk_done ok=true device=/dev/vdb mount_point=%s" % MP in log, log
    r = vm.run(f"findmnt -n -o SOURCE,FSTYPE {MP}", check=True)
    assert r.out.split() == ["/dev/vdb1", "ext4"], r
    r = vm.run(f"head -1 {MP}/DATALOSS_WARNING_README.txt", check=True)
    assert r.out.strip() == "WARNING: THIS IS A TEMPORARY DISK.", r
    r = vm.run(f"stat -c '%a %u %s %b %B' {MP}/swapfile; cat /proc/swaps", check=True)
    mode, uid, size, blocks, bsize = r.out.splitlines()[0].split()
    assert (mode, uid, int(size)) == ("600", "0", 64 * 1024 * 1024), r
    assert int(blocks) * int(bsize) >= int(size), r   # not sparse
    swaps = [line.split() for line in r.out.splitlines()[2:]]
    assert [(s[0], s[1], int(s[2])) for s in swaps] == [(f"{MP}/swapfile", "file", SWAP_KIB)], r
    return log


def test_first_boot_mounts_the_blank_disk_with_its_readme_and_swap(agent_vm, timings):
    log = check_mounted_with_readme_and_swap(agent_vm)
    record_steps(log, timings, "first boot")
    done = log.split("event=resource_disk_done", 1)[1].split("\n")[0]
    # mkfs ran at the VM's first boot. In the whole suite the boot scenario rebooted this
    # shared VM first: then this boot found the disk formatted (the journal is volatile, so
    # the first boot's line is gone) and the redeploy test below proves mkfs of a fresh disk.
    assert ("formatted=True" if len(agent_vm.boots) == 1 else "formatted=False") in done, log
    # The blank disk got one Linux partition in a GPT (read by the guest's own tools).
    r = agent_vm.run("sfdisk --dump /dev/vdb", check=True)
    assert "label: gpt" in r.out and r.out.count("/dev/vdb") == 2, r   # device line + 1 part
    assert r.err == "", r   # no complaint about the table the broker wrote (CRCs, backup)


def test_after_a_reboot_both_again_and_the_disk_is_not_formatted(agent_vm, timings):
    agent_vm.run(f"echo kept > {MP}/owner-file", check=True)
    timings["agent-vm: reboot to ssh (resource disk)"] = agent_vm.reboot()
    log = check_mounted_with_readme_and_swap(agent_vm)
    record_steps(log, timings, "reboot")
    assert "formatted=False" in log.split("event=resource_disk_done", 1)[1].split("\n")[0], log
    assert agent_vm.run(f"cat {MP}/owner-file", check=True).out == "kept\n"


def azure_fresh_disk(path, size_mib=1024):
    """A qcow2 as Azure hands over a resource disk after a redeploy: an MBR, one NTFS (7)
    partition from 1 MiB to the end."""
    import struct
    raw = str(path) + ".raw"
    sectors = size_mib * 2048
    with open(raw, "wb") as f:
        f.truncate(size_mib * 1024 * 1024)
        entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", 7, b"\0\0\0", 2048, sectors - 2048)
        f.write(b"\0" * 446 + entry + b"\0" * 48 + b"\x55\xaa")
        f.seek(2048 * 512 + 3)
        f.write(b"NTFS    ")
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, str(path)],
                   check=True)
    subprocess.run(["rm", "-f", raw], check=True)


def test_a_redeploy_with_a_fresh_disk_formats_it_again(agent_vm, timings):
    agent_vm.stop()
    azure_fresh_disk(agent_vm.dir / "resource.qcow2")
    timings["agent-vm: redeploy (fresh resource disk) to ssh"] = \
        agent_vm.power_cycle(vm_uuid=agent_vm.uuid)
    log = check_mounted_with_readme_and_swap(agent_vm)
    record_steps(log, timings, "redeploy")
    assert "formatted=True" in log.split("event=resource_disk_done", 1)[1].split("\n")[0], log
    assert agent_vm.run(f"test -e {MP}/owner-file").rc == 1
    r = agent_vm.run("sfdisk --part-type /dev/vdb 1", check=True)
    assert r.out.strip() == "83", r
