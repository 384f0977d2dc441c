"""The Debian package in a real VM (issue 16): an image that had Debian's waagent package gets
guestagent's .deb with `dpkg -i`, boots with the emulator's DVD and is provisioned as in
test_provisioning.py; then `dpkg -r guestagent` leaves no unit and no worker running.

The guest has no network: the host fetches Debian's waagent and the two packages it needs that
the base image lacks with `apt-get download` (kept in the image cache), and both installs run in
the image's root with chroot, as an image maintainer builds an image. The package is the run's
one (conftest's agent_deb), which the other scenarios' agent image has too. One VM boot.
"""

import json
import shutil
import time

import pytest

from guestvm import image as _image
from guestvm.image import PROJECT, QEMU_CONFIG, AgentImage, _run, dpkg_install
from guestvm.services import Emulator
from guestvm.vm import VM

pytestmark = pytest.mark.system

SCENARIO_FILE = PROJECT / "emulator" / "scenarios" / "default.json"
USER = json.loads(SCENARIO_FILE.read_text())["vm"]["username"]
FORMER_PACKAGES = ("waagent", "python3-distro", "lsb-release")
PROVISION_TIMEOUT = 300
VM_UUID = "2468ace0-1357-9bdf-0246-8ace13579bdf"


@pytest.fixture(scope="module")
def deb_image(base_image, agent_deb, tmp_path_factory, timings):
    """The base image with Debian's waagent installed, then the run's package (agent_deb, the
    one the agent image has too) installed over it with dpkg -i."""
    t0 = time.monotonic()
    out = tmp_path_factory.mktemp("deb-image")
    log = out / "build.log"
    rootfs = out / "rootfs"
    _run(["cp", "-a", "--reflink=auto", str(base_image.rootfs), str(rootfs)], log=log)
    # The image as it was: Debian's waagent, its unit enabled by its own postinst.
    dpkg_install(rootfs, _image.debian_debs(FORMER_PACKAGES), log)
    # The maintainer's settings: Debian's file has Provisioning.Agent=cloud-init, this image
    # is provisioned by the agent; and QEMU's (no vmbus, the emulator's address).
    conf = rootfs / "etc/waagent.conf"
    text = conf.read_text()
    assert "Provisioning.Agent=cloud-init\n" in text
    conf.write_text(text.replace("Provisioning.Agent=cloud-init\n", "Provisioning.Agent=waagent\n")
                    + QEMU_CONFIG)
    dpkg_install(rootfs, [agent_deb], log, "--force-confold")
    _run(["mkfs.ext4", "-q", "-F", "-L", "vmroot", "-E", "root_owner=0:0", "-d", str(rootfs),
          str(out / "root.raw"), _image.DISK_SIZE], log=log)
    shutil.rmtree(rootfs)
    timings["deb image (dpkg -i over waagent)"] = time.monotonic() - t0
    return AgentImage(out, base_image)


@pytest.fixture(scope="module")
def deb_vm(deb_image, run_dir, timings):
    emu = Emulator(SCENARIO_FILE, run_dir / "deb-emulator").start()
    vm = VM(deb_image, run_dir / "deb-vm", name="deb-vm", forwards=emu.forwards,
            dvd=emu.media(run_dir / "deb-vm-dvd", iso=True), vm_uuid=VM_UUID)
    try:
        t0 = time.monotonic()
        vm.start()
        deadline = t0 + PROVISION_TIMEOUT
        while time.monotonic() < deadline:
            states = [((r.get("document") or {}).get("state"))
                      for r in emu.state()["received"]["health"]]
            if "Ready" in states:
                break
            time.sleep(1)
        timings["deb-vm: power-on to Ready recorded"] = time.monotonic() - t0
        yield vm, emu
    finally:
        vm.stop()
        vm.discard_disks()
        emu.stop()


def test_installed_over_waagent_the_agent_provisions_the_vm(deb_vm):
    vm, emu = deb_vm
    healths = [((r.get("document") or {}).get("state")) for r in emu.state()["received"]["health"]]
    assert "Ready" in healths, (healths, vm.run("journalctl -u guestagent --no-pager | tail -40").out)
    r = vm.run("dpkg-query -W -f='${db:Status-Status}' waagent; echo;"
               "dpkg-query -W -f='${db:Status-Status}' guestagent; echo;"
               "systemctl is-active guestagent.service; systemctl is-active walinuxagent.service;"
               "getent passwd %s | cut -d: -f1; /usr/sbin/waagent -version | head -1" % USER)
    lines = r.out.splitlines()
    assert lines[0] in ("config-files", "not-installed"), r
    assert lines[1:3] == ["installed", "active"], r
    assert lines[3] != "active", r
    assert lines[4] == USER, r
    assert lines[5].startswith("WALinuxAgent-2.15"), r
    # dpkg --force-confold kept the image's /etc/waagent.conf (Debian's, as edited above).
    conf = vm.run("cat /etc/waagent.conf").out
    assert "Provisioning.Agent=waagent" in conf and "Protocol.Endpoint=" in conf
    # The former agent's init script (kept: a conffile) has no start link.
    assert vm.run("ls /etc/rc2.d/S*walinuxagent").rc != 0


def test_dpkg_r_leaves_no_unit_running(deb_vm):
    vm, _ = deb_vm
    r = vm.run("dpkg -r guestagent", timeout=300)
    assert r.rc == 0, r
    units = vm.run("systemctl list-units --all --no-legend --plain 'guestagent*' "
                   "--state=active,activating,deactivating").out.strip()
    assert units == "", units
    procs = vm.run("pgrep -a -u guestagent-prov,guestagent-ext,guestagent-mon,guestagent-logs;"
                   "pgrep -af guestagentd").out.strip()
    assert procs == "", procs
    assert vm.run("systemctl is-active walinuxagent.service").out.strip() != "active"
    assert vm.run("test -e /usr/lib/guestagent || test -e /usr/sbin/waagent").rc != 0
