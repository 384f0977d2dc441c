"""Real-contract extensions end to end: the emulator serves the packages of
tests/data/extensions/, the whole agent installs and runs them as root from
/var/lib/waagent/<Name>-<Version>/, and what the platform sees is the status blob
(issue 13 §2–§6)."""

import io
import json
import os
import signal
import stat
import time
import zipfile

import pytest

from emulator.confinement import ConfinedHost
from tests.integration.extensions.conftest import (DATA, FAST, ExtensionsPlatform, azure_log,
                                                   ext_status, write_scenario)
from tests.integration.supervisor_harness import pid_alive, wait_for



def _success(entry):
    return entry["status"] == "Ready" and ext_status(entry).get("status") == "success"


def _lib(host, *parts):
    return os.path.join(host.varlib, "waagent", *parts)


def _status(host):
    venv = os.environ.get("GUESTAGENT_VENV", "/opt/guestagent")
    r = host.run_inside([os.path.join(venv, "bin", "agentctl"), "status", "--json"])
    return json.loads(r.stdout)


def _worker_pid(host):
    workers = {w["name"]: w for w in _status(host)["workers"]}
    return workers["extensions"]["pid"]


def _mapped(pid):
    with open("/proc/%d/maps" % pid) as f:
        return {line.split()[-1] for line in f if "/" in line}


def test_add_install_enable_settings_and_the_contract(platform, make_host):
    platform.add("Test.Good", "good", public_settings={"greeting": "hi"},
                 protected_settings={"secret": "only-the-extension-reads-this"},
                 protected_settings_cert="settings")
    host = make_host()
    entry = platform.wait_handler("Test.Good", _success, host=host)
    assert entry["handlerVersion"] == "1.0.0"
    assert entry["runtimeSettingsStatus"]["sequenceNumber"] == 0
    assert ext_status(entry)["formattedMessage"]["message"] == "good enabled seq 0"
    folder = _lib(host, "Test.Good-1.0.0")
    st = os.lstat(folder)
    assert st.st_uid == 0 and stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(os.stat(_lib(host)).st_mode) == 0o700
    ops = azure_log(host, "Test.Good", "ops.log")
    lines = ops.splitlines()
    assert [line.split()[0] for line in lines] == ["install", "enable"], ops
    assert all(" uid=0 " in line and " cwd=/var/lib/waagent/Test.Good-1.0.0" in line
               for line in lines), ops
    # config/0.settings: 0600 root, protectedSettings still encrypted, with their thumbprint.
    assert azure_log(host, "Test.Good", "settings.0.ls").split()[0] == "-rw-------"
    settings = json.loads(azure_log(host, "Test.Good", "settings.0"))
    hs = settings["runtimeSettings"][0]["handlerSettings"]
    assert hs["publicSettings"] == {"greeting": "hi"}
    assert hs["protectedSettingsCertThumbprint"]
    assert "only-the-extension" not in hs["protectedSettings"]
    assert "only-the-extension" not in host.all_logs()
    # The extension decrypted them with Lib.Dir/<TP>.crt|.prv, which the broker wrote (0600).
    tp = hs["protectedSettingsCertThumbprint"]
    assert json.loads(azure_log(host, "Test.Good", "protected.0")) == {
        "secret": "only-the-extension-reads-this"}
    for suffix in (".crt", ".prv"):
        st = os.stat(_lib(host, tp + suffix))
        assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600
    env = dict(line.split("=", 1) for line in
               azure_log(host, "Test.Good", "env.enable").splitlines() if "=" in line)
    assert env["AZURE_GUEST_AGENT_EXTENSION_PATH"] == "/var/lib/waagent/Test.Good-1.0.0"
    assert env["AZURE_GUEST_AGENT_EXTENSION_VERSION"] == "1.0.0"
    assert env["ConfigSequenceNumber"] == "0"
    assert env["AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE"] == "NOT_RUN"
    assert "ExtensionTelemetryPipeline" in env["AZURE_GUEST_AGENT_EXTENSION_SUPPORTED_FEATURES"]
    assert env["AZURE_GUEST_AGENT_WIRE_PROTOCOL_ADDRESS"] == "127.0.0.1"
    with open(os.path.join(folder, "HandlerEnvironment.json")) as f:
        he = json.load(f)[0]["handlerEnvironment"]
    assert he["logFolder"] == "/var/log/azure/Test.Good"
    assert he["statusFolder"] == "/var/lib/waagent/Test.Good-1.0.0/status"
    assert he["eventsFolder"] == "/var/log/azure/Test.Good/events"
    # The command ran in a cgroup of its own, not the supervisor's nor a worker's.
    cgroup = azure_log(host, "Test.Good", "cgroup")
    assert "/ext.Test.Good.enable." in cgroup, cgroup
    # The certificates were decrypted and the package downloaded in short-lived forks of the
    # worker (launch/forked.py): neither the resident worker nor the spawner whose image it
    # shares has loaded cryptography, which would stay for the life of the VM (issue 17).
    status = _status(host)
    workers = {w["name"]: w for w in status["workers"]}
    assert workers["extensions"]["restarts"] == 0
    assert status["spawner"]["state"] == "ready"
    for pid in (workers["extensions"]["pid"], status["spawner"]["pid"]):
        loaded = [path for path in _mapped(pid) if "/cryptography/" in path]
        assert not loaded, (pid, loaded)

    # New settings: enabled again with the next sequence number, and only that.
    platform.add("Test.Good", "good", public_settings={"greeting": "again"})
    entry = platform.wait_handler(
        "Test.Good", lambda e: e["runtimeSettingsStatus"]["sequenceNumber"] == 1 and _success(e),
        host=host)
    ops = azure_log(host, "Test.Good", "ops.log")
    assert [line.split()[:2] for line in ops.splitlines()] == [
        ["install", "seq=0"], ["enable", "seq=0"], ["enable", "seq=1"]], ops

    # Removed from the goal state: disabled, uninstalled, its folder gone, gone from the blob.
    platform.control("POST", "extensions/Test.Good/remove", {})
    wait_for(lambda: not platform.handler_entries("Test.Good") and
             not os.path.exists(folder), 30, 0.1, "the handler gone")
    ops = azure_log(host, "Test.Good", "ops.log")
    assert [line.split()[0] for line in ops.splitlines()][-2:] == ["disable", "uninstall"], ops



def test_an_idle_loop_does_not_ask_the_broker_yet_a_later_status_reaches_the_blob(
        platform, make_host):
    """Issue 17's idle CPU: the status file is read through the broker only when its folder
    changed (the broker's watch on the worker's own inotify instance), not on every poll;
    what the extension writes later, in place or by a rename, still reaches the blob at the
    next poll."""
    platform.add("Test.Good", "good")
    host = make_host({"Logs.Verbose": "y"})
    platform.wait_handler("Test.Good", _success, host=host)

    def asked():
        return host.log("supervisor").count("verb=extensions.read_status ")
    before = asked()
    uploads = len(platform.uploads())
    time.sleep(3)
    polls = len(platform.uploads()) - uploads
    assert polls >= 5, polls            # the loop went on, every 0.3 s
    assert asked() - before <= 1, (asked() - before, polls)

    status = _lib(host, "Test.Good-1.0.0", "status", "0.status")
    for how, message in (("in place", "rewritten in place"), ("renamed", "renamed over")):
        doc = json.dumps([{"version": "1.0", "timestampUTC": "2026-12-07T00:00:00Z",
                           "status": {"name": "test", "operation": "Enable",
                                      "status": "success", "code": 0,
                                      "formattedMessage": {"lang": "en-US",
                                                           "message": message}}}])
        if how == "in place":
            with open(status, "w") as f:
                f.write(doc)
        else:
            with open(status + ".tmp", "w") as f:
                f.write(doc)
            os.rename(status + ".tmp", status)
        entry = platform.wait_handler(
            "Test.Good", lambda e: ext_status(e)["formattedMessage"]["message"] == message,
            timeout=5, host=host)
        assert ext_status(entry)["status"] == "success"

def test_a_failed_install_is_reported_with_its_output_and_others_still_run(platform, make_host):
    platform.add("Test.FailInstall", "fail_install")
    platform.add("Test.Good", "good")
    host = make_host()
    entry = platform.wait_handler("Test.FailInstall", lambda e: e["code"] == 1007, host=host)
    assert entry["status"] == "NotReady"
    st = ext_status(entry)
    assert st["status"] == "error" and st["code"] == 1007
    assert "missing dependency frobnicate" in st["formattedMessage"]["message"]
    assert "exit code: 3" in st["formattedMessage"]["message"]
    platform.wait_handler("Test.Good", _success, host=host)
    # Not retried on every loop: install ran once.
    time.sleep(1.5)
    assert azure_log(host, "Test.FailInstall", "ops.log").count("install") == 1
    # A new goal state tries it again (a fresh folder: the broker runs install once per
    # folder), and enable never runs after a failed install.
    platform.control("POST", "incarnation", {})
    wait_for(lambda: azure_log(host, "Test.FailInstall", "ops.log").count("install") == 2, 30,
             0.1, "the install tried again")
    time.sleep(1)
    assert "enable" not in azure_log(host, "Test.FailInstall", "ops.log")
    assert platform.handler_entries("Test.FailInstall")[0]["code"] == 1007


def test_a_hanging_enable_is_killed_whole_at_its_timeout(platform, make_host):
    platform.add("Test.Hang", "hang")
    host = make_host({"Extensions.EnableTimeout": "3"})
    entry = platform.wait_handler("Test.Hang", lambda e: e["code"] == 1011, timeout=60,
                                  host=host)
    st = ext_status(entry)
    assert st["status"] == "error" and st["code"] == 1011
    assert st["formattedMessage"]["message"].startswith("Timeout(3s)"), st
    assert "hang/ext.sh enable" in st["formattedMessage"]["message"] or \
        "ext.sh enable" in st["formattedMessage"]["message"]
    daemon = int(azure_log(host, "Test.Hang", "daemon.pid"))
    # The double-forked daemon (nobody's child) went with its cgroup.
    wait_for(lambda: not pid_alive(daemon), 10, 0.1, "the daemon killed")
    assert entry["status"] == "NotReady"


def test_a_flood_on_stdout_keeps_head_and_tail(platform, make_host):
    platform.add("Test.Flood", "flood")
    host = make_host()
    entry = platform.wait_handler("Test.Flood", lambda e: e["code"] == 1009, host=host)
    message = ext_status(entry)["formattedMessage"]["message"]
    assert "Non-zero exit code: 7" in message
    assert "FIRST-LINE-OF-STDOUT" in message and "LAST-LINE-OF-STDOUT" in message, message
    assert "not kept" in message and "stderr line" in message
    assert len(message) <= 3200
    log = host.log("supervisor")
    assert "event=extension_command_end name=Test.Flood operation=enable reason=exited" in log
    # About 8 MB printed: neither the logs nor the blob took it.
    assert len(host.all_logs()) < 2 * 1024 * 1024
    assert len(json.dumps(platform.latest())) < 32 * 1024


@pytest.mark.parametrize("mode,expect", [("malformed", "malformed status file"),
                                         ("huge", "larger than"),
                                         ("invalid", "not one of")])
def test_a_bad_status_file_is_an_error_in_the_blob(platform, make_host, mode, expect):
    platform.add("Test.BadStatus", "bad_status", public_settings={"mode": mode})
    host = make_host()
    entry = platform.wait_handler("Test.BadStatus",
                                  lambda e: ext_status(e).get("status") == "error", host=host)
    st = ext_status(entry)
    assert expect in st["formattedMessage"]["message"], st
    assert len(json.dumps(platform.latest())) < 64 * 1024


def _hostile(folder, kind):
    with open(os.path.join(DATA, "good", "HandlerManifest.json"), "rb") as f:
        manifest = f.read()
    entries = {"slip": [("HandlerManifest.json", manifest, 0o100644),
                        ("../../../../etc/cron.d/evil", b"* * * * * root id\n", 0o100644)],
               "symlink": [("HandlerManifest.json", manifest, 0o100644),
                           ("shadow", b"/etc/shadow", 0o120777)],
               "bomb": [("HandlerManifest.json", manifest, 0o100644),
                        ("zeros", b"\0" * (60 << 20), 0o100644)]}[kind]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = mode << 16
            zf.writestr(info, data)
    path = os.path.join(folder, kind + ".zip")
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return path


@pytest.mark.parametrize("kind,reason", [("slip", "zip-slip"), ("symlink", "symlink"),
                                         ("bomb", "zip bomb")])
def test_hostile_packages_are_refused_with_a_clear_status(platform, make_host, folder, kind,
                                                          reason):
    platform.add("Test.Hostile", _hostile(folder, kind))
    platform.add("Test.Good", "good")
    host = make_host()
    entry = platform.wait_handler("Test.Hostile", lambda e: e["code"] == 1005, host=host)
    message = ext_status(entry)["formattedMessage"]["message"]
    assert reason in message, message
    assert not os.path.exists(_lib(host, "Test.Hostile-1.0.0"))
    assert not [n for n in os.listdir(_lib(host)) if n.startswith(".extract")]
    platform.wait_handler("Test.Good", _success, host=host)


def test_kill_9_of_the_worker_mid_install_runs_nothing_twice(platform, make_host):
    platform.add("Test.SlowInstall", "slow_install")
    host = make_host()
    wait_for(lambda: "install seq=0" in azure_log(host, "Test.SlowInstall", "ops.log"), 30,
             0.05, "the install started")
    pid = _worker_pid(host)
    os.kill(pid, signal.SIGKILL)
    entry = platform.wait_handler("Test.SlowInstall", _success, timeout=60, host=host)
    assert _worker_pid(host) != pid
    ops = azure_log(host, "Test.SlowInstall", "ops.log").splitlines()
    assert [line.split()[0] + ":" + line.split()[-1] for line in ops] == [
        "install:start", "install:end", "enable:start", "enable:end"], ops
    assert entry["runtimeSettingsStatus"]["sequenceNumber"] == 0


def test_upgrade_then_downgrade_in_waagents_order(platform, make_host):
    platform.add("Test.Good", "good", version="1.0.0")
    host = make_host()
    platform.wait_handler("Test.Good", _success, host=host)
    platform.add("Test.Good", "good", version="1.1.0")
    platform.wait_handler("Test.Good", lambda e: e["handlerVersion"] == "1.1.0" and _success(e),
                          host=host)
    wait_for(lambda: not os.path.exists(_lib(host, "Test.Good-1.0.0")), 10, 0.1, "old removed")
    ops = [(line.split()[0], line.split("cwd=/var/lib/waagent/Test.Good-")[1].split()[0])
           for line in azure_log(host, "Test.Good", "ops.log").splitlines()]
    assert ops == [("install", "1.0.0"), ("enable", "1.0.0"),
                   ("disable", "1.0.0"), ("update", "1.1.0"), ("uninstall", "1.0.0"),
                   ("install", "1.1.0"), ("enable", "1.1.0")], ops
    env = azure_log(host, "Test.Good", "env.update")
    assert "AZURE_GUEST_AGENT_UPDATING_FROM_VERSION=1.0.0" in env and "VERSION=1.1.0" in env
    # Downgrade: the *old* (installed, higher) version's update runs.
    platform.add("Test.Good", "good", version="1.0.0")
    platform.wait_handler("Test.Good", lambda e: e["handlerVersion"] == "1.0.0" and _success(e),
                          host=host)
    ops = [(line.split()[0], line.split("cwd=/var/lib/waagent/Test.Good-")[1].split()[0])
           for line in azure_log(host, "Test.Good", "ops.log").splitlines()][7:]
    assert ops == [("disable", "1.1.0"), ("update", "1.1.0"), ("uninstall", "1.1.0"),
                   ("install", "1.0.0"), ("enable", "1.0.0")], ops


def test_a_package_the_storage_refuses_comes_through_the_hostgaplugin(platform, make_host):
    # Every direct download of the package fails: /extensionArtifact serves it.
    platform.faults({"storage_package": [{"kind": "status", "code": 503, "repeat": 50}]})
    platform.add("Test.Good", "good")
    host = make_host()
    platform.wait_handler("Test.Good", _success, host=host)
    by_endpoint = platform.state()["requests"]["by_endpoint"]
    assert by_endpoint.get("hgap_extensionArtifact", 0) >= 1, by_endpoint


def test_a_package_over_the_size_cap_is_not_downloaded_whole(platform, make_host):
    platform.add("Test.Good", "good")
    host = make_host({"Extensions.MaxPackageBytes": "1024"})
    entry = platform.wait_handler("Test.Good", lambda e: e["code"] == 1004, host=host)
    assert "package download failed" in ext_status(entry)["formattedMessage"]["message"]
    assert not os.path.exists(_lib(host, "Test.Good-1.0.0"))


def test_a_fasttrack_goal_state_is_acted_on_by_its_etag(folder, make_host):
    emu = ExtensionsPlatform(write_scenario(folder, vm_settings="fasttrack"))
    try:
        values = dict(emu.conf())
        values.update(FAST)
        host = ConfinedHost(values)
        try:
            host.start()
            emu.add("Test.Good", "good", public_settings={"via": "fasttrack"})
            entry = emu.wait_handler("Test.Good", _success, host=host)
            doc = emu.latest()
            assert {"Key": "FastTrack", "Value": "1.0"} in doc["supportedFeatures"]
            assert entry["runtimeSettingsStatus"]["sequenceNumber"] == 0
            history = os.path.join(host.varlib, "guestagent", "extensions", "history")
            assert any(os.path.exists(os.path.join(history, d, "VmSettings.json"))
                       for d in os.listdir(history))
        finally:
            host.close()
    finally:
        emu.stop()


def test_multi_config_extensions_run_and_report_each_on_their_own(platform, make_host):
    platform.add("Test.Multi", "good", multi_config=[
        {"name": "first", "seq_no": 0, "public_settings": {"n": 1}},
        {"name": "second", "seq_no": 0, "public_settings": {"n": 2}}])
    host = make_host()

    def both():
        entries = platform.handler_entries("Test.Multi")
        names = {e["runtimeSettingsStatus"]["extensionName"]: ext_status(e)["status"]
                 for e in entries if e.get("runtimeSettingsStatus")}
        return names if names == {"first": "success", "second": "success"} else None
    wait_for(both, 40, 0.1, "both extensions reported")
    assert os.path.exists(_lib(host, "Test.Multi-1.0.0", "config", "first.0.settings"))
    assert os.path.exists(_lib(host, "Test.Multi-1.0.0", "status", "second.0.status"))
    ops = [line.split()[:3] for line in azure_log(host, "Test.Multi", "ops.log").splitlines()]
    assert ops == [["install", "seq=0", "ext=none"], ["enable", "seq=0", "ext=first"],
                   ["enable", "seq=0", "ext=second"]], ops
    # One extension disabled: only it is disabled; the other keeps its status.
    platform.add("Test.Multi", "good", multi_config=[
        {"name": "first", "seq_no": 0, "public_settings": {"n": 1}},
        {"name": "second", "seq_no": 0, "state": "disabled", "public_settings": {"n": 2}}])
    wait_for(lambda: "disable seq=0 ext=second" in azure_log(host, "Test.Multi", "ops.log"),
             30, 0.1, "second disabled")
    time.sleep(1)
    ops = [line.split()[:3] for line in azure_log(host, "Test.Multi", "ops.log").splitlines()]
    assert ops[3:] == [["disable", "seq=0", "ext=second"]], ops


def test_a_failed_dependency_skips_the_later_levels_only(platform, make_host):
    platform.add("Test.First", "good", dependency_level=1)
    platform.add("Test.Broken", "fail_install", dependency_level=2)
    platform.add("Test.Last", "good", dependency_level=3)
    platform.add("Test.Zero", "good")
    host = make_host()
    entry = platform.wait_handler("Test.Last", lambda e: e["code"] == -1, host=host)
    assert "dependent extension Test.Broken failed" in entry["formattedMessage"]["message"]
    platform.wait_handler("Test.First", _success, host=host)
    platform.wait_handler("Test.Zero", _success, host=host)
    assert platform.handler_entries("Test.Broken")[0]["code"] == 1007
    assert azure_log(host, "Test.Last", "ops.log") == ""
    first = os.path.getmtime(os.path.join(host.log_dir, "azure", "Test.First", "ops.log"))
    zero = os.path.getmtime(os.path.join(host.log_dir, "azure", "Test.Zero", "ops.log"))
    assert zero <= first          # level 0 before level 1


def test_a_daemon_left_by_enable_keeps_writing_to_its_inherited_output(platform, make_host):
    platform.add("Test.Daemon", "daemon")
    host = make_host()
    platform.wait_handler("Test.Daemon", _success, host=host)
    # Not waited for, not killed, and its writes do not kill it (no closed pipe).
    wait_for(lambda: azure_log(host, "Test.Daemon", "daemon-done"), 20, 0.2,
             "the daemon to finish its writes")


def test_disabled_then_enabled_again(platform, make_host):
    platform.add("Test.Good", "good")
    host = make_host()
    platform.wait_handler("Test.Good", _success, host=host)
    platform.control("POST", "extensions/Test.Good/disable", {})
    entry = platform.wait_handler("Test.Good", lambda e: e["status"] == "NotReady", host=host)
    assert entry["formattedMessage"]["message"] == "Plugin disabled"
    platform.control("POST", "extensions/Test.Good/enable", {})
    platform.wait_handler("Test.Good", _success, host=host)
    ops = [line.split()[:2] for line in azure_log(host, "Test.Good", "ops.log").splitlines()]
    assert ops == [["install", "seq=0"], ["enable", "seq=0"], ["disable", "seq=0"],
                   ["enable", "seq=0"]], ops


def test_the_manifests_cpu_quota_limits_the_command(platform, make_host):
    # resourceLimits.cpuQuotaPercentage=20 (§4.4, §4.12): no systemd here, so the broker puts
    # the command in a cgroup of the cpu controller with a CFS quota of 20 % of one CPU. The
    # extension spins for 3 s and reads, from where it runs, the quota and the throttling.
    platform.add("Test.Limited", "limited")
    host = make_host()
    entry = platform.wait_handler("Test.Limited", _success, timeout=60, host=host)
    assert ext_status(entry)["formattedMessage"]["message"] == "limited enabled seq 0"
    quota = azure_log(host, "Test.Limited", "cpu_quota").split()
    assert quota == (["20000", "100000"]), quota
    stat_lines = dict(line.split() for line in azure_log(host, "Test.Limited",
                                                         "cpu_stat").splitlines())
    # 3 s of spinning at 20 %: throttled in most of its 30 periods.
    assert int(stat_lines["nr_throttled"]) >= 5, stat_lines
    cgroups = azure_log(host, "Test.Limited", "cgroup")
    assert "/ext.Test.Limited.enable." in cgroups, cgroups
    assert "cpu_quota=cpu.cfs_quota_us=20000" in host.log("supervisor")


def test_no_cpu_quota_without_resource_limits(platform, make_host):
    platform.add("Test.Good", "good")
    host = make_host()
    platform.wait_handler("Test.Good", _success, host=host)
    cgroups = azure_log(host, "Test.Good", "cgroup")
    cpu = [line for line in cgroups.splitlines() if line.split(":")[1] == "cpu"]
    assert cpu and "ext.Test.Good" not in cpu[0], cgroups
    assert "operation=enable seq=0 cgroup=" in host.log("supervisor")
    assert "cpu_quota=none" in host.log("supervisor")


def _policy(doc):
    def write(host):
        path = os.path.join(host.etc, "waagent_policy.json")
        with open(path, "w") as f:
            f.write(doc if isinstance(doc, str) else json.dumps(doc))
        os.chmod(path, 0o644)
    return write


def test_the_extension_policy_allows_listed_extensions_only(platform, make_host):
    # Debug.EnableExtensionPolicy=y and /etc/waagent_policy.json: only listed extensions run
    # (names matched case-insensitively); one whose signature the policy requires is blocked,
    # this agent validating no signatures. Blocked ones are neither downloaded nor run.
    platform.add("Test.Good", "good")
    platform.add("Test.Signed", "good")
    platform.add("Test.Other", "good")
    host = make_host({"Debug.EnableExtensionPolicy": "y"}, before=_policy({
        "policyVersion": "0.1.0",
        "extensionPolicies": {"allowListedExtensionsOnly": True, "signatureRequired": True,
                              "extensions": {"test.good": {"signatureRequired": False},
                                             "Test.Signed": {}}}}))
    platform.wait_handler("Test.Good", _success, host=host)
    other = platform.wait_handler("Test.Other", lambda e: e["status"] == "NotReady", host=host)
    assert other["code"] == 1009
    message = other["formattedMessage"]["message"]
    assert "'Test.Other' because it is not specified as an allowed extension" in message
    assert "('/etc/waagent_policy.json')" in message
    assert ext_status(other)["status"] == "error"
    signed = platform.wait_handler("Test.Signed", lambda e: e["status"] == "NotReady", host=host)
    assert "requires a signature for extension 'Test.Signed'" in \
        signed["formattedMessage"]["message"]
    for name in ("Test.Other", "Test.Signed"):
        assert azure_log(host, name, "ops.log") == ""
        assert not os.path.exists(_lib(host, "%s-1.0.0" % name))
    assert "event=extension_blocked_by_policy name=Test.Other" in host.log("extensions")


def test_an_invalid_policy_blocks_every_extension_and_says_why(platform, make_host):
    platform.add("Test.Good", "good")
    host = make_host({"Debug.EnableExtensionPolicy": "y"}, before=_policy({
        "policyVersion": "0.1.0", "extensionPolicies": {"allowListedExtensionsOnly": "yes"}}))
    entry = platform.wait_handler("Test.Good", lambda e: e["status"] == "NotReady", host=host)
    assert "invalid type str for attribute 'extensionPolicies.allowListedExtensionsOnly'" in \
        entry["formattedMessage"]["message"]
    assert azure_log(host, "Test.Good", "ops.log") == ""


def test_the_policy_file_is_ignored_unless_enabled(platform, make_host):
    platform.add("Test.Other", "good")
    host = make_host(before=_policy({"policyVersion": "0.1.0",
                                     "extensionPolicies": {"allowListedExtensionsOnly": True}}))
    platform.wait_handler("Test.Other", _success, host=host)
