"""Secrets by need (issue 10 §2): only provisioning and extensions get the transport key, as a
read-only descriptor from the broker; monitoring and logcollector can read neither the key nor
anything decrypted with it, and asking for it ends them; no worker can replace or remove a
file another worker relies on.

Every attack runs from a real worker process under its own uid on its own channel, its code
replaced by the script (workers/base.py _TestHooks.attack), against the real supervisor and
the emulator's WireServer on 127.0.0.1 (whose Certificates are encrypted to the transport
certificate the worker presents)."""

import os

import pytest


# The scenario's tenant certificates (emulator/scenarios/default.json), as their thumbprints.
SCENARIO_CERTS = 2

# A script prelude: the worker's own configuration and its platform client, made the way the
# worker's job makes it.
CLIENT = """
import errno, os, stat
from config import load
from workers.platform import PlatformClient
conf = load(os.environ["GUESTAGENT_CONFIG"], report=False)
STATE = conf["Agent.StateDir"]
client = PlatformClient.for_worker(worker, conf)
"""

# Decrypt the goal state's Certificates the legitimate way (the key from the broker).
DECRYPT = CLIENT + """
records = client.certificates()
report("thumbprints", sorted(r.thumbprint for r in records))
report("with_keys", sum(1 for r in records if r.private_key_pem))
report("ski", client.transport().subject_key_identifier.hex())
"""

# What a compromised monitoring or logcollector tries: every file it can reach under the
# agent's folders, the transport key's known place, any private key found used to decrypt the
# tenant certificates, then the broker verb itself.
STEAL = CLIENT + """
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from workers.platform import certificates as certs
key_path = os.path.join(STATE, "platform", "TransportPrivate.pem")
try:
    with open(key_path, "rb") as f:
        f.read(1)
    report("open_key", "ok")
except OSError as e:
    report("open_key", errno.errorcode.get(e.errno, str(e.errno)))
keys, cert_pems = [], []
for top in TOPS:
    for root, dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    data = f.read(1 << 20)
            except OSError:
                continue
            if b"PRIVATE KEY-----" in data:
                keys.append(path)
            if b"BEGIN CERTIFICATE" in data:
                cert_pems.append(data)
report("private_keys_read", keys)
decrypted = []
for path in keys:
    key = serialization.load_pem_private_key(open(path, "rb").read(), None)
    for pem in cert_pems:
        cert = x509.load_pem_x509_certificate(pem)
        if cert.public_key().public_numbers() != key.public_key().public_numbers():
            continue
        client._transport = certs.TransportCredentials(key, cert)
        try:
            decrypted += [r.thumbprint for r in client.certificates()]
        except Exception as e:
            report("decrypt_failed", repr(e))
report("decrypted", decrypted)
attempt("platform.transport_key", {})
"""

# Every file and folder outside the worker's own state folder: create, open for writing,
# rename away (and back), unlink; what succeeded is reported.
REPLACE = """
import errno, os
own = os.path.join(STATE, worker.name)
done = []
for top in TOPS:
    for root, dirs, files in os.walk(top):
        if root == own or root.startswith(own + "/"):
            dirs[:] = []
            continue
        try:
            fd = os.open(os.path.join(root, "planted-by-" + worker.name),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            done.append(("create", root))
        except OSError:
            pass
        for name in files + [d for d in dirs if os.path.join(root, d) != own]:
            path = os.path.join(root, name)
            if name.startswith("planted-by-"):
                continue
            if os.path.isfile(path):
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
                    done.append(("write", path))
                except OSError:
                    pass
            try:
                os.rename(path, path + ".moved")
                done.append(("rename", path))
                os.rename(path + ".moved", path)
            except OSError:
                pass
        for name in files:
            path = os.path.join(root, name)
            try:
                os.unlink(path)
                done.append(("unlink", path))
            except OSError:
                pass
report("replaced", done)
"""


@pytest.fixture
def platform_agent(make_agent, emu, tmp_path_factory):
    """The real agent whose workers talk to the emulator; OS.SysRoot gives the VM id."""
    agent = make_agent()
    sysroot = os.path.join(agent.dir, "sysroot")
    os.makedirs(os.path.join(sysroot, "sys", "class", "dmi", "id"))
    agent.sysroot = sysroot
    set_product_uuid(agent, "A1B2C3D4-0001-0002-0003-000000000001")
    agent.write_conf(dict(emu.conf(), **{"OS.SysRoot": sysroot, "Protocol.HttpTimeout": "5",
                                         "Protocol.HttpAttempts": "2"}))
    return agent.start()


def set_product_uuid(agent, value):
    path = os.path.join(agent.sysroot, "sys", "class", "dmi", "id", "product_uuid")
    with open(path, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o400)


def tops(agent):
    return "TOPS = %r\n" % ([agent.state_dir, agent.log_dir, agent.run_dir],)


def supervisor_log(agent):
    """What the supervisor logged: its stderr (the journal's copy; the harness rotates
    supervisor.log by size, and restarts of the attacked workers fill it)."""
    return agent.stderr() + agent.log("supervisor")


def records_of(records):
    return {r["key"]: r["value"] for r in records}


def decrypt_as(agent, worker):
    records = agent.attack(worker, DECRYPT, timeout=60)
    by_key = records_of(records)
    assert records[-1]["key"] == "done", records
    return by_key


@pytest.mark.parametrize("decrypter", ["extensions", "provisioning"])
def test_the_decrypting_workers_decrypt_the_emulators_certificates(platform_agent, decrypter):
    by_key = decrypt_as(platform_agent, decrypter)
    assert len(by_key["thumbprints"]) == SCENARIO_CERTS
    assert by_key["with_keys"] >= 1
    # Both workers use the one key the broker holds.
    other = "provisioning" if decrypter == "extensions" else "extensions"
    assert decrypt_as(platform_agent, other)["ski"] == by_key["ski"]
    # The key was made by a short-lived child: the resident supervisor never loads
    # cryptography (its memory is the figure that matters).
    with open("/proc/%d/maps" % platform_agent.proc.pid) as f:
        assert "cryptography" not in f.read()


@pytest.mark.parametrize("thief", ["monitoring", "logcollector"])
def test_monitoring_and_logcollector_get_neither_the_key_nor_a_secret(platform_agent, thief):
    agent = platform_agent
    decrypt_as(agent, "extensions")    # the key exists and has been used
    records = agent.attack(thief, tops(agent) + STEAL, timeout=60)
    by_key = records_of(records)
    assert by_key["open_key"] == "EACCES"
    assert by_key["private_keys_read"] == []
    assert by_key["decrypted"] == []
    # Asking the broker for the key is a violation: DENIED, the thief killed.
    assert by_key.get("platform.transport_key", ["closed"])[0] == "closed"
    assert records[-1]["key"] == "killed"
    log = supervisor_log(agent)
    assert "event=security worker=%s" % thief in log
    assert "code=DENIED detail='verb=platform.transport_key" in log
    agent.wait_state("extensions", "RUNNING")      # the others unharmed


@pytest.mark.parametrize("attacker", ["monitoring", "logcollector", "extensions", "provisioning"])
def test_no_worker_can_replace_what_another_relies_on(platform_agent, attacker):
    agent = platform_agent
    before = decrypt_as(agent, "extensions")["ski"]
    records = agent.attack(attacker, tops(agent) + CLIENT + REPLACE, timeout=60)
    by_key = records_of(records)
    assert records[-1]["key"] == "done", records
    # Every process that ran the script (a resident worker that ends is restarted and may
    # run it again before the test calms it) replaced nothing.
    replaced = [r["value"] for r in records if r["key"] == "replaced"]
    assert replaced and all(v == [] for v in replaced), replaced
    # The decrypting workers still use the key they used before the attack.
    victim = "provisioning" if attacker == "extensions" else "extensions"
    assert decrypt_as(agent, victim)["ski"] == before


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_the_key_descriptor_is_read_only(platform_agent):
    supervisor = platform_agent.proc.pid
    before = open_fds(supervisor)
    records = platform_agent.attack("extensions", CLIENT + """
for _ in range(30):    # the supervisor keeps no descriptor of a reply it sent
    _, fds = worker.call("platform.transport_key", {})
    os.close(fds[0])
result, fds = worker.call("platform.transport_key", {})
report("fds", len(fds))
fd = fds[0]
report("flags", os.O_ACCMODE & __import__("fcntl").fcntl(fd, __import__("fcntl").F_GETFL))
def outcome(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
report("write", outcome(lambda: os.write(fd, b"x")))
report("truncate", outcome(lambda: os.ftruncate(fd, 0)))
report("chmod", outcome(lambda: os.fchmod(fd, 0o666)))
report("reopen_rw", outcome(lambda: os.close(os.open("/proc/self/fd/%d" % fd, os.O_RDWR))))
report("certificate", result["certificate"].startswith("-----BEGIN CERTIFICATE-----"))
""")
    by_key = records_of(records)
    assert records[-1]["key"] == "done", records
    assert by_key["fds"] == 1 and by_key["flags"] == os.O_RDONLY
    assert by_key["write"] == "EBADF"
    assert by_key["truncate"] in ("EBADF", "EINVAL")
    assert by_key["chmod"] == "EPERM"
    assert by_key["reopen_rw"] == "EACCES"
    assert by_key["certificate"] is True
    assert open_fds(supervisor) < before + 10      # 31 replies, no descriptor kept


def test_the_openssl_maker_writes_through_no_planted_link_and_takes_no_argument(
        platform_agent):
    """The pair is made by `openssl req` (OS.OpensslPath), which opens its outputs with
    O_TRUNC and follows links. A hard link and a symlink to a root file planted at its
    temporary names (a crash's leftovers, or what a former group-writable folder let in) are
    removed first: the root file keeps its bytes. The worker that asks gets the new VM's key,
    cannot list the folder, and an argument naming another program or folder ends it."""
    agent = platform_agent
    first = decrypt_as(agent, "extensions")["ski"]
    agent.stop()
    folder = os.path.join(agent.state_dir, "platform")
    victim = os.path.join(folder, "..", "victim-of-openssl")
    with open(victim, "w") as f:
        f.write("root's own\n")
    os.chmod(victim, 0o600)
    os.link(victim, os.path.join(folder, ".TransportCert.pem.new"))
    os.symlink(os.path.abspath(victim), os.path.join(folder, ".TransportPrivate.pem.new"))
    set_product_uuid(agent, "A1B2C3D4-0001-0002-0003-000000000003")   # a new VM: a new pair
    records = agent.start().attack("extensions", DECRYPT + """
try:
    report("listdir", os.listdir(os.path.join(STATE, "platform")))
except OSError as e:
    report("listdir", errno.errorcode.get(e.errno, str(e.errno)))
attempt("platform.transport_key", {"openssl": "/bin/sh", "folder": "/root"})
""", timeout=60)
    by_key = records_of(records)
    assert len(by_key["thumbprints"]) == SCENARIO_CERTS and by_key["ski"] != first
    assert by_key["listdir"] == "EACCES"
    assert by_key.get("platform.transport_key", ["closed"])[0] in ("closed", "error"), by_key
    assert records[-1]["key"] == "killed"
    with open(victim) as f:
        assert f.read() == "root's own\n"
    assert os.stat(victim).st_nlink == 1
    # openssl's temporary outputs are gone (the broker's other files may be there by now:
    # the extensions worker installs the tenant certificates beside the attack).
    names = set(os.listdir(folder))
    assert {"Transport.tag", "TransportCert.pem", "TransportPrivate.pem"} <= names, names
    assert not [n for n in names if n.endswith(".new")], names
    log = agent.stderr() + agent.log("supervisor")
    assert "maker=openssl" in log
    assert "event=security worker=extensions" in log
    agent.wait_state("extensions", "RUNNING")      # restarted, unharmed


def test_a_new_vm_id_gets_a_fresh_key(platform_agent):
    agent = platform_agent
    first = decrypt_as(agent, "extensions")["ski"]
    assert agent.stop() == 0
    assert decrypt_as(agent.start(), "extensions")["ski"] == first   # same VM: same key
    agent.stop()
    set_product_uuid(agent, "A1B2C3D4-0001-0002-0003-000000000002")   # a captured image
    by_key = decrypt_as(agent.start(), "extensions")
    assert by_key["ski"] != first
    assert len(by_key["thumbprints"]) == SCENARIO_CERTS
