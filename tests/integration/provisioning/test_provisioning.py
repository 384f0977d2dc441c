"""Provisioning from first boot to Ready (issue 7), against the emulator, with the real agent
in a confined host: what a VM owner would check, then the failure cases."""

import base64
import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import time

import pytest

from workers.provisioning import password
from workers.provisioning.identity import swap_guid

SCENARIO = json.load(open(os.path.join(os.path.dirname(__file__), "..", "..", "..", "emulator",
                                       "scenarios", "default.json")))
VM = SCENARIO["vm"]
PASSWORD = VM["password"]
DONE = "event=provisioning_done"


def health(emu):
    return [r["document"] for r in emu.health()]


def states(emu):
    return [(h["state"], h.get("substatus")) for h in health(emu)]


def provision(host, timeout=60, reboot=True):
    """Boot: start the agent; return the provisioning log once this boot's job is done."""
    boots = host.log().count(DONE)
    if reboot and boots:
        host.reboot()
    host.start()
    return host.wait_log(DONE, timeout, count=boots + 1)


def _user(host, name):
    for line in open(host.path("etc", "passwd")):
        fields = line.rstrip("\n").split(":")
        if fields[0] == name:
            return fields
    return None


def _shadow_hash(host, name):
    for line in open(host.path("etc", "shadow")):
        fields = line.split(":")
        if fields[0] == name:
            return fields[1]
    return None


def _groups_of(host, name):
    out = set()
    for line in open(host.path("etc", "group")):
        fields = line.rstrip("\n").split(":")
        if name in fields[3].split(",") or fields[0] == name:
            out.add(fields[0])
    return out


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def _ovf(host, **replace):
    with open(os.path.join(host.media, "ovf-env.xml"), "rb") as f:
        data = f.read()
    for old, new in replace.items():
        data = re.sub(rb"<%s>[^<]*</%s>" % (old.encode(), old.encode()),
                      b"<%s>%s</%s>" % (old.encode(), new, old.encode()), data)
    return data


def test_first_boot_provisions_what_a_vm_owner_checks(emu, make_host):
    host_name = socket.gethostname()
    host = make_host({"Provisioning.UserGroups": "adm,nosuchgroup"})
    log = provision(host)
    assert "outcome='provisioned'" in log
    # The step timings line: every step keeps its time (no step is named with a word the
    # redactor takes for a secret's key), custom data's among them.
    steps = dict(kv.split("=", 1) for kv in log.split("event=provisioned ", 1)[1]
                 .split(" steps: ", 1)[1].split("\n", 1)[0].split())
    assert "custom_script" in steps and all(float(v) >= 0 for v in steps.values()), steps
    user = _user(host, VM["username"])
    assert user is not None and user[5] == "/home/azureuser"
    uid, gid = int(user[2]), int(user[3])
    assert {"azureuser", "adm"} <= _groups_of(host, VM["username"])
    # The password: a SHA-512 crypt(3) hash that verifies with the scenario's password.
    hashed = _shadow_hash(host, VM["username"])
    assert hashed.startswith("$6$") and len(hashed.split("$")[2]) == 10
    assert password.verify(PASSWORD, hashed)
    # sudo: the drop-in, 0440, with a password prompt (the user has a password).
    sudoers = host.path("etc", "sudoers.d", "waagent")
    assert open(sudoers).read() == "azureuser ALL=(ALL) ALL\n" and _mode(sudoers) == 0o440
    # SSH: the certificate's key in authorized_keys, the key pair, modes and owners.
    home = host.path("home", "azureuser")
    ssh_dir = os.path.join(home, ".ssh")
    assert _mode(ssh_dir) == 0o700 and os.stat(ssh_dir).st_uid == uid
    keys = open(os.path.join(ssh_dir, "authorized_keys")).read()
    assert re.fullmatch(r"ssh-rsa [A-Za-z0-9+/=]+ azureuser@guestagent-demo\n", keys)
    for name, mode in (("authorized_keys", 0o600), ("id_rsa", 0o600), ("id_rsa.pub", 0o644)):
        st = os.lstat(os.path.join(ssh_dir, name))
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, uid, gid), name
    assert open(os.path.join(ssh_dir, "id_rsa")).read().startswith("-----BEGIN")
    # The key pair is the same certificate's: the same public key as the inline one.
    assert open(os.path.join(ssh_dir, "id_rsa.pub")).read().split()[:2] == keys.split()[:2]
    sshd = open(host.path("etc", "ssh", "sshd_config")).read().splitlines()
    assert "PasswordAuthentication yes" in sshd and "ClientAliveInterval 180" in sshd
    assert "ChallengeResponseAuthentication yes" in sshd
    # The hostname: in the agent's UTS namespace and /etc/hostname; the host's is untouched.
    assert host.hostname() == VM["hostname"]
    assert open(host.path("etc", "hostname")).read() == VM["hostname"] + "\n"
    assert socket.gethostname() == host_name
    # The platform: NotReady/Provisioning first, then Ready exactly once, all valid.
    assert states(emu) == [("NotReady", "Provisioning"), ("Ready", None)]
    assert all(not r["errors"] for r in emu.health())
    # State: the marker holds the VM id; the saved ovf-env.xml has the password replaced.
    assert open(host.lib("provisioned")).read().strip() == swap_guid(
        "4C4C4544-0050-4810-8051-B2C04F4D3132").lower()
    saved = open(host.lib("ovf-env.xml"), "rb").read()
    assert b"<UserPassword>*</UserPassword>" in saved and PASSWORD.encode() not in saved
    assert _mode(host.lib("ovf-env.xml")) == 0o600 and _mode(host.lib()) == 0o700
    assert open(host.lib("CustomData")).read() == base64.b64encode(
        VM["custom_data"].encode()).decode()
    assert not os.path.exists(host.lib("disable_agent"))
    # No secret in any log.
    logs = host.all_logs()
    assert PASSWORD not in logs and hashed not in logs and "PRIVATE KEY-----\n" not in logs
    assert "event=provisioning_gate_closed marker=written" in logs
    # The host itself: no such user, no such home.
    assert VM["username"] not in open("/etc/passwd").read()
    assert not os.path.exists("/home/azureuser")


def test_the_log_is_echoed_to_the_console_until_provisioning_ends(emu, make_host):
    """protocol.md §3.6: while not provisioned, Logs.Console=y echoes the log to the system
    console (Logs.ConsoleDevice; here a file standing for /dev/console)."""
    host = make_host()
    provision(host)
    host.stop()
    console = open(host.console).read()
    assert "guestagent: supervisor: event=console_echo state=on" in console, console
    assert re.search(r"guestagent: provisioning\[\d+\]: event=user user=%s created=True"
                     % VM["username"], console), console
    # The last echoed line says so; what was logged after it (the worker's last lines, the
    # supervisor stopping) is in the log files alone.
    assert console.splitlines()[-1].endswith(
        "supervisor: event=console_echo state=off device=%s" % host.console), console
    assert DONE not in console and DONE in host.log()
    assert "event=stopping" not in console and "event=stopping" in host.log("supervisor")
    assert PASSWORD not in console
    # The next boot with Logs.Console=n echoes nothing.
    size = os.path.getsize(host.console)
    host.write_conf(dict(emu.conf(), **{"Agent.FlapMaxFailures": "1", "Logs.Console": "n"}))
    provision(host)
    assert os.path.getsize(host.console) == size


def test_provisioning_verbs_close_after_provisioning(emu, make_host):
    host = make_host()
    provision(host)
    host.stop()
    # A restarted supervisor reopens the gate only to find the marker: nothing is redone.
    log = provision(host)
    assert log.count("event=already_provisioned") == 1
    assert states(emu) == [("NotReady", "Provisioning"), ("Ready", None)]   # no second report
    sup = host.log("supervisor")
    assert sup.count("verb=provisioning.read_ovf") == 1
    assert sup.count("verb=provisioning.user") == 1


def test_a_changed_vm_id_provisions_afresh(emu, make_host, tmp_path):
    host = make_host()
    # The captured VM's DHCP leases (under OS.SysRoot, where discovery reads them), one lease
    # folder a link to somewhere else, and waagent's network-setup unit.
    leases = {"var/lib/dhcp/dhclient.eth0.leases": "lease {}\n",
              "run/systemd/netif/leases/2": "ADDRESS=10.0.0.4\n",
              "var/lib/NetworkManager/dhclient-abc-eth0.lease": "lease {}\n",
              "etc/systemd/system/waagent-network-setup.service": "[Unit]\n"}
    for rel, text in leases.items():
        os.makedirs(os.path.dirname(host.path("sysroot", rel)), exist_ok=True)
        open(host.path("sysroot", rel), "w").write(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("not a lease folder of this VM")
    os.symlink(str(elsewhere), host.path("sysroot", "var/lib/dhcpcd"))
    provision(host)
    # A first provisioning has no previous VM to forget.
    assert all(os.path.exists(host.path("sysroot", rel)) for rel in leases)
    host.stop()
    open(host.lib("SharedConfig.xml"), "w").write("<old/>")
    host.set_product_uuid("12345678-9ABC-DEF0-1122-334455667788")
    log = provision(host)
    assert "event=vm_id_changed" in log and log.count("outcome='provisioned'") == 2
    assert open(host.lib("provisioned")).read().strip() == "78563412-bc9a-f0de-1122-334455667788"
    assert not os.path.exists(host.lib("SharedConfig.xml"))
    assert [s for s in states(emu) if s[0] == "Ready"] == [("Ready", None)] * 2
    assert [rel for rel in leases if os.path.lexists(host.path("sysroot", rel))] == []
    assert not os.path.exists(host.path("sysroot", "var/lib/dhcp"))
    assert not os.path.lexists(host.path("sysroot", "var/lib/dhcpcd"))
    assert (elsewhere / "keep").exists()      # the link went, not what it pointed at


def test_no_dvd_reports_not_ready_with_the_reason(emu, make_host):
    host = make_host(media=False)
    host.remove_media()
    log = provision(host)
    assert "event=provisioning_failed step=ovf" in log
    docs = health(emu)
    assert [(d["state"], d.get("substatus")) for d in docs] == [("NotReady", "ProvisioningFailed")]
    assert docs[0]["description"].startswith("ovf: no provisioning media")
    assert not os.path.exists(host.lib("provisioned"))


def test_malformed_ovf(emu, make_host):
    host = make_host()
    host.write_media(ovf_bytes=b"<Environment><oops></Environment>")
    provision(host)
    docs = health(emu)
    assert [d["state"] for d in docs] == ["NotReady"]
    assert "malformed XML" in docs[0]["description"]


def test_a_bad_username_is_refused(emu, make_host):
    host = make_host()
    host.write_media(ovf_bytes=_ovf(host, UserName=b"Bad User;rm"))
    log = provision(host)
    assert "step=user" in log
    docs = health(emu)
    assert docs[-1]["substatus"] == "ProvisioningFailed"
    assert "UserName 'Bad User;rm' is not valid" in docs[-1]["description"]
    assert "Bad User" not in open(host.path("etc", "passwd")).read()


def test_a_system_account_is_refused(emu, make_host):
    host = make_host()
    host.write_media(ovf_bytes=_ovf(host, UserName=b"daemon"))
    provision(host)
    assert "daemon is a system account" in health(emu)[-1]["description"]
    assert _shadow_hash(host, "daemon") == _shadow_hash_of_host("daemon")


def _shadow_hash_of_host(name):
    for line in open("/etc/shadow"):
        if line.split(":")[0] == name:
            return line.split(":")[1]


def test_a_wireserver_that_fails_then_recovers(emu, make_host):
    emu.faults({"goalstate": [{"kind": "status", "code": 503}, {"kind": "status", "code": 500}]})
    host = make_host()
    provision(host)
    assert states(emu)[-1] == ("Ready", None)


def test_a_wireserver_that_never_recovers(emu, make_host):
    emu.faults({"certificates": [{"kind": "status", "code": 500, "repeat": 1000}]})
    host = make_host()
    log = provision(host)
    assert "event=provisioning_failed step=ssh_keys" in log
    docs = health(emu)
    assert [(d["state"], d.get("substatus")) for d in docs] == [
        ("NotReady", "Provisioning"), ("NotReady", "ProvisioningFailed")]
    assert docs[-1]["description"].startswith("ssh_keys: ")
    assert "500" in docs[-1]["description"]
    assert not os.path.exists(host.lib("provisioned"))


def test_cloud_init_provisions_and_we_report_ready(emu, make_host):
    host = make_host()
    ovf = open(os.path.join(host.media, "ovf-env.xml"), "rb").read()
    host.enable_cloud_init(ovf.replace(PASSWORD.encode(), b"*"))
    host.remove_media()
    log = provision(host)
    assert "event=cloud_init_provisions" in log and "cloud-init provisioned" in log
    assert _user(host, VM["username"]) is None          # cloud-init's job, not ours
    assert states(emu) == [("NotReady", "Provisioning"), ("Ready", None)]
    assert os.path.exists(host.lib("provisioned"))


def test_waagent_refuses_when_cloud_init_is_enabled(emu, make_host):
    host = make_host({"Provisioning.Agent": "waagent"})
    host.enable_cloud_init(b"", host_key=False)
    provision(host)
    assert "cloud-init is enabled" in health(emu)[-1]["description"]


def test_provision_guest_agent_false_disables_the_agent(emu, make_host):
    host = make_host()
    host.write_media(ovf_bytes=_ovf(host, **{"wa:ProvisionGuestAgent": b"false"}))
    provision(host)
    assert os.path.exists(host.lib("disable_agent"))
    assert states(emu)[-1] == ("Ready", None)


def test_custom_data_runs_from_the_dvd_when_configured(emu, make_host):
    host = make_host({"Provisioning.ExecuteCustomData": "y",
                      "Provisioning.DeleteRootPassword": "y"})
    script = b"#!/bin/sh\nid -u > /var/lib/waagent/custom-data-ran\n"
    host.write_media(ovf_bytes=_ovf(host, CustomData=base64.b64encode(script)))
    provision(host)
    assert open(host.lib("CustomData"), "rb").read() == script
    assert open(host.lib("custom-data-ran")).read() == "0\n"
    assert _shadow_hash(host, "root") == "*LOCK*"
    assert states(emu)[-1] == ("Ready", None)


def test_host_keys_regenerated_and_fingerprint_logged(emu, make_host):
    host = make_host({"Provisioning.RegenerateSshHostKeyPair": "y",
                      "Provisioning.SshHostKeyPairType": "ed25519"})
    log = provision(host)
    pub = host.path("etc", "ssh", "ssh_host_ed25519_key.pub")
    assert os.path.exists(pub) and not os.path.exists(host.path("etc", "ssh",
                                                                "ssh_host_rsa_key"))
    assert re.search(r"event=ssh_host_key type=ed25519 thumbprint=SHA256\S+ regenerated=True",
                     log)
    assert _mode(host.path("etc", "ssh", "ssh_host_ed25519_key")) == 0o600


def test_auto_host_keys_are_made_at_once_and_each_pair_is_whole(emu, make_host):
    # Debian's waagent.conf: type auto, every type `ssh-keygen -A` makes; the broker runs
    # them side by side while provisioning goes on, and Ready reports the RSA thumbprint.
    host = make_host({"Provisioning.RegenerateSshHostKeyPair": "y",
                      "Provisioning.SshHostKeyPairType": "auto"})
    log = provision(host)
    assert "outcome='provisioned'" in log
    for kind in ("rsa", "ecdsa", "ed25519"):
        key = host.path("etc", "ssh", "ssh_host_%s_key" % kind)
        derived = subprocess.run(["ssh-keygen", "-y", "-f", key], capture_output=True,
                                 text=True, check=True).stdout.split()[:2]
        assert open(key + ".pub").read().split()[:2] == derived, kind
        assert _mode(key) == 0o600, kind
    rsa = subprocess.run(["ssh-keygen", "-lf", host.path("etc", "ssh", "ssh_host_rsa_key.pub")],
                         capture_output=True, text=True, check=True).stdout.split()[1]
    assert "event=ssh_host_key type=rsa thumbprint=%s regenerated=True" % rsa.replace(":", "") \
        in log


def test_host_keys_begin_once_the_transport_key_is_made(emu, make_host, tmp_path):
    # The worker needs the transport key first (the certificates), the host keys last (sshd):
    # on a boot short of CPU the two RSA searches side by side each took twice as long. Here
    # the transport key is slowed (an openssl that sleeps first), so that without the wait the
    # host keys, asked for once the OVF is read, would begin before it is made.
    slow = tmp_path / "openssl"
    slow.write_text("#!/bin/sh\nsleep 3\nexec %s \"$@\"\n" % shutil.which("openssl"))
    slow.chmod(0o755)
    host = make_host({"Provisioning.RegenerateSshHostKeyPair": "y",
                      "Provisioning.SshHostKeyPairType": "ed25519",
                      "OS.OpensslPath": str(slow)})
    log = provision(host)
    assert "outcome='provisioned'" in log
    sup = host.log("supervisor")
    made, begun = sup.find("event=transport_key_made"), sup.find("event=host_keys_begun")
    assert 0 <= made < begun, sup
    waited = float(re.search(r"event=host_keys_begun waited_for_transport_key=([0-9.]+)",
                             sup).group(1))
    assert waited > 0.5, sup   # it did wait: the OVF was read well before the 3 s were up


def test_a_symlinked_ssh_folder_is_not_followed(emu, make_host):
    host = make_host()
    # An existing account whose .ssh points at root's folder: nothing may be written there.
    home = host.path("home", "azureuser")
    os.makedirs(home)
    with open(host.path("etc", "passwd"), "a") as f:
        f.write("azureuser:x:1500:1500::/home/azureuser:/bin/sh\n")
    with open(host.path("etc", "group"), "a") as f:
        f.write("azureuser:x:1500:\n")
    with open(host.path("etc", "shadow"), "a") as f:
        f.write("azureuser:!:19000:0:99999:7:::\n")
    os.chown(home, 1500, 1500)
    target = host.path("victim")
    os.mkdir(target, 0o700)
    os.symlink(target, os.path.join(home, ".ssh"))
    provision(host)
    assert os.listdir(target) == []
    assert "a symlink" in health(emu)[-1]["description"]


def test_a_restarted_worker_does_not_knock_on_the_closed_gate(emu, make_host):
    host = make_host()
    provision(host)
    host.stop()
    # The supervisor restarts within the same boot: the worker knows provisioning is over.
    log = provision(host, reboot=False)
    assert "already finished this boot" in log
    assert "event=security" not in host.log("supervisor")
    assert host.log("supervisor").count("verb=provisioning.state") == 1


def _status(host):
    """agentctl status --json inside the confined host (its /run)."""
    from emulator.confinement import VENV
    r = host.run_inside([os.path.join(VENV, "bin", "agentctl"), "--config", host.conf_path,
                         "status", "--json"])
    assert r.returncode in (0, 6), r.stderr
    return {w["name"]: w for w in json.loads(r.stdout)["workers"]}, r.returncode


def test_a_failure_is_retried_with_backoff_then_fatal_with_the_reason(emu, make_host):
    host = make_host({"Agent.FlapMaxFailures": "3", "Agent.BackoffDelay": "0.5"}, media=False)
    host.remove_media()
    host.start()
    log = host.wait_log(DONE, 30, count=3)
    assert log.count("event=provisioning_failed step=ovf") == 3
    assert log.count("exit=5") == 3
    deadline = time.monotonic() + 10
    while _status(host)[0]["provisioning"]["state"] != "FATAL":
        assert time.monotonic() < deadline, _status(host)
        time.sleep(0.05)
    workers, code = _status(host)
    prov = workers["provisioning"]
    assert code == 6 and prov["last_exit"] == "exit 5" and prov["restarts"] == 2
    assert prov["message"].startswith("provisioning: failed at ovf: no provisioning media")
    # Each attempt reported NotReady/ProvisioningFailed, none at once after the previous one.
    assert states(emu) == [("NotReady", "ProvisioningFailed")] * 3
    sup = host.log("supervisor")
    assert re.findall(r"event=backoff worker=provisioning delay=([\d.]+)s", sup) == ["0.50"] * 2
    assert "event=fatal worker=provisioning failures=3" in sup and "retry_in=never" in sup
    assert not os.path.exists(host.lib("provisioned"))
    # The resident workers started when provisioning had ended for good.
    assert workers["monitoring"]["state"] == workers["extensions"]["state"] == "RUNNING"
    # The operator fixes the media and starts it: it provisions (the gate stayed open).
    os.mkdir(host.media, 0o700)
    host.write_media()
    from emulator.confinement import VENV
    r = host.run_inside([os.path.join(VENV, "bin", "agentctl"), "--config", host.conf_path,
                         "start", "provisioning"])
    assert r.returncode == 0, r.stderr
    host.wait_log("outcome='provisioned'", 30)
    assert states(emu)[-1] == ("Ready", None)


def test_a_ready_that_fails_is_owed_and_reported_by_the_retry(emu, make_host):
    # Starting goes through; all three attempts of the first Ready fail. waagent would have
    # written its marker and never reported Ready again; the retry pays the debt.
    emu.faults({"health": ["ok", {"kind": "status", "code": 500, "repeat": 3}]})
    host = make_host({"Agent.FlapMaxFailures": "3", "Agent.BackoffDelay": "0.2"})
    host.start()
    log = host.wait_log(DONE, 60, count=2)
    assert "Ready stays owed to the platform" in log and "event=ready_owed" in log
    # The user step ran once (the first attempt created the user); the retry provisioned
    # nothing again, it only reported the owed Ready.
    assert log.count("event=user user=") == 1, log
    assert "event=user user=%s created=True " % VM["username"] in log, log
    assert "event=provisioning_done outcome='already provisioned; the owed Ready reported'" \
        in log, log
    assert states(emu) == [("NotReady", "Provisioning"), ("Ready", None)]
    assert os.path.exists(host.lib("provisioned"))
    assert not os.path.exists(host.path("var", "lib", "guestagent", "provisioning",
                                        "ready_pending"))
    workers, _ = _status(host)
    prov = workers["provisioning"]
    assert prov["state"] == "EXITED" and prov["last_exit"] == "exit 0", prov
    assert prov["message"] == "provisioning: already provisioned; the owed Ready reported"
    # The next boot owes nothing and reports nothing.
    provision(host)
    assert states(emu) == [("NotReady", "Provisioning"), ("Ready", None)]


def test_custom_data_runs_once_when_a_later_step_fails_and_is_retried(emu, make_host):
    """ONCE per boot and VM id, on the broker's disk (issue 10 §1): the supervisor's retry
    after a failure past custom data does not run it again, and is not a violation."""
    host = make_host({"Provisioning.ExecuteCustomData": "y", "Agent.FlapMaxFailures": "2",
                      "Agent.BackoffDelay": "0.2",
                      "Provisioning.RegenerateSshHostKeyPair": "y"})
    ran = host.path("custom-data-ran")
    script = b"#!/bin/sh\necho ran >> %s\n" % ran.encode()
    host.write_media(ovf_bytes=_ovf(host, CustomData=base64.b64encode(script)))
    # Host-key regeneration fails on every attempt: a folder where it deletes old keys.
    os.mkdir(host.path("etc", "ssh", "ssh_host_broken_key"))
    host.start()
    log = host.wait_log(DONE, 60, count=2)
    assert log.count("event=provisioning_failed step=host_keys") == 2
    assert open(ran).read() == "ran\n"
    assert "event=custom_data_already_ran" in log
    assert "event=security" not in host.log("supervisor")


def test_provisioning_disabled_the_broker_writes_the_marker_and_the_gate_is_closed(emu,
                                                                                   make_host):
    """protocol.md §3.1: Provisioning.Agent=disabled writes the marker and reports Ready; the
    supervisor closes the provisioning gate itself at start (issue 10 §1)."""
    host = make_host({"Provisioning.Agent": "disabled"})
    log = provision(host)
    assert "outcome='disabled; Ready reported'" in log
    assert open(host.lib("provisioned")).read().strip() == swap_guid(
        "4C4C4544-0050-4810-8051-B2C04F4D3132").lower()
    sup = host.log("supervisor")
    assert "reason=agent_disabled" in sup and "event=security" not in sup
    assert "verb=provisioning.finish" not in sup and "verb=provisioning.read_ovf" not in sup
    assert states(emu) == [("Ready", None)]


def test_the_resource_disk_is_mounted_before_the_platform_hears_ready(emu, make_host, tmp_path):
    """The disk is begun at the worker's start and done in the broker while provisioning goes
    on; Ready waits for it (waagent's order: the disk, then provisioning, then Ready)."""
    from tests.integration.resource_disk.disk import loop_disk
    mp = "/var/lib/resource"
    with loop_disk(str(tmp_path), layout="blank") as dev:
        host = make_host({"ResourceDisk.Format": "y", "ResourceDisk.Filesystem": "ext4",
                          "ResourceDisk.Device": "/dev/" + dev, "ResourceDisk.MountPoint": mp})
        try:
            log = provision(host)
            assert states(emu) == [("NotReady", "Provisioning"), ("Ready", None)], log
            assert "event=resource_disk_done ok=true device=/dev/%s " % dev in log, log
            # The worker's steps, in the order they ran: the wait for the disk before Ready.
            steps = log.split("event=provisioned ", 1)[1].split(" steps: ", 1)[1]
            names = [kv.split("=", 1)[0] for kv in steps.split("\n", 1)[0].split()]
            assert names.index("resource_disk") < names.index("report_ready"), names
            found = host.run_inside(["findmnt", "-n", "-o", "SOURCE", mp])
            assert found.stdout.split() == ["/dev/%sp1" % dev], (found, log)
        finally:
            host.close()   # its mount namespace, and the mount with it, before the device
