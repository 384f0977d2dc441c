"""`waagent -deprovision[+user]` on a root prefix (OS.SysRoot): the real command, the real
useradd/userdel/usermod (with --prefix), and a tree that holds both what must go and what an
image keeps. What the command must not touch is checked by comparing the whole tree."""

import hashlib
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

OVF = """<?xml version="1.0" encoding="utf-8"?>
<ns0:Environment xmlns:ns0="http://schemas.dmtf.org/ovf/environment/1"
  xmlns:ns1="http://schemas.microsoft.com/windowsazure">
 <ns1:ProvisioningSection><ns1:LinuxProvisioningConfigurationSet>
  <ns1:UserName>%s</ns1:UserName><ns1:UserPassword>*</ns1:UserPassword>
 </ns1:LinuxProvisioningConfigurationSet></ns1:ProvisioningSection>
</ns0:Environment>
"""

# What deprovision removes (protocol.md §6.1 with guestagent's folders).
GOES = [
    "etc/ssh/ssh_host_rsa_key", "etc/ssh/ssh_host_rsa_key.pub", "etc/ssh/ssh_host_ed25519_key",
    "var/lib/dhcp/dhclient.eth0.leases", "var/lib/dhclient/dhclient.leases",
    "var/db/dhclient.leases.eth0", "var/lib/NetworkManager/dhclient-eth0.lease",
    "run/systemd/netif/leases/2",
    "var/lib/waagent/provisioned", "var/lib/waagent/Microsoft.OSTCExtensions.Foo-1.0/status/0.status",
    "var/lib/waagent/waagent-network-setup.py", "var/lib/waagent/ABCDEF.prv",
    "var/log/azure/Microsoft.OSTCExtensions.Foo/extension.log",
    "var/lib/guestagent/provisioning/finished", "var/lib/guestagent/platform/TransportPrivate.pem",
    "var/log/guestagent/supervisor.log", "var/log/guestagent/provisioning.log",
    "run/guestagent/control.sock",
    "root/.bash_history", "var/log/waagent.log", "etc/resolv.conf",
    "etc/systemd/system/waagent-network-setup.service",
    "etc/systemd/system/azure-walinuxagent-logcollector.slice",
    "etc/systemd/system/walinuxagent.service.d/10-Slice.conf",
    "etc/systemd/system/walinuxagent.service.d/13-MemoryAccounting.conf",
]
# What an image keeps (§6.2), next to the above so a too-wide delete shows.
STAYS = [
    "etc/ssh/sshd_config", "etc/ssh/moduli", "etc/waagent.conf", "home/other/.bashrc",
    "var/lib/NetworkManager/NetworkManager.state", "var/lib/apt/lists/lock", "var/log/syslog",
    "etc/systemd/system/walinuxagent.service.d/90-mine.conf",
    "etc/systemd/system/multi-user.target.wants/guestagent.service",
    "etc/sudoers.d/README", "root/.profile", "etc/resolvconf.keep",
]
FOLDERS_GONE = ["var/lib/waagent", "var/log/azure", "var/lib/guestagent", "var/log/guestagent",
                "var/lib/dhcp", "var/lib/dhclient"]


def snapshot(root):
    tree = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    tree[rel] = hashlib.sha256(f.read()).hexdigest()
            else:
                tree[rel] = "dir" if os.path.isdir(path) else "link"
    return tree


@pytest.fixture
def image(tmp_path):
    root = tmp_path / "root"
    for rel in GOES + STAYS:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("content of %s\n" % rel)
    (root / "etc/hostname").write_text("vm-0042\n")
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        (root / "etc" / name).write_bytes(open("/etc/" + name, "rb").read())
    (root / "var/run").mkdir(parents=True)
    (root / "var/mail").mkdir(parents=True)
    (root / "etc/sudoers.d/waagent").write_text("other ALL=(ALL) ALL\n")
    conf = tmp_path / "waagent.conf"
    conf.write_text("OS.SysRoot=%s\nProvisioning.RegenerateSshHostKeyPair=y\n"
                    "Provisioning.DeleteRootPassword=y\n" % root)
    return root, conf


def waagent(conf, *args, answer=None):
    return subprocess.run([sys.executable, "-m", "cli.waagent", *args,
                           "-configuration-path:%s" % conf],
                          input=answer, capture_output=True, text=True, cwd=ROOT, timeout=120)


def shadow_entry(root, user):
    for line in (root / "etc/shadow").read_text().splitlines():
        if line.startswith(user + ":"):
            return line.split(":")[1]
    return None


def changed(before, after):
    return ({k for k in before if k not in after},
            {k for k in after if k in before and after[k] != before[k]},
            {k for k in after if k not in before})


def check_deprovisioned(root, before, extra_gone=(), extra_changed=(), extra_added=()):
    after = snapshot(root)
    gone, modified, added = changed(before, after)
    gone_files = {k for k in gone if before[k] != "dir"}
    assert gone_files == set(GOES) | set(extra_gone)
    for folder in FOLDERS_GONE:
        assert not (root / folder).exists(), folder
    assert (root / "run/guestagent").is_dir()          # tmpfiles.d's folder, emptied
    # usermod/userdel keep their backups (passwd-, shadow-...): nothing else appears.
    assert {k for k in added if not k.endswith("-")} == set(extra_added)
    assert modified - {k + "-" for k in ("etc/passwd", "etc/group", "etc/shadow",
                                         "etc/gshadow")} \
        == {"etc/hostname", "etc/shadow"} | set(extra_changed)
    assert (root / "etc/hostname").read_text() == "localhost.localdomain\n"
    assert shadow_entry(root, "root") == "*LOCK*"
    for rel in STAYS:
        assert (root / rel).read_text() == "content of %s\n" % rel


def test_force_deprovisions_without_asking_and_touches_nothing_else(image):
    root, conf = image
    before = snapshot(root)
    host_passwd = open("/etc/passwd").read()
    out = waagent(conf, "-deprovision", "-force")
    assert out.returncode == 0, out.stderr
    assert "Do you want to proceed" not in out.stdout
    assert "WARNING! All SSH host key pairs will be deleted." in out.stdout
    assert "WARNING! /etc/resolv.conf will be deleted." in out.stdout
    check_deprovisioned(root, before)
    assert open("/etc/passwd").read() == host_passwd
    # Not +user: the sudoers drop-in and other accounts stay.
    assert (root / "etc/sudoers.d/waagent").read_text() == "other ALL=(ALL) ALL\n"


def test_the_prompt_is_honoured(image):
    root, conf = image
    before = snapshot(root)
    for no in ("n\n", "", "nope\n"):
        out = waagent(conf, "-deprovision", answer=no)
        assert out.returncode == 1
        assert "Do you want to proceed (y/n)" in out.stdout
        assert "cancelled" in out.stderr
        assert snapshot(root) == before
    out = waagent(conf, "-deprovision", "-verbose", answer="y\n")
    assert out.returncode == 0, out.stderr
    assert "Do you want to proceed (y/n)" in out.stdout
    assert "waagent: deprovision: delete the DHCP leases" in out.stdout
    check_deprovisioned(root, before)


def test_deprovision_user_removes_the_provisioned_account_and_home(image):
    root, conf = image
    user = "gadeprov"
    subprocess.run(["useradd", "--prefix", str(root), "-m", "-s", "/bin/sh", user], check=True)
    (root / "home" / user / ".ssh").mkdir()
    (root / "home" / user / ".ssh/authorized_keys").write_text("ssh-rsa AAAA test\n")
    (root / "var/lib/waagent/ovf-env.xml").write_text(OVF % user)
    (root / "etc/sudoers.d/waagent").write_text("other ALL=(ALL) ALL\n%s ALL=(ALL) NOPASSWD: ALL\n"
                                                % user)
    assert user in (root / "etc/passwd").read_text()
    before = snapshot(root)
    out = waagent(conf, "-deprovision+user", "-force")
    assert out.returncode == 0, out.stderr
    assert "WARNING! %s account and entire home directory will be deleted." % user in out.stdout
    assert not (root / "home" / user).exists()
    assert user not in (root / "etc/passwd").read_text()
    assert shadow_entry(root, user) is None
    home = {k for k in before if k.startswith("home/%s/" % user) and before[k] != "dir"}
    check_deprovisioned(root, before, extra_gone=home | {"var/lib/waagent/ovf-env.xml"},
                        extra_changed={"etc/passwd", "etc/group", "etc/gshadow",
                                       "etc/sudoers.d/waagent"},
                        extra_added={"var/run/utmp"})      # as waagent: userdel -f reads it
    assert (root / "etc/sudoers.d/waagent").read_text() == "other ALL=(ALL) ALL\n"
    assert (root / "home/other/.bashrc").exists()


@pytest.mark.parametrize("named", ["root", "daemon", "nosuchuser"])
def test_deprovision_user_never_deletes_a_system_or_unknown_account(image, named):
    root, conf = image
    (root / "var/lib/waagent/ovf-env.xml").write_text(OVF % named)
    passwd = (root / "etc/passwd").read_text()
    out = waagent(conf, "-deprovision+user", "-force")
    assert out.returncode == 0, out.stderr
    assert "no user account will be deleted" in out.stdout or "will not be deleted" in out.stdout
    assert "account and entire home directory will be deleted" not in out.stdout
    assert (root / "etc/passwd").read_text() == passwd


def test_a_misconfigured_folder_is_refused_not_deleted(image):
    root, conf = image
    conf.write_text(conf.read_text() + "Agent.LogDir=/var/log\n")
    out = waagent(conf, "-deprovision", "-force")
    assert out.returncode == 1
    assert "refusing to delete" in out.stderr
    assert (root / "var/log/syslog").exists()


def test_ctrl_c_once_it_acts_does_not_leave_half_an_image(image):
    # SIGINT arrives in the middle of the steps (from the step itself, so the moment is
    # certain): the run goes on to the end instead of raising KeyboardInterrupt.
    import io
    import signal

    from cli.deprovision import Deprovision
    from config import load
    root, conf = image

    class InterruptedMidway(Deprovision):
        def delete_leases(self):
            os.kill(os.getpid(), signal.SIGINT)
            super().delete_leases()

    before = snapshot(root)
    previous = signal.getsignal(signal.SIGINT)
    try:
        job = InterruptedMidway(load(str(conf), report=False), root=str(root),
                                out=io.StringIO(), err=io.StringIO())
        assert job.run(force=True) == 0
    finally:
        signal.signal(signal.SIGINT, previous)
    check_deprovisioned(root, before)
