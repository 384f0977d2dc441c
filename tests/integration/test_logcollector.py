"""The log collector end to end (issue 15): the real supervisor, the real worker under its own
uid in its own memory-limited cgroup, the broker's descriptors, the emulator's HostGAPlugin.

The system paths of the manifest (/var/log/azure, /etc, /var/log) are read under
Logs.CollectRoot (the harness points it at <agent>/sysroot), Lib.Dir is <agent>/lib.
"""

import hashlib
import json
import os
import pwd
import stat
import threading
import time
import zipfile

import pytest

MiB = 1024 * 1024
EXT = "Contoso.Demo.HelloWorld"
# The scenario's secrets (emulator/scenarios/default.json) and a SAS signature, as they would
# reach files on a VM: the saved ovf-env.xml, an extension's settings and its own log.
PASSWORD = "Emulat0r-Demo-Passw0rd!"
PROTECTED = "only-the-extension-reads-this"
SAS_SIG = "SASsignatureXYZ123"
PROTECTED_BLOB = "MIIBprotectedSettingsBlob"
ROOT_SECRET_FILE = "ROOT-SECRET-behind-a-file-symlink"
ROOT_SECRET_DIR = "ROOT-SECRET-behind-a-folder-symlink"
PRV_SECRET = "PRIVATE-KEY-of-a-prv-file"
SECRETS = (PASSWORD, PROTECTED, SAS_SIG, PROTECTED_BLOB, ROOT_SECRET_FILE, ROOT_SECRET_DIR,
           PRV_SECRET)

OVF = """<?xml version="1.0" encoding="utf-8"?>
<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"
  xmlns:wa="http://schemas.microsoft.com/windowsazure">
 <wa:ProvisioningSection><wa:Version>1.0</wa:Version>
  <LinuxProvisioningConfigurationSet xmlns="http://schemas.microsoft.com/windowsazure">
   <ConfigurationSetType>LinuxProvisioningConfiguration</ConfigurationSetType>
   <HostName>guestagent-demo</HostName>
   <UserName>azureuser</UserName>
   <UserPassword>%s</UserPassword>
   <DisableSshPasswordAuthentication>false</DisableSshPasswordAuthentication>
  </LinuxProvisioningConfigurationSet>
 </wa:ProvisioningSection>
</Environment>
""" % PASSWORD


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def plant(agent):
    """A VM's logs with secrets in them, symlinks to root's secrets and a private key."""
    sysroot = os.path.join(agent.dir, "sysroot")
    lib = os.path.join(agent.dir, "lib")
    azure = os.path.join(sysroot, "var", "log", "azure")
    write(os.path.join(azure, EXT, "handler.log"),
          "2026-12-04T09:00:00Z INFO enable succeeded\n"
          "2026-12-04T09:00:01Z INFO settings {\"secret\": \"%s\"}\n"
          "2026-12-04T09:00:02Z INFO downloading https://st.blob.core.windows.net/c/h.zip"
          "?sv=2020-08-04&sr=b&sig=%s&se=2030\n" % (PROTECTED, SAS_SIG))
    write(os.path.join(azure, EXT, "key.prv"), "-----BEGIN PRIVATE KEY-----\n%s\n" % PRV_SECRET)
    secret = os.path.join(agent.dir, "rootonly")
    write(os.path.join(secret, "shadow"), ROOT_SECRET_FILE + "\n", 0o600)
    write(os.path.join(secret, "ssh", "authorized_keys"), ROOT_SECRET_DIR + "\n", 0o600)
    os.chmod(secret, 0o700)
    os.symlink(os.path.join(secret, "shadow"), os.path.join(azure, EXT, "linked.log"))
    os.symlink(os.path.join(secret, "ssh"), os.path.join(azure, "Evil"))
    write(os.path.join(sysroot, "etc", "os-release"), "PRETTY_NAME=\"Debian GNU/Linux 12\"\n")
    write(os.path.join(lib, "ovf-env.xml"), OVF, 0o600)
    write(os.path.join(lib, EXT + "-1.0.0", "config", "0.settings"), json.dumps(
        {"runtimeSettings": [{"handlerSettings": {
            "protectedSettingsCertThumbprint": "0123456789ABCDEF",
            "protectedSettings": PROTECTED_BLOB,
            "publicSettings": {"greeting": "hello"}}}]}), 0o600)
    write(os.path.join(lib, EXT + "-1.0.0", "status", "0.status"),
          json.dumps([{"status": {"status": "success", "operation": "Enable"}}]), 0o600)
    return sysroot, lib


def collect(agent, timeout=300):
    r = agent.ctl("collect-logs", timeout=timeout)
    path = os.path.join(agent.state_dir, "logcollector", "logs.zip")
    return r, path


def members(path):
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}, zf.comment


def test_the_emulator_receives_the_bundle_and_no_secret_is_in_it(make_agent, emu):
    agent = make_agent(dict(emu.conf(), **{"Logs.Collect": "n", "Protocol.HttpTimeout": "5",
                                           "Protocol.HttpAttempts": "2"}))
    plant(agent)
    agent.start()
    r, path = collect(agent)
    assert r.returncode == 0, r.stderr
    # The end of the command: path, size, the upload, what was left out and why.
    assert r.stdout.startswith("bundle: %s (%d bytes" % (path, os.stat(path).st_size)), r.stdout
    assert "uploaded to the HostGAPlugin" in r.stdout
    assert "var/log/azure/Evil: a symlink (never followed)" in r.stdout
    assert "var/log/azure/%s/linked.log: a symlink (never followed)" % EXT in r.stdout
    assert "var/log/azure/%s/key.prv: a private key" % EXT in r.stdout
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == pwd.getpwnam("guestagent-logs").pw_uid
    files, comment = members(path)
    lib = os.path.join(agent.dir, "lib").lstrip("/")
    for name in ("var/log/azure/%s/handler.log" % EXT, "etc/os-release", lib + "/ovf-env.xml",
                 "%s/%s-1.0.0/config/0.settings" % (lib, EXT),
                 "%s/%s-1.0.0/status/0.status" % (lib, EXT), "results.txt"):
        assert name in files, sorted(files)
    assert b"enable succeeded" in files["var/log/azure/%s/handler.log" % EXT]
    assert b"greeting" in files["%s/%s-1.0.0/config/0.settings" % (lib, EXT)]
    assert files["results.txt"].splitlines()[1] == b"complete" and not comment
    # The agent's own per-worker logs are in it.
    assert any(n.endswith("/log/supervisor.log") for n in files), sorted(files)
    for name, data in files.items():
        for secret in SECRETS:
            assert secret.encode() not in data, (secret, name)
    assert not any("Evil" in n or "linked" in n or n.endswith(".prv") for n in files
                   if n != "results.txt")
    # What the HostGAPlugin got is that very file, a valid upload.
    uploads = emu.state()["received"]["log_upload"]
    assert uploads and uploads[-1]["valid"], uploads
    with open(path, "rb") as f:
        assert uploads[-1]["document"]["sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert "var/log/azure/%s/handler.log" % EXT in uploads[-1]["document"]["names"]


def test_full_adds_the_system_configuration_only_when_root_asks(make_agent):
    agent = make_agent({"Logs.Collect": "n"})
    sysroot, _ = plant(agent)
    write(os.path.join(sysroot, "etc", "fstab"), "UUID=1234 / ext4 defaults 0 1\n")
    agent.start()
    r, path = collect(agent)
    assert r.returncode == 0, r.stderr
    assert "etc/fstab" not in members(path)[0]
    r = agent.ctl("collect-logs", "--full", timeout=300)
    assert r.returncode == 0, r.stderr
    files = members(path)[0]
    assert files["etc/fstab"] == b"UUID=1234 / ext4 defaults 0 1\n"
    # The request was for that run only: the next periodic or plain run is the normal one.
    r, path = collect(agent)
    assert r.returncode == 0 and "etc/fstab" not in members(path)[0]


def _sample_anon(pid_of, peak, stop):
    """The test's own measure of the collector's anonymous memory (not the worker's word)."""
    while not stop.is_set():
        pid = pid_of()
        if pid:
            try:
                with open("/proc/%d/status" % pid) as f:
                    status = f.read()
                anon = int(status.split("RssAnon:")[1].split()[0]) * 1024
                if "logcollector" in open("/proc/%d/cmdline" % pid).read():
                    peak[0] = max(peak[0], anon)
            except (OSError, IndexError, ValueError):
                pass
        time.sleep(0.05)


def make_log(path, size, tag):
    line = ("2026-12-04T09:00:00Z INFO %s: a line of an extension's log, nothing secret in "
            "it, long enough to look like one .......\n" % tag).encode()
    block = line * (1 << 20 // len(line) + 1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        written = 0
        while written < size:
            chunk = block[:size - written]
            f.write(chunk)
            written += len(chunk)


def test_a_150_mib_log_set_fits_the_caps_with_little_anonymous_memory(make_agent):
    # Heartbeats as tight as the harness's (0.6 s) would test the machine's load here, not
    # the collector: 5 s of misses.
    agent = make_agent({"Logs.Collect": "n", "Agent.HeartbeatMisses": "25"})
    big = os.path.join(agent.dir, "sysroot", "var", "log", "azure", "Big.Ext")
    now = time.time()
    # Newest first: a 40 MiB log (kept as its last 30 MiB), four of 28 MiB, then one that
    # no longer fits the 150 MiB total.
    sizes = [("newest.log", 40 * MiB)] + [("log%d.log" % i, 28 * MiB) for i in range(1, 5)] + \
        [("oldest.log", 28 * MiB)]
    for age, (name, size) in enumerate(sizes):
        make_log(os.path.join(big, name), size, name)
        os.utime(os.path.join(big, name), (now - 60 * age, now - 60 * age))
    agent.start()
    peak, stop = [0], threading.Event()
    sampler = threading.Thread(target=_sample_anon, args=(
        lambda: agent.worker("logcollector")["pid"], peak, stop), daemon=True)
    sampler.start()
    try:
        r, path = collect(agent, timeout=600)
    finally:
        stop.set()
        sampler.join()
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        results = zf.read("results.txt").decode()
    truncated = "truncated_var_log_azure_Big.Ext_newest.log"
    assert truncated in infos and 30 * MiB - 200 < infos[truncated].file_size <= 30 * MiB
    for i in range(1, 5):
        assert infos["var/log/azure/Big.Ext/log%d.log" % i].file_size == 28 * MiB
    assert "var/log/azure/Big.Ext/oldest.log" not in infos
    assert "var/log/azure/Big.Ext/oldest.log: %d bytes do not fit the 150 MiB total" % (28 * MiB) \
        in results
    assert sum(i.file_size for n, i in infos.items() if n != "results.txt") <= 150 * MiB
    assert "left out" in r.stdout and "oldest.log" in r.stdout
    with open(os.path.join(agent.state_dir, "logcollector", "last-collection.json")) as f:
        summary = json.load(f)
    assert summary["partial"] is None
    assert 0 < summary["peak_anon_collection"] < 25 * MiB, summary
    assert 0 < summary["peak_anon"] < 25 * MiB, summary   # the upload included
    assert 0 < peak[0] < 25 * MiB, peak


def test_a_memory_limit_too_small_yields_a_partial_bundle_not_a_kill(make_agent):
    limit = 24 * MiB
    agent = make_agent({"Logs.Collect": "n", "Logs.CollectorMemoryLimit": str(limit)})
    plant(agent)
    agent.start()
    r, path = collect(agent)
    assert r.returncode == 0, r.stderr
    assert "PARTIAL: anonymous memory" in r.stdout, r.stdout
    assert "not uploaded: the memory limit (24.0 MiB) leaves no room" in r.stdout
    files, comment = members(path)
    assert comment.startswith(b"PARTIAL: anonymous memory")
    assert files["results.txt"].splitlines()[1].startswith(b"PARTIAL: anonymous memory")
    with open(os.path.join(agent.state_dir, "logcollector", "last-collection.json")) as f:
        summary = json.load(f)
    # The worker read that limit from the cgroup it runs in: the supervisor put it there.
    assert summary["cgroup_limit"] == limit, summary
    log = agent.stderr() + agent.log("supervisor")
    assert "event=run_done worker=logcollector status='exit 0'" in log
    assert "SIGKILL" not in log


def test_the_collector_cannot_leave_its_limits_and_runs_as_itself(make_agent):
    """Without systemd (this host): the supervisor's memory and cpu cgroups, entered as root
    before exec; the worker's own uid, no supplementary group, no capability, NoNewPrivs."""
    agent = make_agent({"Logs.Collect": "n", "Logs.CollectorCpuQuota": "50"})
    agent.start()
    agent.start_attack("logcollector", """
report("cgroup", open("/proc/self/cgroup").read())
report("status", open("/proc/self/status").read())
try:
    open("/sys/fs/cgroup/memory/cgroup.procs", "w").write(str(os.getpid()))
    report("escaped", True)
except OSError as e:
    report("escaped", e.strerror)
""", start=False)
    r = agent.ctl("collect-logs")
    records = {x["key"]: x["value"] for x in agent.attack_records("logcollector")}
    agent.calm("logcollector")
    status = dict(line.split(":", 1) for line in records["status"].splitlines())
    uid = pwd.getpwnam("guestagent-logs").pw_uid
    assert status["Uid"].split() == [str(uid)] * 4
    assert status["Groups"].strip() == ""
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert records["escaped"] != True  # noqa: E712
    cgroups = {line.split(":")[1]: line.split(":", 2)[2]
               for line in records["cgroup"].splitlines()}
    if not os.path.isdir("/sys/fs/cgroup/memory"):
        pytest.skip("no cgroup v1 memory controller on this host")
    assert cgroups["memory"].endswith("/guestagent-logcollector.slice"), cgroups
    base = "/sys/fs/cgroup/memory" + cgroups["memory"]
    with open(base + "/memory.limit_in_bytes") as f:
        assert int(f.read()) == 256 * MiB
    cpu = [v for k, v in cgroups.items() if "cpu" in k.split(",")][0]
    with open("/sys/fs/cgroup/cpu" + cpu + "/cpu.cfs_quota_us") as f:
        assert int(f.read()) == 50000
    assert r.returncode in (0, 1)


def test_on_a_terminal_collect_logs_shows_progress(make_agent):
    import pty
    import subprocess
    from tests.integration.supervisor_harness import AGENTCTL
    agent = make_agent({"Logs.Collect": "n"})
    plant(agent)
    agent.start()
    master, slave = pty.openpty()
    try:
        r = subprocess.run([AGENTCTL, "--config", agent.conf, "collect-logs"], stdout=subprocess.PIPE,
                           stderr=slave, text=True, timeout=300)
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:   # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    assert r.returncode == 0, shown
    text = shown.decode()
    assert "collect-logs: event=collect_start bundle=" in text, text
    assert "collect-logs: event=collect_progress done=" in text, text
    assert "collect-logs: event=collect_done" in text, text
    assert r.stdout.startswith("bundle: ")
