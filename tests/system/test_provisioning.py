"""Provisioning from /dev/sr0 end to end (issue 7), in a real VM with systemd as PID 1.

One VM for the module, with a fixed SMBIOS UUID, booted with the emulator's own DVD for its
default scenario (``python -m emulator media``: ISO 9660 + UDF, on the CD-ROM) and served by an
emulator of its own, so what it records is this VM's alone. Checked from outside (the
emulator's record, an ssh login as the provisioned user through a 127.0.0.1 forward) and from
inside (what a VM owner checks). Then the same VM is rebooted: nothing is provisioned again;
last, its disk is booted under a new UUID (a captured image deployed afresh) and provisioned
anew. The tests run in file order and share the VM.
"""

import json
import re
import subprocess
import time

import pytest

from guestvm.image import PROJECT
from guestvm.services import Emulator

pytestmark = pytest.mark.system

SCENARIO_FILE = PROJECT / "emulator" / "scenarios" / "default.json"
SCENARIO = json.loads(SCENARIO_FILE.read_text())
USER = SCENARIO["vm"]["username"]
PASSWORD = SCENARIO["vm"]["password"]
HOSTNAME = SCENARIO["vm"]["hostname"]
# The scenario's ssh keys come from its certificate "ssh": this is the matching private key.
USER_KEY = SCENARIO_FILE.parent / "certs" / "ssh.prv"
HOME = f"/home/{USER}"
# Fixed, and not symmetric, so the byte swap of the first three groups shows in the marker.
VM_UUID = "12345678-9abc-def0-1234-56789abcdef0"
VM_ID = "78563412-bc9a-f0de-1234-56789abcdef0"   # what waagent writes in the marker
# The same disk booted under another UUID: a captured image deployed afresh.
NEW_UUID = "0a0b0c0d-0e0f-1011-1213-141516171819"
NEW_VM_ID = "0d0c0b0a-0f0e-1110-1213-141516171819"
PROVISION_TIMEOUT = 300  # from power-on; Python under TCG is ~10x slower than on the host


def health(emu):
    return [((r.get("document") or {}).get("state"), (r.get("document") or {}).get("substatus"),
             (r.get("document") or {}).get("description"), r["valid"])
            for r in emu.state()["received"]["health"]]


@pytest.fixture(scope="module")
def emulator(run_dir):
    emu = Emulator(SCENARIO_FILE, run_dir / "prov-emulator").start()
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def prov_vm(vm_factory, emulator, run_dir, timings):
    dvd = emulator.media(run_dir / "prov-vm-dvd", iso=True)
    t0 = time.monotonic()
    vm = vm_factory("prov-vm", forwards=emulator.forwards, dvd=dvd, vm_uuid=VM_UUID)
    deadline = t0 + PROVISION_TIMEOUT
    while time.monotonic() < deadline:
        states = [h[:2] for h in health(emulator)]
        if ("Ready", None) in states or ("NotReady", "ProvisioningFailed") in states:
            break
        time.sleep(1)
    timings["prov-vm: power-on to Ready recorded"] = time.monotonic() - t0
    yield vm
    vm.stop()  # free the host's cores for the rest of the suite


@pytest.fixture(scope="module")
def user_key(tmp_path_factory):
    key = tmp_path_factory.mktemp("prov-key") / "id_user"
    key.write_bytes(USER_KEY.read_bytes())
    key.chmod(0o600)
    return key


def ssh_as_user(vm, key, cmd, input=None, attempts=5):
    """Log in as the provisioned user with the scenario's key, as the VM owner would."""
    argv = ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "ControlPath=none", "-o", "ConnectTimeout=30", "-i", str(key),
            "-p", str(vm.ssh_port), f"{USER}@127.0.0.1", cmd]
    for attempt in range(attempts):
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120, input=input,
                           stdin=None if input is not None else subprocess.DEVNULL)
        # 255 with no output: sshd was restarting (provisioning restarts it); try again.
        if not (p.returncode == 255 and "Permission denied" not in p.stderr):
            break
        time.sleep(3)
    with open(vm.dir / "commands.log", "a") as f:
        f.write(f"$ [{USER}] {cmd}\n[rc={p.returncode}]\n{p.stdout}\n[stderr]\n{p.stderr}\n\n")
    return p


def provisioning_worker(vm):
    r = vm.run("agentctl status --json", timeout=60)
    assert r.rc in (0, 6), r
    return {w["name"]: w for w in json.loads(r.out)["workers"]}["provisioning"]


def wait_provisioning_exited(vm, timeout=150):
    deadline = time.monotonic() + timeout
    while True:
        w = provisioning_worker(vm)
        if w["state"] not in ("STOPPED", "STARTING", "RUNNING") or time.monotonic() > deadline:
            return w
        time.sleep(2)


def journal(vm, args="-b"):
    return vm.run(f"journalctl -u guestagent --no-pager -o cat {args}").out


def assert_no_password_anywhere(vm):
    """The password is on the DVD only: not in the saved ovf-env.xml, a log, the journal or
    the agent's state. The pattern reaches grep through a file in /dev/shm (not searched),
    written from stdin, so it is on no command line."""
    where = "/var/log /var/lib/waagent /var/lib/guestagent /run/guestagent /etc /tmp /root /home"
    r = vm.run("p=$(mktemp -p /dev/shm) && cat > $p && grep -cF -f $p $p && "
               f"grep -rlsF -f $p {where}; journalctl -b --no-pager -o cat | grep -cF -f $p; "
               "rm -f $p", input=PASSWORD + "\n")
    # The pattern matches itself (1), no file is named, and the journal has 0 such lines.
    assert r.out.split() == ["1", "0"], r


def test_provisioned_from_the_dvd(prov_vm, emulator):
    states = health(emulator)
    assert ("Ready", None) in [h[:2] for h in states], (states, journal(prov_vm))
    w = wait_provisioning_exited(prov_vm)
    assert (w["state"], w["last_exit"]) == ("EXITED", "exit 0"), (w, journal(prov_vm))
    assert w["message"] == "provisioning: provisioned", w
    log = journal(prov_vm)
    # The OVF came from the real CD-ROM, mounted by the broker, and it was ejected.
    assert "event=ovf_read device=/dev/sr0 " in log, log
    assert "event=dvd_mount_failed" not in log and "event=dvd_eject_failed" not in log, log
    assert "event=dvd_ejected device=/dev/sr0 " in log, log
    assert "event=provisioned user=%s " % USER in log, log
    assert "event=provisioning_failed" not in log, log
    # Provisioning.Agent=auto with no cloud-init in the image: the agent provisioned itself.
    r = prov_vm.run("waagent -show-configuration", check=True, timeout=60)
    conf = dict(line.split(" = ", 1) for line in r.out.splitlines() if " = " in line)
    assert (conf["Provisioning.Agent"], conf["Provisioning.Enabled"]) == ("auto", "y"), r
    r = prov_vm.run("dpkg-query -W -f='${Status}' cloud-init 2>/dev/null; ls -d /etc/cloud "
                    "/etc/systemd/system/*.wants/cloud-init* /lib/systemd/system/cloud-init* "
                    "2>/dev/null")
    assert r.out.strip() == "", r
    assert "cloud_init_provisions" not in log


def test_provisioning_log_on_the_serial_console(prov_vm):
    """protocol.md §3.6: until provisioning has ended, the log is echoed to /dev/console,
    which is the serial console a VM owner reads in boot diagnostics."""
    console = prov_vm.console()
    assert "guestagent: supervisor: event=console_echo state=on device=/dev/console" in console
    assert re.search(r"guestagent: provisioning\[\d+\]: event=user user=%s created=True"
                     % USER, console), prov_vm.tail_serial(80)
    # The echo ends with provisioning: the last agent line says so, and the provisioning
    # worker's exit, logged after it, is in the journal only.
    ours = [line for line in console.splitlines() if " guestagent: " in line]
    assert "guestagent: supervisor: event=console_echo state=off" in ours[-1], ours[-5:]
    assert "event=exit worker=provisioning " not in console
    assert "event=exit worker=provisioning " in journal(prov_vm)
    assert PASSWORD not in console


def test_platform_recorded_starting_then_one_ready(emulator):
    states = health(emulator)
    assert all(valid for *_, valid in states), states
    assert states[0][:3] == ("NotReady", "Provisioning", "Starting"), states
    assert [s[:2] for s in states].count(("Ready", None)) == 1, states
    assert states[-1][0] == "Ready", states
    assert not [s for s in states if s[1] == "ProvisioningFailed"], states


def test_platform_recorded_the_vms_host_key_thumbprint(prov_vm, emulator):
    """roleProperties (protocol.md §1.10) after Ready: the thumbprint is what ssh-keygen -lf
    says of the VM's host key (rsa: Provisioning.SshHostKeyPairType's default), colons out."""
    received = emulator.state()["received"].get("role_properties", [])
    assert len(received) == 1 and received[0]["valid"], received
    props = [i["properties"] for i in received[0]["document"]["instances"]]
    r = prov_vm.run("ssh-keygen -lf /etc/ssh/ssh_host_rsa_key.pub", check=True)
    assert props == [{"CertificateThumbprint": r.out.split()[1].replace(":", "")}], (props, r)


def test_user_groups_password_and_sudoers(prov_vm):
    r = prov_vm.run(f"getent passwd {USER}", check=True)
    name, _, uid, gid, _, home, shell = r.out.strip().split(":")
    assert (home, shell) == (HOME, "/bin/bash") and int(uid) >= 1000, r
    # Provisioning.UserGroups is unset in the image: the user's own group alone.
    assert prov_vm.run(f"id -Gn {USER}", check=True).out.split() == [USER]
    r = prov_vm.run(f"getent shadow {USER} | cut -d: -f2", check=True)
    assert r.out.startswith("$6$") and len(r.out.strip()) > 20, "not a SHA-512 crypt hash"
    r = prov_vm.run("stat -c '%U %G %a' /etc/sudoers.d/waagent; cat /etc/sudoers.d/waagent; "
                    "visudo -c -q", check=True)
    # A password was given, so sudo asks for it (waagent's rule).
    assert r.out.splitlines() == ["root root 440", f"{USER} ALL=(ALL) ALL"], r


def test_ssh_folder_keys_and_sshd_config(prov_vm, user_key):
    r = prov_vm.run(f"stat -c '%n %U %a' {HOME}/.ssh {HOME}/.ssh/authorized_keys "
                    f"{HOME}/.ssh/id_rsa {HOME}/.ssh/id_rsa.pub", check=True)
    got = {line.split()[0]: line.split()[1:] for line in r.out.splitlines()}
    assert got == {f"{HOME}/.ssh": [USER, "700"], f"{HOME}/.ssh/authorized_keys": [USER, "600"],
                   f"{HOME}/.ssh/id_rsa": [USER, "600"], f"{HOME}/.ssh/id_rsa.pub": [USER, "644"]}
    wanted = subprocess.run(["ssh-keygen", "-y", "-f", str(user_key)], capture_output=True,
                            text=True, check=True).stdout.split()[:2]
    keys = prov_vm.run(f"cat {HOME}/.ssh/authorized_keys", check=True).out.splitlines()
    assert [k.split()[:2] for k in keys] == [wanted], keys
    r = prov_vm.run(f"cat {HOME}/.ssh/id_rsa.pub", check=True)
    assert r.out.split()[:2] == wanted, r
    r = prov_vm.run("grep -E '^(PasswordAuthentication|ChallengeResponseAuthentication|"
                    "ClientAliveInterval) ' /etc/ssh/sshd_config; sshd -t", check=True)
    # disable_ssh_password_authentication is false in the scenario; 180 is the default.
    assert sorted(r.out.splitlines()) == ["ChallengeResponseAuthentication yes",
                                          "ClientAliveInterval 180",
                                          "PasswordAuthentication yes"], r


def test_hostname(prov_vm):
    r = prov_vm.run("hostname; cat /etc/hostname; hostnamectl hostname 2>/dev/null || "
                    "hostnamectl --static", check=True)
    assert r.out.split() == [HOSTNAME] * 3, r


def test_marker_and_saved_ovf(prov_vm):
    r = prov_vm.run("cat /sys/class/dmi/id/product_uuid; cat /var/lib/waagent/provisioned; "
                    "stat -c '%U %a' /var/lib/waagent/provisioned /var/lib/waagent/ovf-env.xml",
                    check=True)
    assert r.out.split("\n")[:4] == [VM_UUID, VM_ID, "root 600", "root 600"], r
    saved = prov_vm.run("cat /var/lib/waagent/ovf-env.xml", check=True).out
    assert "<UserPassword>*</UserPassword>" in saved, saved
    assert f"<UserName>{USER}</UserName>" in saved and PASSWORD not in saved
    # Nothing left mounted from the DVD.
    assert prov_vm.run("grep -c /dev/sr0 /proc/mounts").out.strip() == "0"


def test_no_password_in_any_log(prov_vm):
    assert_no_password_anywhere(prov_vm)


def test_ssh_login_as_the_provisioned_user(prov_vm, user_key):
    p = ssh_as_user(prov_vm, user_key, "id -un; hostname; sudo -n true 2>/dev/null; echo $?")
    assert p.returncode == 0, p
    assert p.stdout.split() == [USER, HOSTNAME, "1"], p  # sudo asks for the password...
    # ...and the password the agent hashed is the scenario's (on stdin, never on argv).
    p = ssh_as_user(prov_vm, user_key, "sudo -S -p '' id -u", input=PASSWORD + "\n")
    assert (p.returncode, p.stdout.strip()) == (0, "0"), p
    assert_no_password_anywhere(prov_vm)


def test_reboot_does_not_provision_again(prov_vm, emulator, user_key, timings):
    before = prov_vm.run("stat -c %Y.%i /var/lib/waagent/provisioned; "
                         "cat /var/lib/waagent/provisioned", check=True).out
    reports = len(emulator.state()["received"]["health"])
    timings["prov-vm: reboot to ssh"] = prov_vm.reboot()
    w = wait_provisioning_exited(prov_vm)
    assert (w["state"], w["last_exit"]) == ("EXITED", "exit 0"), (w, journal(prov_vm))
    assert w["message"] == "provisioning: already provisioned", w
    log = journal(prov_vm)
    assert f"event=already_provisioned vm_id={VM_ID}" in log, log
    assert "event=ovf_read" not in log and "event=provisioned " not in log, log
    after = prov_vm.run("stat -c %Y.%i /var/lib/waagent/provisioned; "
                        "cat /var/lib/waagent/provisioned", check=True).out
    assert after == before
    # No health report at all from this boot (the status blob carries Ready).
    time.sleep(2)
    states = health(emulator)
    assert len(states) == reports, states
    assert [s[:2] for s in states].count(("Ready", None)) == 1, states
    p = ssh_as_user(prov_vm, user_key, "id -un")
    assert (p.returncode, p.stdout.strip()) == (0, USER), p
    assert_no_password_anywhere(prov_vm)


def test_new_vm_id_provisions_afresh(prov_vm, emulator, user_key, timings):
    """The same disk under a new SMBIOS UUID (a captured image deployed afresh, its DVD
    attached again): the previous VM's state is forgotten and the VM provisioned again."""
    reports = len(emulator.state()["received"]["health"])
    t0 = time.monotonic()
    timings["prov-vm: power-cycle with a new uuid to ssh"] = prov_vm.power_cycle(NEW_UUID)
    deadline = t0 + PROVISION_TIMEOUT
    while time.monotonic() < deadline:
        new = health(emulator)[reports:]
        if [h for h in new if h[0] == "Ready" or h[1] == "ProvisioningFailed"]:
            break
        time.sleep(1)
    new = health(emulator)[reports:]
    assert [h[:3] for h in new] == [("NotReady", "Provisioning", "Starting"),
                                    ("Ready", None, None)], (new, journal(prov_vm))
    w = wait_provisioning_exited(prov_vm)
    assert (w["state"], w["last_exit"], w["message"]) == (
        "EXITED", "exit 0", "provisioning: provisioned"), (w, journal(prov_vm))
    log = journal(prov_vm)
    assert f"event=vm_id_changed previous={VM_ID} current={NEW_VM_ID}" in log, log
    assert "event=previous_vm_forgotten" in log and "event=user_exists user=%s" % USER in log
    r = prov_vm.run("cat /sys/class/dmi/id/product_uuid /var/lib/waagent/provisioned",
                    check=True)
    assert r.out.split() == [NEW_UUID, NEW_VM_ID], r
    # Provisioning again left one key line and one sudoers line, not two.
    r = prov_vm.run(f"wc -l < {HOME}/.ssh/authorized_keys; wc -l < /etc/sudoers.d/waagent",
                    check=True)
    assert r.out.split() == ["1", "1"], r
    p = ssh_as_user(prov_vm, user_key, "id -un")
    assert (p.returncode, p.stdout.strip()) == (0, USER), p
    assert_no_password_anywhere(prov_vm)
